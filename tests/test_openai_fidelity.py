"""Nothing a client sends or Gemini answers is dropped silently on the OpenAI routes.

The official openai SDK against the real gunicorn server (`shared_live`) and the fake
upstream: each field is mapped to its Gemini meaning, refused with a 400 naming it, or
(where OpenAI calls it advisory) accepted and documented.
"""
import base64

import openai
import pytest
import requests

from conftest import USER_KEY

FLASH = "gemini-2.5-flash"
G3 = "gemini-3-flash-preview"
H = {"x-goog-api-key": USER_KEY}


@pytest.fixture
def oai(shared_live, fake):
    return openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + "/v1", max_retries=0)


def generate_calls(fake):
    return [r for r in fake.requests if ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


# -- cached content is pinned to the key that created it ----------------------------------

def _cache(shared_live, fake) -> tuple[str, str]:
    r = requests.post(shared_live.url + "/v1beta/cachedContents", headers=H, timeout=10, json={
        "model": f"models/{FLASH}", "ttl": "300s",
        "contents": [{"role": "user", "parts": [{"text": "a long shared context " * 50}]}]})
    assert r.status_code == 200, r.text
    return r.json()["name"], fake.requests[-1]["key"]


def test_cached_content_through_chat_and_responses_goes_to_its_owner(oai, shared_live, fake):
    name, owner = _cache(shared_live, fake)
    google = {"extra_body": {"google": {"cached_content": name}}}
    for _ in range(4):
        chat = oai.chat.completions.create(model=FLASH, extra_body=google,
                                           messages=[{"role": "user", "content": "hi"}])
        assert chat.usage.prompt_tokens_details.cached_tokens > 0
        resp = oai.responses.create(model=FLASH, input="hi", extra_body=google)
        assert resp.usage.input_tokens_details.cached_tokens > 0
    calls = generate_calls(fake)
    assert len(calls) == 8 and {c["key"] for c in calls} == {owner}
    assert all(c["body"]["cachedContent"] == name for c in calls)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
FLAT_WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": WEATHER["function"]["parameters"]}
TOLERANT = {"drop_params": True}


def hello(text="What is new in Oslo today?"):
    return [{"role": "user", "content": text}]


# -- built-in tools next to functions: what each model family accepts ---------------------

def test_fake_enforces_googles_rule_for_search_next_to_functions(shared_live, fake):
    url = shared_live.url + "/v1beta/models/{}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f"}]}]}
    r = requests.post(url.format(FLASH), json=body, headers=H, timeout=10)
    assert r.status_code == 400 and "Tool use with function calling is unsupported" in r.text
    r = requests.post(url.format(G3), json=body, headers=H, timeout=10)
    assert r.status_code == 400 and "include_server_side_tool_invocations" in r.text
    flagged = dict(body, toolConfig={"includeServerSideToolInvocations": True})
    assert requests.post(url.format(G3), json=flagged, headers=H, timeout=10).status_code == 200


def test_chat_web_search_with_functions_per_model_family(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=hello(), tools=[WEATHER],
                                    web_search_options={})
    assert err.value.param == "web_search_options" and "Gemini 3" in err.value.message
    assert not generate_calls(fake)
    # Gemini 3 takes both, with the flag it needs; Google's own search steps stay out of the answer
    resp = oai.chat.completions.create(model=G3, messages=hello(), tools=[WEATHER],
                                       web_search_options={"search_context_size": "low"})
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    body = generate_calls(fake)[-1]["body"]
    assert body["tools"][0] == {"googleSearch": {}} and "functionDeclarations" in body["tools"][1]
    assert body["toolConfig"]["includeServerSideToolInvocations"] is True
    # a tolerant client on Gemini 2.5 keeps its functions and is told what was dropped
    raw = oai.chat.completions.with_raw_response.create(
        model=FLASH, messages=hello(), tools=[WEATHER], web_search_options={}, extra_body=TOLERANT)
    assert raw.headers["x-proxy-dropped-params"] == "web_search_options"
    assert raw.parse().choices[0].message.tool_calls
    assert generate_calls(fake)[-1]["body"]["tools"] == [
        {"functionDeclarations": [generate_calls(fake)[-1]["body"]["tools"][0]["functionDeclarations"][0]]}]


