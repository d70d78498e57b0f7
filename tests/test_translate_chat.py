"""Chat Completions ⇄ generateContent translation (request and unary answer)."""
import base64
import copy
import json

import pytest
from openai.types.chat import ChatCompletion

from proxy.translate.chat import (ChatOptions, chat_request_to_gemini, gemini_to_chat_completion,
                                  urls_to_fetch)
from proxy.translate.errors import TranslationError
from proxy.translate.signatures import SKIP_SIGNATURE

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
SIG = base64.b64encode(bytes(range(200))).decode()  # a realistic base64 thought signature
ALIASES = {"gpt-4o": "gemini-2.5-flash", "default": "gemini-2.5-flash"}


def translate(body, **kw):
    return chat_request_to_gemini(body, **kw)


def user(text="hi"):
    return {"role": "user", "content": text}


def err(body, **kw):
    with pytest.raises(TranslationError) as exc:
        translate(body, **kw)
    return exc.value


# -- model --------------------------------------------------------------------------------

def test_model_prefix_alias_and_passthrough():
    assert translate({"model": "models/gemini-2.5-pro", "messages": [user()]})[0] == "gemini-2.5-pro"
    assert translate({"model": "gpt-4o", "messages": [user()]}, aliases=ALIASES)[0] == "gemini-2.5-flash"
    assert translate({"messages": [user()]}, aliases=ALIASES)[0] == "gemini-2.5-flash"
    assert translate({"model": "some-future-model", "messages": [user()]})[0] == "some-future-model"
    e = err({"model": "../../v1/keys", "messages": [user()]})
    assert e.param == "model"
    assert err({"messages": [user()]}).param == "model"


@pytest.mark.parametrize("messages", [None, [], "hi", {"role": "user"}])
def test_messages_required(messages):
    body = {"model": "gemini-2.5-flash"}
    if messages is not None:
        body["messages"] = messages
    e = err(body)
    assert e.param == "messages" and e.message.startswith("messages: required")
    assert e.status == 400


# -- messages -----------------------------------------------------------------------------

def test_reference_example_shape():
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Oslo?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_abc", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "{\"output\":{\"tempC\":3}}"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": False}, "strict": True}}],
        "tool_choice": "auto", "temperature": 1.0, "top_p": 0.95, "max_tokens": 2048,
        "stop": "END", "seed": 7, "response_format": {"type": "json_object"},
        "user": "u-1", "metadata": {"a": "b"}, "store": False, "logit_bias": {},
        "parallel_tool_calls": True, "logprobs": False,
    }
    original = copy.deepcopy(body)
    model, out, opts = translate(body)
    assert body == original
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Oslo?"},
                                       {"inlineData": {"mimeType": "image/png", "data": PNG}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                             "response": {"output": {"tempC": 3}}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "tools": [{"functionDeclarations": [{
            "name": "get_weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"temperature": 1.0, "topP": 0.95, "maxOutputTokens": 2048, "seed": 7,
                             "stopSequences": ["END"], "responseMimeType": "application/json",
                             "mediaResolution": "MEDIA_RESOLUTION_LOW"},
    }
    assert opts == ChatOptions(model="gemini-2.5-flash", tool_call_names={"call_abc": "get_weather"})


def test_base64_passes_by_reference():
    data = "QUJD" * 1000
    _, out, _ = translate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]}]})
    assert out["contents"][0]["parts"][0]["inlineData"]["data"] is data


def test_system_and_developer_join_and_roles_merge():
    _, out, _ = translate({"model": "m", "messages": [
        {"role": "system", "content": "A"}, {"role": "developer", "content": [{"type": "text", "text": "B"}]},
        user("1"), user("2"), {"role": "assistant", "content": "x"},
        {"role": "assistant", "content": [{"type": "text", "text": "y"}]},
        {"role": "system", "content": "C"}, user("3")]})
    assert out["systemInstruction"] == {"parts": [{"text": "A\n\nB\n\nC"}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "1"}, {"text": "2"}]},
        {"role": "model", "parts": [{"text": "x"}, {"text": "y"}]},
        {"role": "user", "parts": [{"text": "3"}]},
    ]


