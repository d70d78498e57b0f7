"""Chat stream translation and the upstream SSE parser."""
import base64
import json

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from proxy.translate.chat import ChatOptions, chat_request_to_gemini
from proxy.translate.chat_stream import SSE_DONE, ChatStreamTranslator, SSEParser, sse

SIG = base64.b64encode(b"\x01\x02signature-bytes" * 20).decode()
USAGE1 = {"promptTokenCount": 10, "candidatesTokenCount": 1, "totalTokenCount": 11}
USAGE2 = {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
          "totalTokenCount": 22}


def text_chunk(text, finish=None, usage=USAGE1, thought=False):
    part = {"text": text}
    if thought:
        part["thought"] = True
    cand = {"content": {"parts": [part], "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash",
            "responseId": "r1"}


def run(chunks, **opts):
    tr = ChatStreamTranslator("gemini-2.5-flash", "chatcmpl-1", 1760000000,
                              ChatOptions(model="gemini-2.5-flash", **opts))
    per_feed = [tr.feed(c) for c in chunks]
    out = [c for batch in per_feed for c in batch] + tr.finish()
    for chunk in out:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["id"] == "chatcmpl-1" and chunk["created"] == 1760000000
    return out, per_feed


def test_text_stream_with_usage():
    out, per_feed = run([text_chunk("Hel"), text_chunk("lo", "STOP", USAGE2)], stream=True,
                        include_usage=True)
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in out] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}, None]
    assert [len(b) for b in per_feed] == [2, 1]  # no buffering: text leaves with its chunk
    assert out[3]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["completion_tokens"] == 12
    assert out[-1]["usage"]["total_tokens"] == 22


def test_no_usage_field_without_include_usage():
    out, _ = run([text_chunk("a", "STOP")])
    assert all("usage" not in c for c in out)
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_empty_chunks_produce_nothing():
    out, per_feed = run([{"usageMetadata": USAGE1}, {"candidates": []}, text_chunk(""), {},
                         text_chunk("x", "STOP")])
    assert per_feed[:4] == [[], [], [], []]
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""},
                                                       {"content": "x"}, {}]


def test_reasoning_deltas_only_when_asked():
    chunks = [text_chunk("think", thought=True), text_chunk("answer", "STOP")]
    out, _ = run(chunks)
    assert [c["choices"][0]["delta"] for c in out][1:] == [{"content": "answer"}, {}]
    out, _ = run(chunks, include_reasoning=True)
    assert [c["choices"][0]["delta"] for c in out][1:] == [{"reasoning_content": "think"},
                                                          {"content": "answer"}, {}]


def test_parallel_function_calls():
    chunk = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {}}}]}, "finishReason": "STOP"}],
        "usageMetadata": USAGE1}
    out, _ = run([chunk])
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas[1] == {"content": "Checking."}
    first, second = deltas[2]["tool_calls"][0], deltas[3]["tool_calls"][0]
    assert first["index"] == 0 and second["index"] == 1
    assert first["type"] == "function" and first["function"] == {"name": "get_weather",
                                                                 "arguments": "{\"city\":\"Oslo\"}"}
    assert first["extra_content"] == {"google": {"thought_signature": SIG}}
    assert second["function"] == {"name": "get_time", "arguments": "{}"}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_blocked_stream():
    out, _ = run([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": USAGE1}])
    assert [c["choices"][0] for c in out][-1]["finish_reason"] == "content_filter"
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_max_tokens_and_safety_finish():
    assert run([text_chunk("a", "MAX_TOKENS")])[0][-1]["choices"][0]["finish_reason"] == "length"
    assert run([text_chunk("a", "SAFETY")])[0][-1]["choices"][0]["finish_reason"] == "content_filter"


def test_finish_twice_and_junk():
    tr = ChatStreamTranslator("m", "c", 1, ChatOptions(model="m"))
    assert tr.feed(None) == [] and tr.feed({"candidates": [None, 3, {"content": []}]}) == []
    assert len(tr.finish()) == 2 and tr.finish() == []


def test_sse_helpers_compact():
    assert sse({"a": 1, "b": "é"}) == 'data: {"a":1,"b":"é"}\n\n'.encode()
    assert sse({"s": "\ud800"}) == b'data: {"s":"\\ud800"}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_error_chunk_raises_api_error_in_sdk():
    tr = ChatStreamTranslator("m", "c", 1, ChatOptions(model="m", stream=True))
    body = b"".join(sse(c) for c in tr.feed(text_chunk("partial")))
    body += sse(tr.error_chunk(503, "The model is overloaded."))

    client = openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(
                               lambda req: httpx2.Response(200, content=body,
                                                           headers={"content-type": "text/event-stream"}))))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                            stream=True)
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "partial"]
    assert "overloaded" in str(exc.value) and exc.value.type == "server_error"