# -- Responses built-in tools ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["web_search", "web_search_preview"])
def test_responses_web_search_is_google_search_with_citations(oai, fake, kind):
    resp = oai.responses.create(model=FLASH, input="Who won the match?", tools=[{"type": kind}])
    assert generate_calls(fake)[-1]["body"]["tools"] == [{"googleSearch": {}}]
    search, message = resp.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.query == "Who won the match?"
    assert [s.url for s in search.action.sources][0].startswith("https://vertexaisearch")
    text = message.content[0]
    assert text.text == "Echo: Who won the match?"
    cites = text.annotations
    assert [(c.type, c.title) for c in cites] == [("url_citation", "example.com"),
                                                  ("url_citation", "example.org")]
    assert cites[0].start_index == 0 and text.text[:cites[0].end_index] == text.text[:len(text.text) // 2]


def test_responses_web_search_streamed_citations(oai):
    events = list(oai.responses.create(model=FLASH, input="Who won the match?", stream=True,
                                       tools=[{"type": "web_search"}]))
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [e.annotation["title"] if isinstance(e.annotation, dict) else e.annotation.title
            for e in added] == ["example.com", "example.org"]
    final = events[-1].response
    assert final.status == "completed"
    message = next(o for o in final.output if o.type == "message")
    assert len(message.content[0].annotations) == 2
    assert any(o.type == "web_search_call" for o in final.output)


def test_chat_web_search_citations_streamed_and_not(oai):
    resp = oai.chat.completions.create(model=FLASH, messages=hello(), web_search_options={})
    message = resp.choices[0].message
    (first, second) = message.annotations
    assert first.type == "url_citation" and first.url_citation.title == "example.com"
    assert first.url_citation.url.startswith("https://vertexaisearch.cloud.google.com/")
    span = message.content[first.url_citation.start_index:first.url_citation.end_index]
    assert span and message.content.startswith(span)
    chunks = list(oai.chat.completions.create(model=FLASH, messages=hello(), stream=True,
                                              web_search_options={}))
    streamed = [a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {})
                .get("annotations", [])]
    assert [a["url_citation"]["title"] for a in streamed] == ["example.com", "example.org"]
    assert streamed[0]["url_citation"]["end_index"] == first.url_citation.end_index


def test_responses_code_interpreter_is_code_execution(oai, fake):
    resp = oai.responses.create(model=FLASH, input="compute 6*7",
                                tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert generate_calls(fake)[-1]["body"]["tools"] == [{"codeExecution": {}}]
    run = resp.output[0]
    assert run.type == "code_interpreter_call" and run.code == "print(6 * 7)"
    assert run.status == "completed" and run.outputs[0].logs == "42\n"
    assert resp.output[1].type == "message"
    # streamed: the same item, then the text; and the run goes back as history next turn
    final = list(oai.responses.create(model=FLASH, input="compute 6*7", stream=True,
                                      tools=[{"type": "code_interpreter", "container": "auto"}]))[-1]
    assert [o.type for o in final.response.output] == ["code_interpreter_call", "message"]
    assert final.response.output[0].outputs[0].logs == "42\n"
    history = [{"role": "user", "content": "compute 6*7"},
               final.response.output[0].model_dump(exclude_none=True),
               {"role": "user", "content": "and now?"}]
    oai.responses.create(model=FLASH, input=history)
    model_turn = generate_calls(fake)[-1]["body"]["contents"][1]
    assert model_turn == {"role": "model", "parts": [
        {"executableCode": {"language": "PYTHON", "code": "print(6 * 7)"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}}]}


@pytest.mark.parametrize("tool", [{"type": "file_search", "vector_store_ids": ["vs_1"]},
                                  {"type": "computer_use_preview", "display_width": 1,
                                   "display_height": 1, "environment": "linux"},
                                  {"type": "image_generation"},
                                  {"type": "mcp", "server_label": "x", "server_url": "https://x"}])
def test_responses_builtins_without_counterpart_are_refused_or_dropped(oai, fake, tool):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=FLASH, input="hi", tools=[tool])
    assert err.value.param == "tools" and repr(tool["type"]) in err.value.message
    assert "tools[0].type" in err.value.message
    raw = oai.responses.with_raw_response.create(model=FLASH, input="hi", tools=[tool],
                                                 extra_body=TOLERANT)
    assert raw.headers["x-proxy-dropped-params"] == "tools[0].type"
    assert "tools" not in generate_calls(fake)[-1]["body"]