def test_system_only_becomes_user_turn():
    _, out, _ = translate({"model": "m", "messages": [{"role": "system", "content": "Say hi"}]})
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


def test_empty_messages_only_is_an_error():
    assert err({"model": "m", "messages": [user("")]}).param == "messages"


def test_http_images_use_fetched_bytes():
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
    assert urls_to_fetch(body) == {"https://example.com/a.png": "messages[0].content[0].image_url.url"}
    e = err(body)
    assert "messages[0].content[0].image_url.url" in e.message and e.param == "messages"
    _, out, _ = translate(body, fetched_images={"https://example.com/a.png": ("image/png; q=1", b"\x89PNG")})
    parts = out["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}}
    assert parts[1]["inlineData"]["mimeType"] == "image/jpeg"


def test_unsupported_image_scheme_message():
    e = err({"model": "m", "messages": [user("x"), user("y"), {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]})
    assert e.message == ("messages[2].content[0].image_url.url: only data: URIs and http(s) URLs "
                         "are supported")


def test_audio_and_files():
    _, out, _ = translate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": "JVBE", "filename": "notes.PDF"}},
        {"type": "image_url", "image_url": "data:text/plain,hello%20world"}]}]})
    parts = out["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "audio/mp3", "data": "UklG"}}
    assert parts[1] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}
    assert parts[2] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}
    assert parts[3] == {"inlineData": {"mimeType": "text/plain",
                                       "data": base64.b64encode(b"hello world").decode()}}
    e = err({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "JVBE", "filename": "blob"}}]}]})
    assert e.message.startswith("messages[0].content[0].file:")
    e = err({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-abc"}}]}]})
    assert "file_id" in e.message


def test_unknown_part_type_and_role():
    e = err({"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]})
    assert e.message.startswith("messages[0].content[0].type:")
    e = err({"model": "m", "messages": [{"role": "robot", "content": "x"}]})
    assert e.message.startswith("messages[0].role:")


# -- tools --------------------------------------------------------------------------------

def calls_message(*names, ids=None, sig=None):
    ids = ids or [f"call_{n}" for n in names]
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps({"n": n})}}
        for i, n in zip(ids, names)]}


def test_parallel_tool_results_in_call_order_one_turn():
    _, out, opts = translate({"model": "m", "messages": [
        user("go"), calls_message("a", "b", "c"),
        {"role": "tool", "tool_call_id": "call_c", "content": "plain text result"},
        {"role": "tool", "tool_call_id": "call_a", "content": "[1, 2]"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "{\"ok\": true}"}]},
        user("thanks")]})
    assert [t["role"] for t in out["contents"]] == ["user", "model", "user"]
    parts = out["contents"][2]["parts"]
    assert parts == [
        {"functionResponse": {"name": "a", "response": {"result": [1, 2]}}},
        {"functionResponse": {"name": "b", "response": {"ok": True}}},
        {"functionResponse": {"name": "c", "response": {"result": "plain text result"}}},
        {"text": "thanks"},
    ]
    assert opts.tool_call_names == {"call_a": "a", "call_b": "b", "call_c": "c"}


def test_unknown_tool_call_id():
    e = err({"model": "m", "messages": [user(), {"role": "tool", "tool_call_id": "call_x", "content": "1"}]})
    assert e.message.startswith("messages[1].tool_call_id:") and e.param == "messages"


def test_invalid_arguments_json_names_field():
    msg = calls_message("a")
    msg["tool_calls"][0]["function"]["arguments"] = "{not json"
    e = err({"model": "m", "messages": [user(), msg]})
    assert e.message.startswith("messages[1].tool_calls[0].function.arguments: is not valid JSON")
    msg["tool_calls"][0]["function"]["arguments"] = "[1]"
    assert "JSON object" in err({"model": "m", "messages": [user(), msg]}).message


