"""Property tests: well-formed requests give well-formed Gemini bodies; junk gives TranslationError."""
import json
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.translate.chat import (ChatOptions, chat_request_to_gemini, gemini_to_chat_completion,
                                  urls_to_fetch)
from proxy.translate.chat_stream import ChatStreamTranslator, SSEParser
from proxy.translate.embeddings import EmbedOptions, embeddings_request_to_gemini, gemini_to_embeddings
from proxy.translate.errors import TranslationError, gemini_error_to_openai
from proxy.translate.models import gemini_models_to_openai
from proxy.translate.responses import (ResponsesOptions, ResponsesStreamTranslator, gemini_to_response,
                                       responses_request_to_gemini)
from proxy.translate.schema import clean_schema

# TRANSLATE_FUZZ_EXAMPLES=5000 turns this into a longer fuzzing run.
FAST = settings(max_examples=int(os.environ.get("TRANSLATE_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
             "safetySettings", "cachedContent", "serviceTier"}
GEN_KEYS = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "seed",
            "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
            "responseJsonSchema", "thinkingConfig", "responseLogprobs", "logprobs",
            "responseModalities", "speechConfig", "mediaResolution"}
SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "properties",
               "required", "anyOf", "pattern", "default", "example", "propertyOrdering", "minItems",
               "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "minimum", "maximum"}
PART_KEYS = {"text", "inlineData", "functionCall", "functionResponse", "thoughtSignature",
             "executableCode", "codeExecutionResult"}

# -- strategies ----------------------------------------------------------------------------

names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
texts = st.text(min_size=1, max_size=20)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), texts)
TYPES = ["string", "number", "integer", "boolean", "array", "object", "null"]


def schemas(depth=3):
    leaf = st.fixed_dictionaries({}, optional={
        "type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), min_size=1, max_size=3)),
        "description": texts, "format": st.sampled_from(["uri", "date-time", "email", "int32", "enum"]),
        "enum": st.lists(scalars, min_size=1, max_size=4), "const": scalars,
        "minimum": st.integers(-9, 9), "exclusiveMinimum": st.integers(-9, 9), "default": scalars,
        "examples": st.lists(scalars, max_size=2), "$schema": st.just("http://json-schema.org/draft-07/schema#"),
        "strict": st.booleans(), "pattern": st.just("^[a-z]+$"), "title": texts, "nullable": st.booleans(),
        "additionalProperties": st.booleans(), "$ref": st.sampled_from(["#/$defs/A", "#", "#/$defs/B"]),
    })
    if depth == 0:
        return leaf
    sub = schemas(depth - 1)
    return st.one_of(
        leaf,
        st.fixed_dictionaries({"type": st.just("object")}, optional={
            "properties": st.dictionaries(names, sub, max_size=4), "required": st.lists(names, max_size=3),
            "additionalProperties": st.one_of(st.booleans(), sub), "propertyNames": st.just({"pattern": "^a"}),
            "$defs": st.fixed_dictionaries({"A": sub, "B": sub})}),
        st.fixed_dictionaries({"type": st.just("array")}, optional={
            "items": st.one_of(sub, st.lists(sub, max_size=2)), "prefixItems": st.lists(sub, max_size=2),
            "minItems": st.integers(0, 3)}),
        st.fixed_dictionaries({"anyOf": st.lists(st.one_of(sub, st.just({"type": "null"})), min_size=1, max_size=3)}),
        st.fixed_dictionaries({"oneOf": st.lists(sub, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"allOf": st.lists(sub, min_size=1, max_size=2)}),
    )


def with_defs(schema_st):
    """Give root schemas the $defs their $refs point at."""
    return st.tuples(schema_st, schemas(1), schemas(1)).map(
        lambda t: {**t[0], "$defs": {"A": t[1], "B": t[2]}} if isinstance(t[0], dict) else t[0])


params_schemas = with_defs(schemas(3))
DATA_URI = "data:image/png;base64,iVBORw0KGgo="


@st.composite
def user_messages(draw):
    if draw(st.booleans()):
        return {"role": "user", "content": draw(texts)}
    parts = draw(st.lists(st.one_of(
        texts.map(lambda t: {"type": "text", "text": t}),
        st.just({"type": "image_url", "image_url": {"url": DATA_URI, "detail": "auto"}}),
        st.just({"type": "image_url", "image_url": {"url": "https://img.test/a.png"}}),
        st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
    ), min_size=1, max_size=4))
    return {"role": "user", "content": parts}


@st.composite
def conversations(draw, tool_names):
    messages = []
    counter = 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["system", "developer", "user", "user", "assistant", "calls"]))
        if kind in ("system", "developer"):
            messages.append({"role": kind, "content": draw(texts)})
        elif kind == "user":
            messages.append(draw(user_messages()))
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(texts)})
        else:
            n = draw(st.integers(1, 3))
            calls = []
            for _ in range(n):
                counter += 1
                name = draw(st.sampled_from(tool_names)) if tool_names else draw(names)
                calls.append({"id": f"call_{counter}", "type": "function", "function": {
                    "name": name, "arguments": json.dumps(draw(st.dictionaries(names, scalars, max_size=3)))}})
            messages.append({"role": "assistant", "content": draw(st.one_of(st.none(), texts)),
                             "tool_calls": calls})
            for call in draw(st.permutations(calls)):
                content = draw(st.one_of(texts, st.dictionaries(names, scalars).map(json.dumps),
                                         st.lists(scalars, max_size=3).map(json.dumps)))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    return messages