def test_responses_tool_choice_forcing_a_builtin_is_refused(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=FLASH, input="hi", tools=[{"type": "web_search_preview"}],
                             tool_choice={"type": "web_search_preview"})
    assert err.value.param == "tool_choice" and "'web_search_preview'" in err.value.message
    assert not generate_calls(fake)


def test_tolerance_by_header_for_clients_without_body_fields(shared_live, fake):
    client = openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + "/v1", max_retries=0,
                           default_headers={"X-Proxy-Drop-Params": "true"})
    raw = client.responses.with_raw_response.create(model=FLASH, input="hi",
                                                    tools=[{"type": "file_search"}])
    assert raw.headers["x-proxy-dropped-params"] == "tools[0].type"


# -- namespaces and custom tools (Codex CLI) ------------------------------------------------

AGENT_FUNCTIONS = ["spawn_agent", "send_input", "wait", "close_agent", "list_agents"]
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
             "tools": [{"type": "function", "name": n, "description": f"{n} tool",
                        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}
                       for n in AGENT_FUNCTIONS]}


@pytest.mark.parametrize("stream", [False, True])
def test_namespace_functions_flatten_and_calls_carry_the_namespace(oai, fake, stream):
    kwargs = dict(model=FLASH, input="start a helper", tools=[NAMESPACE])
    if stream:
        resp = list(oai.responses.create(stream=True, **kwargs))[-1].response
    else:
        resp = oai.responses.create(**kwargs)
    decls = generate_calls(fake)[-1]["body"]["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in decls] == AGENT_FUNCTIONS
    assert decls[0]["description"] == "spawn_agent tool\n\n(multi_agent_v1: Sub-agents)"
    (call,) = resp.output
    assert call.type == "function_call" and call.name == "spawn_agent"
    assert call.namespace == "multi_agent_v1"
    # the call goes back as history with its namespace, and its output is paired with it
    follow = oai.responses.create(model=FLASH, tools=[NAMESPACE], input=[
        {"role": "user", "content": "start a helper"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "agent 7"}])
    assert follow.output[0].content[0].text == 'Result: {"result":"agent 7"}'


def test_custom_tools_round_trip(oai, fake):
    patch = {"type": "custom", "name": "apply_patch", "description": "Edit files",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    resp = oai.responses.create(model=FLASH, input="fix the bug", tools=[patch])
    (call,) = resp.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert call.input == "example"
    decl = generate_calls(fake)[-1]["body"]["tools"][0]["functionDeclarations"][0]
    assert "lark grammar" in decl["description"]
    follow = oai.responses.create(model=FLASH, tools=[patch], input=[
        {"role": "user", "content": "fix the bug"}, call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "done"}])
    assert follow.output[0].content[0].text == 'Result: {"result":"done"}'
    sent = generate_calls(fake)[-1]["body"]["contents"]
    assert sent[1]["parts"][0]["functionCall"] == {"name": "apply_patch", "args": {"input": "example"}}


def test_parallel_tool_calls_false_keeps_one_call(oai, fake):
    tools = [WEATHER, {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    both = oai.chat.completions.create(model=FLASH, messages=hello("PARALLEL Oslo"), tools=tools)
    assert len(both.choices[0].message.tool_calls) == 2
    one = oai.chat.completions.create(model=FLASH, messages=hello("PARALLEL Oslo"), tools=tools,
                                      parallel_tool_calls=False)
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]
    streamed = list(oai.responses.create(model=FLASH, input="PARALLEL Oslo", stream=True,
                                         parallel_tool_calls=False,
                                         tools=[FLAT_WEATHER, dict(FLAT_WEATHER, name="get_time")]))
    assert [o.name for o in streamed[-1].response.output] == ["get_weather"]


# -- refused request fields ---------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("conversation", "conv_123"), ("background", True),
                                          ("previous_response_id", "resp_1"),
                                          ("prompt", {"id": "pmpt_1"})])