def test_empty_arguments_are_empty_args():
    msg = calls_message("a")
    msg["tool_calls"][0]["function"]["arguments"] = ""
    _, out, _ = translate({"model": "m", "messages": [user(), msg]})
    assert out["contents"][1]["parts"][0]["functionCall"] == {"name": "a", "args": {}}


def tools(*names, params=None):
    return [{"type": "function", "function": {"name": n, "parameters": params or {
        "type": "object", "properties": {"q": {"type": "string"}}}}} for n in names]


@pytest.mark.parametrize("choice, config", [
    ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
    ("none", {"functionCallingConfig": {"mode": "NONE"}}),
    ("required", {"functionCallingConfig": {"mode": "ANY"}}),
    ({"type": "function", "function": {"name": "b"}},
     {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}}),
])
def test_tool_choice(choice, config):
    _, out, _ = translate({"model": "m", "messages": [user()], "tools": tools("a", "b"),
                           "tool_choice": choice})
    assert out["toolConfig"] == config


def test_tool_choice_allowed_tools_narrows_declarations():
    _, out, _ = translate({"model": "m", "messages": [user()], "tools": tools("a", "b", "c"),
                           "tool_choice": {"type": "allowed_tools", "allowed_tools": {
                               "mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]}}})
    assert [d["name"] for d in out["tools"][0]["functionDeclarations"]] == ["b"]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_tool_choice_errors():
    assert err({"model": "m", "messages": [user()], "tools": tools("a"),
                "tool_choice": {"type": "function", "function": {"name": "zzz"}}}).param == "tool_choice"
    assert err({"model": "m", "messages": [user()], "tools": tools("a"),
                "tool_choice": "sometimes"}).param == "tool_choice"


def test_tool_name_rules_and_duplicates():
    assert err({"model": "m", "messages": [user()], "tools": tools("has space")}).param == "tools"
    e = err({"model": "m", "messages": [user()], "tools": tools("a", "a")})
    assert "duplicate" in e.message


def test_parameterless_tool_and_json_schema_fallback():
    body = {"model": "m", "messages": [user()], "tools": [
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "tag", "parameters": {
            "type": "object", "properties": {"labels": {"type": "object",
                                                        "additionalProperties": {"type": "string"}}}}}},
        {"type": "custom", "custom": {"name": "freeform"}}]}
    e = err(body)
    assert e.param == "tools" and "tools[2].type: 'custom' tools" in e.message
    assert "drop_params" in e.message
    _, out, opts = translate({**body, "drop_params": True})
    decls = out["tools"][0]["functionDeclarations"]
    assert decls[0] == {"name": "now"}
    assert decls[1] == {"name": "tag", "parametersJsonSchema": body["tools"][1]["function"]["parameters"]}
    assert len(decls) == 2 and opts.dropped == ["tools[2].type"]


def test_legacy_functions():
    _, out, _ = translate({"model": "m", "messages": [user()],
                           "functions": [{"name": "f", "parameters": {
                               "type": "object", "properties": {"a": {"type": "string"}}}}],
                           "function_call": {"name": "f"}})
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


def test_web_search_options():
    _, out, _ = translate({"model": "m", "messages": [user()], "web_search_options": {}})
    assert out["tools"] == [{"googleSearch": {}}]


# -- generation config -------------------------------------------------------------------

def test_sampling_fields():
    _, out, opts = translate({"model": "gemini-2.5-flash", "messages": [user()], "temperature": 0.2,
                              "top_p": 0.5, "max_tokens": 10, "max_completion_tokens": 20,
                              "stop": ["a", "b"], "n": 2, "seed": 2**40 + 5, "presence_penalty": 0.5,
                              "frequency_penalty": 0})
    assert out["generationConfig"] == {"temperature": 0.2, "topP": 0.5, "maxOutputTokens": 20,
                                       "presencePenalty": 0.5, "seed": 5, "stopSequences": ["a", "b"],
                                       "candidateCount": 2}
    assert opts.n == 2


def test_penalties_dropped_for_gemini_3():
    _, out, _ = translate({"model": "gemini-3-pro-preview", "messages": [user()], "presence_penalty": 1})
    assert "generationConfig" not in out


@pytest.mark.parametrize("field, value", [
    ("temperature", 3), ("temperature", "hot"), ("temperature", True), ("top_p", -0.1),
    ("max_tokens", 0), ("max_completion_tokens", 1.5), ("stop", ["1", "2", "3", "4", "5", "6"]),
    ("stop", [1]), ("n", 0), ("seed", "x"), ("reasoning_effort", "extreme"), ("response_format", "json"),
    ("response_format", {"type": "yaml"}), ("tools", {}), ("presence_penalty", 9),
])
def test_bad_values_name_field(field, value):
    e = err({"model": "m", "messages": [user()], field: value})
    assert e.param == field and e.message.startswith(field)


def test_n_with_stream_is_refused():
    assert err({"model": "m", "messages": [user()], "n": 2, "stream": True}).param == "n"


def test_stream_options():
    _, _, opts = translate({"model": "m", "messages": [user()], "stream": True,
                            "stream_options": {"include_usage": True}})
    assert opts.stream and opts.include_usage
    _, _, opts = translate({"model": "m", "messages": [user()], "stream_options": {"include_usage": True}})
    assert not opts.include_usage


def test_response_format_json_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    _, out, _ = translate({"model": "m", "messages": [user()], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}})
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    recursive = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    _, out, _ = translate({"model": "m", "messages": [user()], "response_format": {
        "type": "json_schema", "json_schema": {"name": "tree", "schema": recursive}}})
    assert out["generationConfig"] == {"responseMimeType": "application/json",
                                       "responseJsonSchema": recursive}
    _, out, _ = translate({"model": "m", "messages": [user()], "response_format": {"type": "text"}})
    assert "generationConfig" not in out


@pytest.mark.parametrize("model, effort, expected", [
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
    ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("gemini-2.5-pro", "max", {"thinkingBudget": 32768, "includeThoughts": True}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ("gemini-3-flash-preview", "none", {"thinkingLevel": "MINIMAL"}),
    ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ("gemini-2.0-flash", "high", None),
])
def test_reasoning_effort_table(model, effort, expected):
    _, out, opts = translate({"model": model, "messages": [user()], "reasoning_effort": effort})
    assert out.get("generationConfig", {}).get("thinkingConfig") == expected
    assert opts.include_reasoning == bool(expected and expected.get("includeThoughts"))


def test_google_extras():
    extra = {"google": {"thinking_config": {"thinking_budget": 2048, "include_thoughts": True},
                        "cached_content": "abc",
                        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]}}
    for body_extra in ({"extra_body": extra}, extra):
        _, out, opts = translate({"model": "gemini-2.5-flash", "messages": [user()],
                                  "reasoning_effort": "high", **body_extra})
        assert out["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
        assert out["cachedContent"] == "cachedContents/abc"
        assert out["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]
        assert opts.include_reasoning
    e = err({"model": "m", "messages": [user()], "extra_body": {"google": {
        "thinking_config": {"thinking_budget": 1, "thinking_level": "low"}}}})
    assert e.message.startswith("extra_body.google.thinking_config:")


# -- answer -------------------------------------------------------------------------------

OPTS = ChatOptions(model="gemini-2.5-flash")


def complete(resp, options=OPTS):
    out = gemini_to_chat_completion(resp, model="gemini-2.5-flash", completion_id="chatcmpl-1",
                                    created=1760000000, options=options)
    ChatCompletion.model_validate(out)
    return out


def test_reference_answer_with_thoughts():
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Planning…", "thought": True}, {"text": "It is 3 °C.", "thoughtSignature": SIG}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "thoughtsTokenCount": 104,
                          "totalTokenCount": 201}, "modelVersion": "gemini-2.5-flash", "responseId": "r"}
    out = complete(resp)
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "It is 3 °C.",
                                                       "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 83, "completion_tokens": 118, "total_tokens": 201,
                            "prompt_tokens_details": {"cached_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 104}}
    out = complete(resp, ChatOptions(model="m", include_reasoning=True))
    assert out["choices"][0]["message"]["reasoning_content"] == "Planning…"


def test_tool_calls_answer():
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "b", "args": {}}}]}, "finishReason": "STOP"}]}
    out = complete(resp)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [{"name": "a", "arguments": "{\"x\":1}"},
                                              {"name": "b", "arguments": "{}"}]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIG}}
    assert "extra_content" not in calls[1]
    assert calls[0]["id"] != calls[1]["id"] and all(c["id"].startswith("call_") for c in calls)