@st.composite
def chat_requests(draw):
    tool_names = draw(st.lists(names, max_size=4, unique=True))
    body = {"model": draw(st.sampled_from(["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview",
                                           "models/gemini-2.0-flash", "gpt-4o"])),
            "messages": draw(conversations(tool_names))}
    if tool_names:
        body["tools"] = [{"type": "function", "function": {
            "name": n, "description": draw(texts), "parameters": draw(params_schemas)}} for n in tool_names]
        body["tool_choice"] = draw(st.one_of(
            st.sampled_from(["auto", "none", "required"]),
            st.sampled_from(tool_names).map(lambda n: {"type": "function", "function": {"name": n}})))
    body["response_format"] = draw(st.one_of(
        st.just({"type": "text"}), st.just({"type": "json_object"}),
        params_schemas.map(lambda s: {"type": "json_schema",
                                      "json_schema": {"name": "x", "schema": s, "strict": True}})))
    optional = draw(st.fixed_dictionaries({}, optional={
        "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "max_tokens": st.integers(1, 10000),
        "stop": st.one_of(texts, st.lists(texts, max_size=4)), "seed": st.integers(-2**63, 2**63),
        "presence_penalty": st.floats(-2, 2), "reasoning_effort": st.sampled_from(
            ["none", "minimal", "low", "medium", "high", "xhigh", "max"]),
        "stream": st.booleans(), "user": texts, "parallel_tool_calls": st.booleans(), "logprobs": st.booleans(),
    }))
    body.update(optional)
    return body


def schema_nodes(schema):
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from schema_nodes(sub)
    if isinstance(schema.get("items"), dict):
        yield from schema_nodes(schema["items"])
    for sub in schema.get("anyOf") or []:
        yield from schema_nodes(sub)


def assert_subset_schema(schema):
    for node in schema_nodes(schema):
        assert set(node) <= SCHEMA_KEYS, set(node) - SCHEMA_KEYS
        assert isinstance(node.get("type", ""), str)
        assert all(isinstance(v, str) for v in node.get("enum", []))
        if "properties" in node:
            assert node["properties"] and node.get("type") == "object"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict)