def test_stateful_responses_fields_are_refused(oai, fake, field, value):
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=FLASH, input="hi", extra_body={field: value, **TOLERANT})
    assert err.value.param == field
    assert not generate_calls(fake)


def test_unknown_and_unsupported_chat_fields(oai, fake):
    for extra in ({"logit_bias": {"50256": -100}}, {"frobnicate": 1}, {"verbosity": "low"}):
        with pytest.raises(openai.BadRequestError) as err:
            oai.chat.completions.create(model=FLASH, messages=hello(), extra_body=extra)
        assert err.value.param == next(iter(extra))
    raw = oai.chat.completions.with_raw_response.create(
        model=FLASH, messages=hello(), logit_bias={"50256": -100}, verbosity="high",
        user="u1", store=True, extra_body=TOLERANT)
    assert raw.headers["x-proxy-dropped-params"] == "logit_bias, verbosity"
    assert raw.parse().choices[0].message.content


# -- logprobs -----------------------------------------------------------------------------

def test_chat_logprobs_both_ways(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, messages=hello("one two three"),
                                       logprobs=True, top_logprobs=2)
    gen = generate_calls(fake)[-1]["body"]["generationConfig"]
    assert gen["responseLogprobs"] is True and gen["logprobs"] == 2
    content = resp.choices[0].logprobs.content
    assert "".join(t.token for t in content) == resp.choices[0].message.content
    assert content[1].logprob == pytest.approx(-0.1) and len(content[1].top_logprobs) == 2
    assert content[0].bytes == list(content[0].token.encode())
    chunks = list(oai.chat.completions.create(model=FLASH, messages=hello("one two three"),
                                              logprobs=True, stream=True))
    tokens = [t.token for c in chunks if c.choices and c.choices[0].logprobs
              for t in c.choices[0].logprobs.content]
    assert "".join(tokens) == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=hello(), top_logprobs=2)
    assert err.value.param == "top_logprobs"


def test_responses_top_logprobs(oai, fake):
    resp = oai.responses.create(model=FLASH, input="one two three", top_logprobs=3)
    assert generate_calls(fake)[-1]["body"]["generationConfig"]["logprobs"] == 3
    text = resp.output[0].content[0]
    assert "".join(t.token for t in text.logprobs) == text.text
    assert len(text.logprobs[0].top_logprobs) == 3 and resp.top_logprobs == 3
    events = list(oai.responses.create(model=FLASH, input="one two three", stream=True,
                                       include=["message.output_text.logprobs"]))
    deltas = [t.token for e in events if e.type == "response.output_text.delta" for t in e.logprobs]
    assert "".join(deltas) == text.text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert [t.token for t in done.logprobs] == deltas


# -- service tier -------------------------------------------------------------------------

def test_service_tier_mapped_and_echoed(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, messages=hello(), service_tier="flex")
    assert generate_calls(fake)[-1]["body"]["serviceTier"] == "flex"
    assert resp.service_tier == "flex"
    plain = oai.chat.completions.create(model=FLASH, messages=hello())
    assert "serviceTier" not in generate_calls(fake)[-1]["body"] and plain.service_tier == "default"
    resp = oai.responses.create(model=FLASH, input="hi", service_tier="priority")
    assert generate_calls(fake)[-1]["body"]["serviceTier"] == "priority"
    assert resp.service_tier == "priority"
    chunks = list(oai.chat.completions.create(model=FLASH, messages=hello(), stream=True,
                                              service_tier="default"))
    assert generate_calls(fake)[-1]["body"]["serviceTier"] == "standard"
    assert {c.service_tier for c in chunks} == {"default"}
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=hello(), service_tier="scale")
    assert err.value.param == "service_tier"


# -- audio ---------------------------------------------------------------------------------

TTS = "gemini-2.5-flash-preview-tts"