@pytest.mark.parametrize("reason, expected", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"), ("FINISH_REASON_UNSPECIFIED", "stop"),
    (None, "stop"), ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason, expected):
    cand = {"content": {"parts": [{"text": "x"}]}}
    if reason:
        cand["finishReason"] = reason
    assert complete({"candidates": [cand]})["choices"][0]["finish_reason"] == expected


def test_max_tokens_without_parts():
    out = complete({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]})
    assert out["choices"][0]["message"]["content"] == "" and out["choices"][0]["finish_reason"] == "length"


def test_blocked_prompt():
    out = complete({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                    "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}})
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                               "logprobs": None, "finish_reason": "content_filter"}]
    assert out["usage"]["prompt_tokens"] == 5


def test_multiple_candidates():
    out = complete({"candidates": [{"content": {"parts": [{"text": "b"}]}, "index": 1, "finishReason": "STOP"},
                                   {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}]})
    assert [(c["index"], c["message"]["content"]) for c in out["choices"]] == [(0, "a"), (1, "b")]


def test_garbage_answer_is_tolerated_or_502():
    out = complete({"candidates": [None, {"content": "x"}, {"content": {"parts": [3, {"functionCall": "x"}]}}]})
    assert out["choices"][0]["message"]["content"] == ""
    with pytest.raises(TranslationError) as e:
        gemini_to_chat_completion([], model="m", completion_id="c", created=1, options=OPTS)
    assert e.value.status == 502


