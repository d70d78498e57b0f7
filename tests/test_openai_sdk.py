"""The official openai SDK against the real gunicorn + gevent server and the fake upstream.

One live proxy serves the whole module (`shared_live`); each test takes `fake` so the
upstream's behaviours and request log start clean. Nothing here makes keys misbehave
(that would leave the shared proxy's pool cooling): see test_openai_errors.py for that.
"""
import base64
import json
import struct

import openai
import pytest
import requests

from conftest import GOOGLE_KEYS, USER_KEY

FLASH = "gemini-2.5-flash"
G3 = "gemini-3-pro-preview"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "utc": {"type": "boolean"}},
                   "required": ["city"]}}}


@pytest.fixture
def oai(shared_live, fake):
    return openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + "/v1", max_retries=0)


def generate_calls(fake, since=0):
    return [r for r in fake.requests[since:] if ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


# -- chat --------------------------------------------------------------------------------

def test_chat_non_stream(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello proxy"}])
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == FLASH
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "Hello proxy" in choice.message.content
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens >= resp.usage.prompt_tokens + resp.usage.completion_tokens
    (call,) = generate_calls(fake)
    assert call["key"] in GOOGLE_KEYS and call["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert call["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert call["body"]["contents"] == [{"role": "user", "parts": [{"text": "Hello proxy"}]}]


def test_chat_multi_turn_history_stays_turns(oai, fake):
    oai.chat.completions.create(model=FLASH, temperature=0.3, max_tokens=200, stop=["XYZ"], messages=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"}, {"role": "user", "content": "four"}])
    body = generate_calls(fake)[-1]["body"]
    assert [t["role"] for t in body["contents"]] == ["user", "model", "user"]
    assert [p["text"] for p in body["contents"][2]["parts"]] == ["three", "four"]
    gen = body["generationConfig"]
    assert gen["temperature"] == 0.3 and gen["maxOutputTokens"] == 200 and gen["stopSequences"] == ["XYZ"]


def test_chat_stream_with_usage(oai, fake):
    prompt = "one two three four five six seven eight"
    stream = oai.chat.completions.create(model=FLASH, stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": prompt}])
    chunks = list(stream)
    assert len(chunks) >= 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    finishes = [c.choices[0].finish_reason for c in chunks[:-1]]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "Echo: " + prompt
    # text arrived in more than one delta (not buffered into one)
    assert sum(1 for c in chunks[:-1] if c.choices[0].delta.content) > 1
    (call,) = generate_calls(fake)
    assert call["path"].endswith(":streamGenerateContent") and call["query"].get("alt") == "sse"


def test_chat_stream_without_usage_has_no_usage_chunk(oai):
    chunks = list(oai.chat.completions.create(model=FLASH, stream=True,
                                              messages=[{"role": "user", "content": "hi there"}]))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_model_alias_prefix_accepted(oai, fake):
    resp = oai.chat.completions.create(model="models/gemini-2.0-flash",
                                       messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Echo: hi"
    assert generate_calls(fake)[-1]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"


# -- tools and thought signatures --------------------------------------------------------

def test_two_round_tool_calls_gemini3_keep_signature(oai, fake):
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}
    upstream_sig = generate_calls(fake)[-1]
    # the assistant message goes back exactly as the SDK gave it
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    second = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert "Sunny, 21 C" in second.choices[0].message.content
    sent = generate_calls(fake)[-1]["body"]["contents"]
    model_turn = sent[1]
    assert model_turn["role"] == "model"
    fc_part = model_turn["parts"][0]
    assert fc_part["functionCall"]["name"] == "get_weather"
    # the signature is the real one the fake minted, not the bypass value
    assert fc_part["thoughtSignature"] and fc_part["thoughtSignature"] != "skip_thought_signature_validator"
    assert sent[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert upstream_sig["path"].endswith(f"{G3}:generateContent")


def test_tool_call_round_trip_with_id_only(oai, fake):
    """A client that keeps only the id (drops extra_content) still sends the signature back."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 20}'})
    second = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == 'Result: {"temp":20}'


def test_missing_signature_is_what_the_fake_refuses(oai, fake):
    """Sanity check of the premise: a tool call whose id lost the signature is refused by
    Gemini 3 unless the proxy falls back to the documented bypass (it does)."""
    messages = [{"role": "user", "content": "Weather in Rome?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_plain", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
                {"role": "tool", "tool_call_id": "call_plain", "content": "rain"}]
    resp = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    assert resp.choices[0].message.content == 'Result: {"result":"rain"}'  # text results wrapped
    sent = generate_calls(fake)[-1]["body"]["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "skip_thought_signature_validator"


def test_parallel_tool_calls_round_trip(oai, fake):
    messages = [{"role": "user", "content": "PARALLEL: weather and time in Oslo"}]
    first = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER, TIME])
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in msg.tool_calls}) == 2
    messages.append(msg.model_dump(exclude_none=True))
    # results in the reverse order: the proxy puts them back in call order
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "12:00"})
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "cloudy"})
    second = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER, TIME])
    assert second.choices[0].finish_reason == "stop"
    contents = generate_calls(fake)[-1]["body"]["contents"]
    names = [p["functionResponse"]["name"] for p in contents[2]["parts"]]
    assert names == ["get_weather", "get_time"]
    assert contents[1]["parts"][0].get("thoughtSignature")
    text = second.choices[0].message.content
    assert "cloudy" in text and "12:00" in text


def test_tool_calls_round_trip_streaming(oai, fake):
    messages = [{"role": "user", "content": "PARALLEL weather and time for Bergen"}]
    stream = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER, TIME],
                                         stream=True, stream_options={"include_usage": True})
    calls: dict[int, dict] = {}
    finish = None
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == "tool_calls" and sorted(calls) == [0, 1]
    assert chunks[-1].usage is not None
    assembled = [calls[i] for i in sorted(calls)]
    assert [c["name"] for c in assembled] == ["get_weather", "get_time"]
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in assembled]})
    for c in assembled:
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": c["name"] + " ok"})
    second = list(oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER, TIME],
                                              stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in second if c.choices)
    assert "get_weather ok" in text and "get_time ok" in text
    assert second[-1].choices[0].finish_reason == "stop"


def test_tool_choice_named_and_none(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       messages=[{"role": "user", "content": "anything"}])
    assert [c.function.name for c in resp.choices[0].message.tool_calls] == ["get_time"]
    config = generate_calls(fake)[-1]["body"]["toolConfig"]["functionCallingConfig"]
    assert config == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    resp = oai.chat.completions.create(model=FLASH, tools=[WEATHER], tool_choice="none",
                                       messages=[{"role": "user", "content": "just talk"}])
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].message.content == "Echo: just talk"


# -- structured output -------------------------------------------------------------------

def test_response_format_json_schema(oai, fake):
    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 3},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"type": "string", "enum": ["cat", "dog"]}},
        "required": ["name", "age", "tags", "kind"], "additionalProperties": False}
    resp = oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "a pet"}],
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "pet", "schema": schema, "strict": True}})
    value = json.loads(resp.choices[0].message.content)
    assert set(value) == {"name", "age", "tags", "kind"}
    assert isinstance(value["name"], str) and isinstance(value["age"], int) and value["age"] >= 3
    assert isinstance(value["tags"], list) and all(isinstance(t, str) for t in value["tags"])
    assert value["kind"] in ("cat", "dog")
    gen = generate_calls(fake)[-1]["body"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json"


def test_response_format_json_schema_with_pydantic_parse(oai):
    from pydantic import BaseModel

    class Pet(BaseModel):
        name: str
        legs: int

    parsed = oai.chat.completions.parse(model=FLASH, messages=[{"role": "user", "content": "a pet"}],
                                        response_format=Pet)
    pet = parsed.choices[0].message.parsed
    assert isinstance(pet, Pet) and isinstance(pet.legs, int)


def test_response_format_json_object(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "give JSON"}])
    assert isinstance(json.loads(resp.choices[0].message.content), dict)
    gen = generate_calls(fake)[-1]["body"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and "responseSchema" not in gen


# -- images ------------------------------------------------------------------------------

def test_image_data_uri(oai, fake):
    resp = oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]}])
    content = resp.choices[0].message.content
    size = len(base64.b64decode(PNG))
    assert f"[image/png {size} bytes]" in content and "What is this?" in content
    part = generate_calls(fake)[-1]["body"]["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": PNG}}


def test_private_image_url_refused_by_default(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}])
    assert err.value.status_code == 400
    assert "not a public address" in err.value.message
    assert generate_calls(fake) == []


# -- embeddings --------------------------------------------------------------------------

def test_embeddings_float_and_base64_agree(oai, fake):
    texts = ["alpha", "beta gamma"]
    as_float = oai.embeddings.create(model="gemini-embedding-001", input=texts, encoding_format="float")
    default = oai.embeddings.create(model="gemini-embedding-001", input=texts)  # SDK asks for base64
    assert [d.index for d in as_float.data] == [0, 1]
    assert len(as_float.data[0].embedding) == 3072
    for a, b in zip(as_float.data, default.data):
        assert len(a.embedding) == len(b.embedding)
        assert all(abs(x - y) < 1e-6 for x, y in zip(a.embedding, b.embedding))
    assert as_float.data[0].embedding != as_float.data[1].embedding
    assert as_float.usage.prompt_tokens > 0
    embeds = [r for r in fake.requests if ":batchEmbedContents" in r["path"]]
    assert len(embeds) == 2


def test_embeddings_base64_on_the_wire(shared_live, fake):
    r = requests.post(shared_live.url + "/v1/embeddings", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"model": "gemini-embedding-001", "input": "alpha", "encoding_format": "base64",
                            "dimensions": 8})
    assert r.status_code == 200
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert len(raw) == 8 * 4
    floats = struct.unpack("<8f", raw)
    r2 = requests.post(shared_live.url + "/v1/embeddings", headers={"Authorization": f"Bearer {USER_KEY}"},
                       json={"model": "gemini-embedding-001", "input": "alpha", "dimensions": 8,
                             "encoding_format": "float"})
    assert all(abs(a - b) < 1e-6 for a, b in zip(floats, r2.json()["data"][0]["embedding"]))


def test_embeddings_dimensions(oai, fake):
    resp = oai.embeddings.create(model="gemini-embedding-001", input="single string", dimensions=256)
    assert len(resp.data) == 1 and len(resp.data[0].embedding) == 256
    batch = [r for r in fake.requests if ":batchEmbedContents" in r["path"]][-1]["body"]
    assert batch["requests"][0]["outputDimensionality"] == 256


def test_embeddings_bad_dimensions_is_400(oai):
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="gemini-embedding-001", input="x", dimensions=999_999)


# -- models ------------------------------------------------------------------------------

def test_models_list(oai):
    models = list(oai.models.list())
    ids = [m.id for m in models]
    assert "gemini-2.5-flash" in ids and "gemini-embedding-001" in ids
    assert not any(i.startswith("models/") for i in ids)
    assert all(m.object == "model" and m.owned_by == "google" for m in models)


def test_model_retrieve_and_unknown(oai):
    got = oai.models.retrieve("gemini-2.5-pro")
    assert got.id == "gemini-2.5-pro" and got.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_chat_with_unknown_model_is_404(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="gemini-9-imaginary", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


def test_native_client_on_v1_models_gets_native_answer(shared_live, fake):
    r = requests.get(shared_live.url + "/v1/models", headers={"x-goog-api-key": USER_KEY})
    assert r.status_code == 200
    body = r.json()
    assert "models" in body and "data" not in body
    assert any(m["name"] == "models/gemini-2.5-flash" for m in body["models"])
    r = requests.get(shared_live.url + "/v1/models", params={"key": USER_KEY})
    assert r.status_code == 200 and "models" in r.json()
    r = requests.get(shared_live.url + "/v1/models/gemini-2.5-flash", headers={"x-goog-api-key": USER_KEY})
    assert r.status_code == 200 and r.json()["name"] == "models/gemini-2.5-flash"


# -- Responses API -----------------------------------------------------------------------

FLAT_WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": WEATHER["function"]["parameters"], "strict": True}


def test_responses_non_stream(oai, fake):
    resp = oai.responses.create(model=FLASH, input="Hello responses", instructions="Be brief.")
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text == "Echo: Hello responses"
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.usage.total_tokens >= resp.usage.input_tokens + resp.usage.output_tokens
    body = generate_calls(fake)[-1]["body"]
    assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."


def test_responses_stream_create(oai):
    events = list(oai.responses.create(model=FLASH, input="stream these words please", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[1] == "response.in_progress"
    assert types[-1] == "response.completed"
    for name in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert name in types, name
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Echo: stream these words please"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_responses_stream_helper(oai):
    with oai.responses.stream(model=FLASH, input="helper stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: helper stream"
    assert final.output_text == "Echo: helper stream" and final.usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_call_round_trip(oai, fake, stream):
    items: list = [{"role": "user", "content": "What is the weather in Oslo?"}]
    if stream:
        with oai.responses.stream(model=G3, input=items, tools=[FLAT_WEATHER]) as s:
            first = s.get_final_response()
    else:
        first = oai.responses.create(model=G3, input=items, tools=[FLAT_WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "example"}
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"})
    if stream:
        with oai.responses.stream(model=G3, input=items, tools=[FLAT_WEATHER]) as s:
            second = s.get_final_response()
    else:
        second = oai.responses.create(model=G3, input=items, tools=[FLAT_WEATHER])
    assert second.status == "completed" and "Sunny" in second.output_text
    sent = generate_calls(fake)[-1]["body"]["contents"]
    fc = next(p for t in sent for p in t["parts"] if "functionCall" in p)
    assert fc["thoughtSignature"] != "skip_thought_signature_validator"


def test_responses_stream_function_call_events(oai):
    events = list(oai.responses.create(model=FLASH, input="weather in Oslo", tools=[FLAT_WEATHER],
                                       stream=True))
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "example"}
    assert types[-1] == "response.completed"


@pytest.mark.parametrize("base", ["/openai", "/openai/v1"])
def test_openai_prefixed_routes(shared_live, fake, base):
    client = openai.OpenAI(api_key=USER_KEY, base_url=shared_live.url + base, max_retries=0)
    assert client.responses.create(model=FLASH, input="via prefix").output_text == "Echo: via prefix"
    chat = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "p"}])
    assert chat.choices[0].message.content == "Echo: p"
    assert any(m.id == FLASH for m in client.models.list())
    assert len(client.embeddings.create(model="gemini-embedding-001", input="x").data) == 1


# -- errors through the SDK --------------------------------------------------------------

def test_bad_user_key_is_authentication_error(shared_live, fake):
    bad = openai.OpenAI(api_key="not-a-user-key", base_url=shared_live.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert fake.requests == []


def test_missing_messages_names_the_field(oai, fake):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, messages=None)  # type: ignore[arg-type]
    assert "messages" in err.value.message
    assert err.value.param == "messages"
    assert err.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:
        oai.post("/chat/completions", body={"model": FLASH}, cast_to=object)
    assert err.value.param == "messages"
    assert generate_calls(fake) == []


def test_bad_fields_name_the_field(oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=FLASH, temperature=7,
                                    messages=[{"role": "user", "content": "x"}])
    assert "temperature" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=FLASH, input=[])
    assert "input" in err.value.message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"])
@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_json_is_400(shared_live, fake, path, raw):
    r = requests.post(shared_live.url + path, data=raw,
                      headers={"Authorization": f"Bearer {USER_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "JSON" in err["message"]


def test_responses_parallel_calls_with_reasoning_round_trip(oai, fake):
    """Codex-style: every output item (reasoning included) goes back with the call outputs."""
    tools = [FLAT_WEATHER, {"type": "function", "name": "get_time", "description": "Time",
                            "parameters": TIME["function"]["parameters"]}]
    items: list = [{"role": "user", "content": [{"type": "input_text", "text": "PARALLEL Oslo"}]}]
    with oai.responses.stream(model=G3, input=items, tools=tools,
                              reasoning={"effort": "low", "summary": "auto"}) as s:
        kinds = [e.type for e in s]
        first = s.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert [o.type for o in first.output] == ["reasoning", "function_call", "function_call"]
    calls = first.output[1:]
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items += [{"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} done"}
              for c in reversed(calls)]
    second = oai.responses.create(model=G3, input=items, tools=tools)
    assert "get_weather done" in second.output_text and "get_time done" in second.output_text
    contents = generate_calls(fake)[-1]["body"]["contents"]
    assert [t["role"] for t in contents] == ["user", "model", "user"]
    assert [p["functionCall"]["name"] for p in contents[1]["parts"]] == ["get_weather", "get_time"]
    assert contents[1]["parts"][0]["thoughtSignature"] != "skip_thought_signature_validator"
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_time"]


def test_chat_stream_is_not_buffered(oai, fake):
    """Deltas reach the client as upstream chunks arrive, not all at the end."""
    import time

    for key in GOOGLE_KEYS:
        fake.set_key(key, chunks=4, chunk_delay_ms=300)
    t0 = time.monotonic()
    arrivals = []
    for chunk in oai.chat.completions.create(model=FLASH, stream=True, messages=[
            {"role": "user", "content": "slow words arrive one by one"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - t0)
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.5  # spread over the upstream's pacing
    assert arrivals[0] < 0.5


def test_reasoning_content_when_asked(oai):
    resp = oai.chat.completions.create(model=FLASH, reasoning_effort="low",
                                       messages=[{"role": "user", "content": "think"}])
    msg = resp.choices[0].message
    assert msg.content == "Echo: think"
    assert "Considering" in msg.model_extra.get("reasoning_content", "")
    assert resp.usage.completion_tokens_details.reasoning_tokens > 0
    assert resp.usage.completion_tokens > resp.usage.completion_tokens_details.reasoning_tokens


def test_finish_reasons_length_and_content_filter(oai):
    resp = oai.chat.completions.create(model=FLASH, max_completion_tokens=2,
                                       messages=[{"role": "user", "content": "a long answer please " * 3}])
    assert resp.choices[0].finish_reason == "length"
    resp = oai.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "BLOCKME"}])
    assert resp.choices[0].finish_reason == "content_filter"
    chunks = list(oai.chat.completions.create(model=FLASH, stream=True,
                                              messages=[{"role": "user", "content": "BLOCKME"}]))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    resp = oai.responses.create(model=FLASH, input="BLOCKME")
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "content_filter"


@pytest.mark.parametrize("echo", ["model_dump", "object"])
def test_tool_round_trip_with_message_as_sdk_gives_it(oai, fake, echo):
    """The assistant message back untouched: a plain model_dump() (None fields and all) or
    the pydantic object itself, as many apps append it."""
    messages: list = [{"role": "user", "content": "Weather in Lima?"}]
    first = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    msg = first.choices[0].message
    messages.append(msg.model_dump() if echo == "model_dump" else msg)
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "warm"})
    second = oai.chat.completions.create(model=G3, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == 'Result: {"result":"warm"}'


def test_chat_stream_helper_tool_round_trip(oai, fake):
    """The SDK's accumulating stream helper builds the message; it goes back as is."""
    messages: list = [{"role": "user", "content": "PARALLEL Lima"}]
    with oai.chat.completions.stream(model=G3, messages=messages, tools=[WEATHER, TIME]) as s:
        final = s.get_final_completion()
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_time"]
    messages.append(msg.model_dump(exclude_none=True))
    for c in msg.tool_calls:
        messages.append({"role": "tool", "tool_call_id": c.id, "content": "ok " + c.function.name})
    with oai.chat.completions.stream(model=G3, messages=messages, tools=[WEATHER, TIME]) as s:
        final = s.get_final_completion()
    assert "ok get_weather" in final.choices[0].message.content


def test_responses_multi_turn_with_message_items(oai, fake):
    items: list = [{"role": "user", "content": "first question"}]
    first = oai.responses.create(model=FLASH, input=items)
    items += [o.model_dump() for o in first.output]
    items.append({"role": "user", "content": "second question"})
    second = oai.responses.create(model=FLASH, input=items)
    assert second.output_text == "Echo: second question"
    contents = generate_calls(fake)[-1]["body"]["contents"]
    assert [t["role"] for t in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [{"text": "Echo: first question"}]