def assert_gemini_body(out):
    assert set(out) <= TOP_LEVEL
    json.dumps(out, allow_nan=False)
    contents = out["contents"]
    assert contents
    roles = [t["role"] for t in contents]
    assert set(roles) <= {"user", "model"}
    assert all(a != b for a, b in zip(roles, roles[1:]))
    for i, turn in enumerate(contents):
        assert set(turn) == {"role", "parts"} and turn["parts"]
        for part in turn["parts"]:
            assert set(part) <= PART_KEYS and set(part) - {"thoughtSignature"}
            if "text" in part:
                assert part["text"]
            if "functionResponse" in part:
                assert turn["role"] == "user" and isinstance(part["functionResponse"]["response"], dict)
            if "functionCall" in part:
                assert turn["role"] == "model" and isinstance(part["functionCall"]["args"], dict)
        calls = sum("functionCall" in p for p in turn["parts"])
        if calls and i + 1 < len(contents):
            answers = sum("functionResponse" in p for p in contents[i + 1]["parts"])
            assert answers == calls
    for tool in out.get("tools", []):
        for decl in tool.get("functionDeclarations", []):
            assert set(decl) <= {"name", "description", "parameters", "parametersJsonSchema"}
            assert not ("parameters" in decl and "parametersJsonSchema" in decl)
            if "parameters" in decl:
                assert_subset_schema(decl["parameters"])
    gen = out.get("generationConfig", {})
    assert set(gen) <= GEN_KEYS
    assert not ("responseSchema" in gen and "responseJsonSchema" in gen)
    if "responseSchema" in gen:
        assert_subset_schema(gen["responseSchema"])
    thinking = gen.get("thinkingConfig", {})
    assert not ("thinkingBudget" in thinking and "thinkingLevel" in thinking)
    if "systemInstruction" in out:
        assert out["systemInstruction"]["parts"][0]["text"]


FETCHED = {"https://img.test/a.png": ("image/png", b"\x89PNG")}


@FAST
@given(chat_requests())
def test_well_formed_chat_requests_translate_cleanly(body):
    before = json.dumps(body, sort_keys=True)
    try:
        model, out, opts = chat_request_to_gemini(body, aliases={"gpt-4o": "gemini-2.5-flash"},
                                                  fetched_images=FETCHED)
    except TranslationError as e:
        # The only legitimate refusals for these bodies: nothing left to send.
        assert e.param == "messages" and "nothing to send" in e.message
        return
    assert json.dumps(body, sort_keys=True) == before  # never mutates the request
    assert "/" not in model
    assert_gemini_body(out)
    assert list(urls_to_fetch(body)) in ([], ["https://img.test/a.png"])


@FAST
@given(params_schemas)
def test_clean_schema_output_is_subset(schema):
    try:
        out = clean_schema(schema)
    except TranslationError:
        return
    assert_subset_schema(out)


# -- junk ----------------------------------------------------------------------------------

KEYS = ["model", "messages", "role", "content", "type", "text", "image_url", "url", "tool_calls", "id",
        "function", "name", "arguments", "tool_call_id", "tools", "parameters", "tool_choice", "input",
        "response_format", "json_schema", "schema", "properties", "items", "$ref", "anyOf", "enum",
        "stream", "stream_options", "extra_body", "google", "thinking_config", "safety_settings",
        "call_id", "output", "instructions", "reasoning", "effort", "candidates", "parts",
        "functionCall", "args", "usageMetadata", "finishReason", "embeddings", "values", "error",
        "details", "input_audio", "file", "file_data", "data", "format", "max_tokens", "stop", "n"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["user", "assistant", "tool", "system", "function", "text", "image_url",
                               "data:image/png;base64,AA", "call_1", "{}", "auto", "required",
                               "json_schema", "object", "#", "message", "function_call",
                               "function_call_output", "STOP", "SAFETY"])),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)),
                                               children, max_size=5)),
    max_leaves=40)