# -- signatures through a client ---------------------------------------------------------

def test_signature_round_trip_through_sdk_models():
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}]}, "finishReason": "STOP"}]}
    out = complete(resp)
    # What an SDK user does: parse, then feed the message back into the next request.
    parsed = ChatCompletion.model_validate_json(json.dumps(out))
    message = parsed.choices[0].message.model_dump(exclude_none=True)
    message.pop("extra_content", None)
    for call in message["tool_calls"]:
        call.pop("extra_content", None)  # a client that drops unknown fields
    history = json.loads(json.dumps([
        {"role": "user", "content": "Weather and time?"}, message,
        {"role": "tool", "tool_call_id": message["tool_calls"][1]["id"], "content": "12:00"},
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "3C"}]))
    _, body, _ = translate({"model": "gemini-3-pro-preview", "messages": history})
    model_turn = body["contents"][1]
    assert model_turn["parts"][0] == {"text": "Let me check."}
    assert model_turn["parts"][1] == {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                      "thoughtSignature": SIG}
    assert model_turn["parts"][2] == {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}
    assert [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]] == ["get_weather", "get_time"]


def test_extra_content_signature_preferred():
    msg = calls_message("a", ids=["call_foreign"])
    msg["tool_calls"][0]["extra_content"] = {"google": {"thought_signature": SIG}}
    _, body, _ = translate({"model": "gemini-3-pro-preview", "messages": [user(), msg]})
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == SIG


def test_bypass_signature_only_for_gemini_3_and_first_call():
    history = [user(), calls_message("a", "b", ids=["call_1", "call_2"]),
               {"role": "tool", "tool_call_id": "call_1", "content": "1"},
               {"role": "tool", "tool_call_id": "call_2", "content": "2"}]
    _, body, _ = translate({"model": "gemini-3-flash-preview", "messages": history})
    parts = body["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SKIP_SIGNATURE and "thoughtSignature" not in parts[1]
    _, body, _ = translate({"model": "gemini-2.5-flash", "messages": history})
    assert all("thoughtSignature" not in p for p in body["contents"][1]["parts"])