def test_sdk_consumes_stream_and_signature_comes_back():
    """End to end through the openai SDK: stream → accumulate → send history back."""
    chunks = [text_chunk("Let me look. "),
              {"candidates": [{"content": {"role": "model", "parts": [
                  {"functionCall": {"name": "lookup", "args": {"q": "x"}}, "thoughtSignature": SIG},
                  {"functionCall": {"name": "lookup", "args": {"q": "y"}}}]}, "finishReason": "STOP"}],
               "usageMetadata": USAGE2}]
    tr = ChatStreamTranslator("gemini-3-pro-preview", "chatcmpl-9", 5,
                              ChatOptions(model="gemini-3-pro-preview", stream=True, include_usage=True))
    body = b"".join(sse(c) for ch in chunks for c in tr.feed(ch)) + b"".join(sse(c) for c in tr.finish())
    body += SSE_DONE
    client = openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(
                               lambda req: httpx2.Response(200, content=body,
                                                           headers={"content-type": "text/event-stream"}))))
    calls: dict[int, dict] = {}
    text, usage, finish = "", None, None
    for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}],
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += tc.id or ""
                slot["name"] += tc.function.name or ""
                slot["arguments"] += tc.function.arguments or ""
    assert text == "Let me look. " and finish == "tool_calls"
    assert usage.completion_tokens == 12 and usage.completion_tokens_details.reasoning_tokens == 7
    history = [{"role": "user", "content": "q"},
               {"role": "assistant", "content": text, "tool_calls": [
                   {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                   for _, c in sorted(calls.items())]},
               {"role": "tool", "tool_call_id": calls[0]["id"], "content": "1"},
               {"role": "tool", "tool_call_id": calls[1]["id"], "content": "2"}]
    _, gemini, _ = chat_request_to_gemini({"model": "gemini-3-pro-preview", "messages": history})
    parts = gemini["contents"][1]["parts"]
    assert parts[1]["thoughtSignature"] == SIG and "thoughtSignature" not in parts[2]


# -- SSE parser --------------------------------------------------------------------------

EVENTS = [{"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]},
          {"candidates": [{"content": {"parts": [{"text": "lo\nworld ✓"}]}, "finishReason": "STOP"}]}]


def framed(eol: bytes) -> bytes:
    out = b": keep-alive" + eol
    for ev in EVENTS:
        out += b"data: " + json.dumps(ev, ensure_ascii=False).encode() + eol + eol
    return out


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_split_at_every_byte(eol):
    data = framed(eol)
    for cut in range(len(data) + 1):
        p = SSEParser()
        got = p.feed(data[:cut]) + p.feed(data[cut:]) + p.finish()
        assert got == EVENTS, (eol, cut)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_byte_by_byte(eol):
    p = SSEParser()
    got = []
    for b in framed(eol):
        got += p.feed(bytes([b]))
    assert got + p.finish() == EVENTS


def test_sse_parser_multiline_data_and_fields():
    p = SSEParser()
    got = p.feed(b'event: message\nid: 1\nretry: 10\ndata: {"a":\ndata: 1}\n\ndata:{"b":2}\n\n')
    assert got == [{"a": 1}, {"b": 2}]


def test_sse_parser_crlf_split_between_chunks_keeps_multiline_event():
    p = SSEParser()
    got = p.feed(b'data: {"a":\r') + p.feed(b'\ndata: 1}\r') + p.feed(b'\n\r') + p.feed(b'\n')
    assert got == [{"a": 1}]


def test_sse_parser_bare_json_error_lines():
    p = SSEParser()
    err = {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    pretty = json.dumps(err, indent=2).encode()
    got = p.feed(b'data: {"a":1}\n\n' + pretty + b"\n")
    assert got == [{"a": 1}, err]
    assert SSEParser().feed(json.dumps([err]).encode() + b"\n") == [err]
    assert SSEParser().feed(b"data: " + json.dumps([err]).encode() + b"\n\n") == [err]


def test_sse_parser_malformed_data_reported():
    got = SSEParser().feed(b"data: {broken\n\n")
    assert got[0]["error"]["code"] == 502


def test_sse_parser_done_and_unterminated_tail():
    p = SSEParser()
    assert p.feed(b"data: [DONE]\n\ndata: {\"z\":1}") == []
    assert p.finish() == [{"z": 1}]