def only_translation_errors(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except TranslationError:
        pass


@FAST
@given(json_values)
def test_junk_requests_raise_only_translation_error(junk):
    only_translation_errors(chat_request_to_gemini, junk)
    only_translation_errors(responses_request_to_gemini, junk)
    only_translation_errors(embeddings_request_to_gemini, junk)
    only_translation_errors(clean_schema, junk)
    urls_to_fetch(junk)


def mutate(data, value, junk):
    """Replace one nested value of `value` (chosen by hypothesis) with junk."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        return {**value, key: mutate(data, value[key], junk)}
    if isinstance(value, list) and value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return value[:i] + [mutate(data, value[i], junk)] + value[i + 1:]
    return junk


@FAST
@given(st.data(), chat_requests(), json_values)
def test_mutated_chat_requests_raise_only_translation_error(data, body, junk):
    only_translation_errors(chat_request_to_gemini, mutate(data, body, junk), fetched_images=FETCHED)


@st.composite
def responses_requests(draw):
    chat = draw(chat_requests())
    items = []
    for msg in chat["messages"]:
        if msg["role"] == "tool":
            items.append({"type": "function_call_output", "call_id": msg["tool_call_id"], "output": msg["content"]})
        elif msg.get("tool_calls"):
            for call in msg["tool_calls"]:
                items.append({"type": "function_call", "call_id": call["id"], **call["function"]})
        elif isinstance(msg["content"], str):
            items.append({"type": "message", "role": msg["role"], "content": msg["content"]})
        else:
            items.append({"role": "user", "content": [
                {"type": "input_text", "text": p["text"]} if p["type"] == "text" else
                {"type": "input_image", "image_url": p["image_url"]["url"]} if p["type"] == "image_url" else
                {"type": "input_text", "text": "audio"} for p in msg["content"]]})
    body = {"model": chat["model"], "input": items,
            "tools": [{"type": "function", **t["function"]} for t in chat.get("tools", [])]}
    body.update(draw(st.fixed_dictionaries({}, optional={
        "instructions": texts, "max_output_tokens": st.integers(1, 5000),
        "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["low", "high"]),
                                            "summary": st.sampled_from(["auto", "none"])}),
        "text": params_schemas.map(lambda s: {"format": {"type": "json_schema", "name": "x", "schema": s}})})))
    return body


@FAST
@given(responses_requests())
def test_well_formed_responses_requests_translate_cleanly(body):
    try:
        _, out, _ = responses_request_to_gemini(body, fetched_images=FETCHED)
    except TranslationError as e:
        assert e.param == "input" and "nothing to send" in e.message
        return
    assert_gemini_body(out)


@FAST
@given(st.data(), responses_requests(), json_values)
def test_mutated_responses_requests_raise_only_translation_error(data, body, junk):
    only_translation_errors(responses_request_to_gemini, mutate(data, body, junk), fetched_images=FETCHED)


@FAST
@given(json_values, json_values)
def test_junk_answers_never_crash(resp, chunk):
    only_translation_errors(gemini_to_chat_completion, resp, model="m", completion_id="c", created=1,
                            options=ChatOptions(model="m", include_reasoning=True))
    only_translation_errors(gemini_to_response, resp, model="m", response_id="r", created=1,
                            options=ResponsesOptions(model="m", include_reasoning=True))
    only_translation_errors(gemini_to_embeddings, resp, model="m",
                            options=EmbedOptions(model="m", encoding_format="base64"))
    gemini_models_to_openai(resp, aliases={"a": "b"})
    gemini_error_to_openai(429, resp)
    chat = ChatStreamTranslator("m", "c", 1, ChatOptions(model="m", include_usage=True, include_reasoning=True))
    chat.feed(resp)
    chat.feed(chunk)
    json.dumps(chat.finish())
    resp_tr = ResponsesStreamTranslator("m", "r", 1, ResponsesOptions(model="m", include_reasoning=True))
    resp_tr.feed(resp)
    resp_tr.feed(chunk)
    json.dumps(resp_tr.finish())


@FAST
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_sse_parser_never_crashes(pieces):
    parser = SSEParser()
    for piece in pieces:
        assert all(isinstance(d, dict) for d in parser.feed(piece))
    parser.finish()


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "error"]), scalars, max_size=3), max_size=5),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.data())
def test_sse_parser_any_split(events, eol, data):
    stream = b"".join(b"data: " + json.dumps(e).encode() + eol + eol for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = SSEParser()
    got, last = [], 0
    for cut in cuts + [len(stream)]:
        got += parser.feed(stream[last:cut])
        last = cut
    assert got + parser.finish() == [e for e in events]