def test_chat_audio_from_a_speech_model(oai, fake):
    resp = oai.chat.completions.create(model=TTS, messages=hello("Say hi"),
                                       modalities=["text", "audio"],
                                       audio={"voice": "Kore", "format": "wav"})
    gen = generate_calls(fake)[-1]["body"]["generationConfig"]
    assert gen["responseModalities"] == ["AUDIO"]
    assert gen["speechConfig"] == {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}
    message = resp.choices[0].message
    assert message.content is None and message.audio.id.startswith("audio_")
    wav = base64.b64decode(message.audio.data)
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    assert int.from_bytes(wav[24:28], "little") == 24000 and len(wav) == 44 + 2 * len("Say hi")
    chunks = list(oai.chat.completions.create(model=TTS, messages=hello("Say hi"), stream=True,
                                              modalities=["text", "audio"],
                                              audio={"voice": "Puck", "format": "pcm16"}))
    audio = [c.choices[0].delta.audio for c in chunks if c.choices and c.choices[0].delta.audio]
    pcm = b"".join(base64.b64decode(a.data) for a in audio if a.data)
    assert pcm == wav[44:] and audio[-1].expires_at > 0 and audio[0].id == audio[-1].id


@pytest.mark.parametrize("audio, param", [({"voice": "alloy", "format": "wav"}, "audio"),
                                          ({"voice": "Kore", "format": "mp3"}, "audio"),
                                          ({"voice": "Kore", "format": "wav"}, "audio")])
def test_chat_audio_refusals(oai, fake, audio, param):
    stream = audio["format"] == "wav" and audio["voice"] == "Kore"  # wav cannot stream
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=TTS, messages=hello(), modalities=["text", "audio"],
                                    audio=audio, stream=stream)
    assert err.value.param == param
    assert not generate_calls(fake)


# -- images in, images out ----------------------------------------------------------------

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_image_detail_is_media_resolution(oai, fake):
    oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]}])
    assert generate_calls(fake)[-1]["body"]["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_HIGH"
    oai.responses.create(model=FLASH, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"}]}])
    assert generate_calls(fake)[-1]["body"]["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_LOW"


def test_images_from_an_image_model(oai, fake):
    resp = oai.chat.completions.create(model="gemini-2.5-flash-image", messages=hello("draw a dot"))
    message = resp.choices[0].message
    assert message.content == "Echo: draw a dot"
    (image,) = message.model_extra["images"]
    assert image["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    chunks = list(oai.chat.completions.create(model="gemini-2.5-flash-image", stream=True,
                                              messages=hello("draw a dot")))
    images = [i for c in chunks if c.choices for i in (c.choices[0].delta.model_extra or {})
              .get("images", [])]
    assert images == [image]
    resp = oai.responses.create(model="gemini-2.5-flash-image", input="draw a dot")
    assert [o.type for o in resp.output] == ["message", "image_generation_call"]
    assert resp.output[1].result == PNG and resp.output[1].status == "completed"
    final = list(oai.responses.create(model="gemini-2.5-flash-image", input="draw a dot",
                                      stream=True))[-1].response
    assert final.output[1].result == PNG
    # the picture goes back as history, so a follow-up can edit it
    oai.responses.create(model="gemini-2.5-flash-image", input=[
        {"role": "user", "content": "draw a dot"}, final.output[1].model_dump(exclude_none=True),
        {"role": "user", "content": "make it red"}])
    assert generate_calls(fake)[-1]["body"]["contents"][1] == {
        "role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}


# -- embeddings task type ----------------------------------------------------------------

def test_embeddings_task_type_extension(oai, fake):
    oai.embeddings.create(model="gemini-embedding-001", input=["a", "b"],
                          extra_body={"extra_body": {"google": {"task_type": "retrieval_query"}}})
    requests_ = fake.requests[-1]["body"]["requests"]
    assert [r["taskType"] for r in requests_] == ["RETRIEVAL_QUERY"] * 2
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="gemini-embedding-001", input="a",
                              extra_body={"extra_body": {"google": {"task_type": "poetry"}}})
    assert err.value.param == "extra_body"
