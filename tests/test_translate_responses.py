"""Responses API ⇄ generateContent translation (request, unary answer, event stream)."""
import base64
import json

import httpx2
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.translate.errors import TranslationError
from proxy.translate.responses import (ResponsesOptions, ResponsesStreamTranslator,
                                       gemini_to_response, responses_request_to_gemini, sse_event)

SIG = base64.b64encode(b"sig" * 40).decode()
EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = {"promptTokenCount": 83, "candidatesTokenCount": 14, "thoughtsTokenCount": 104,
         "cachedContentTokenCount": 50, "totalTokenCount": 201}

SHELL = {"type": "function", "name": "shell", "description": "Run a command",
         "strict": False, "parameters": {"type": "object", "properties": {
             "command": {"type": "array", "items": {"type": "string"}},
             "workdir": {"type": "string"}}, "required": ["command"], "additionalProperties": False}}


def codex_body(**extra):
    body = {
        "model": "gemini-2.5-pro", "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: on"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "zzz"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "shell",
             "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_A",
             "output": "{\"output\":\"a.txt\\n\",\"metadata\":{\"exit_code\":0}}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a.txt"}]},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [SHELL, {"type": "custom", "name": "apply_patch", "description": "Edit files",
                          "format": {"type": "grammar", "syntax": "lark",
                                     "definition": "start: begin_patch"}}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "abc",
    }
    body.update(extra)
    return body


def test_codex_style_request():
    model, out, opts = responses_request_to_gemini(codex_body())
    assert model == "gemini-2.5-pro"
    assert out["systemInstruction"] == {"parts": [{"text": "You are Codex.\n\nsandbox: on"}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "list files"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "shell", "args": {"command": ["ls"]}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "shell", "response": {
            "output": "a.txt\n", "metadata": {"exit_code": 0}}}}]},
        {"role": "model", "parts": [{"text": "a.txt"}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    assert out["tools"] == [{"functionDeclarations": [{
        "name": "shell", "description": "Run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                                        "workdir": {"type": "string"}},
                       "required": ["command"]}}, {
        "name": "apply_patch",
        "description": "Edit files\n\nThe input must follow this lark grammar:\nstart: begin_patch",
        "parameters": {"type": "object", "properties": {"input": {
            "type": "string", "description": "The tool's whole input, as free text."}},
            "required": ["input"]}}]}]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}}
    assert opts.stream and opts.include_reasoning and opts.call_names == {"call_A": "shell"}


def test_string_input_and_sampling():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    _, out, opts = responses_request_to_gemini({
        "model": "gemini-2.5-flash", "input": "hi", "max_output_tokens": 100, "temperature": 0.5,
        "top_p": 0.9, "text": {"format": {"type": "json_schema", "name": "x", "schema": schema,
                                          "strict": True}}})
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert out["generationConfig"] == {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 100,
                                       "responseMimeType": "application/json",
                                       "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    assert not opts.include_reasoning


def test_effort_without_summary_does_not_ask_for_thoughts():
    _, out, opts = responses_request_to_gemini({"model": "gemini-2.5-flash", "input": "hi",
                                                "reasoning": {"effort": "high"}})
    assert out["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
    assert not opts.include_reasoning


def test_images_and_files_in_input():
    body = {"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": "data:image/webp;base64,UklG", "detail": "auto"},
        {"type": "input_image", "image_url": "https://x.test/cat.jpg"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}]}]}
    with pytest.raises(TranslationError) as e:
        responses_request_to_gemini(body)
    assert e.value.message.startswith("input[0].content[2].image_url:")
    _, out, _ = responses_request_to_gemini(body, fetched_images={"https://x.test/cat.jpg": ("image/jpeg", b"JPG")})
    parts = out["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/webp", "data": "UklG"}}
    assert parts[2] == {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(b"JPG").decode()}}
    assert parts[3] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]}, "input"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]}, "input"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
    ({"model": "m", "input": "x", "instructions": 5}, "instructions"),
])
def test_request_errors(body, param):
    with pytest.raises(TranslationError) as e:
        responses_request_to_gemini(body)
    assert e.value.param == param and e.value.message.startswith(param)


def test_previous_response_id_message():
    with pytest.raises(TranslationError) as e:
        responses_request_to_gemini({"model": "m", "input": "x", "previous_response_id": "resp_1"})
    assert "not supported" in e.value.message


def options(**kw):
    _, _, opts = responses_request_to_gemini(codex_body(**kw))
    return opts


def test_unary_answer():
    resp = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Thinking about files", "thought": True},
        {"text": "I'll list them."},
        {"functionCall": {"name": "shell", "args": {"command": ["ls", "-la"]}}, "thoughtSignature": SIG}]},
        "finishReason": "STOP"}], "usageMetadata": USAGE}
    out = gemini_to_response(resp, model="gemini-2.5-pro", response_id="resp_1", created=1760000000,
                             options=options())
    parsed = Response.model_validate(out)
    assert parsed.status == "completed"
    kinds = [i["type"] for i in out["output"]]
    assert kinds == ["reasoning", "message", "function_call"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "Thinking about files"}]
    assert out["output"][1]["content"][0]["text"] == "I'll list them."
    call = out["output"][2]
    assert call["name"] == "shell" and json.loads(call["arguments"]) == {"command": ["ls", "-la"]}
    assert out["usage"] == {"input_tokens": 83, "input_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 0},
                            "output_tokens": 118, "output_tokens_details": {"reasoning_tokens": 104},
                            "total_tokens": 201}
    assert parsed.tools[0].name == "shell" and parsed.parallel_tool_calls is False

    # The call goes back as history: the signature is restored from call_id.
    body = codex_body(model="gemini-3-pro-preview")
    body["input"] = [{"role": "user", "content": "list"}, call,
                     {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"}]
    _, gemini, _ = responses_request_to_gemini(json.loads(json.dumps(body)))
    assert gemini["contents"][1]["parts"][0]["thoughtSignature"] == SIG


@pytest.mark.parametrize("reason, status, detail", [
    ("MAX_TOKENS", "incomplete", "max_output_tokens"), ("SAFETY", "incomplete", "content_filter"),
    ("STOP", "completed", None), ("MALFORMED_FUNCTION_CALL", "completed", None),
])
def test_unary_status(reason, status, detail):
    out = gemini_to_response({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]},
                             model="m", response_id="resp_2", created=1, options=ResponsesOptions(model="m"))
    Response.model_validate(out)
    assert out["status"] == status
    assert (out["incomplete_details"] or {}).get("reason") == detail


def test_unary_blocked():
    out = gemini_to_response({"promptFeedback": {"blockReason": "SAFETY"}}, model="m", response_id="r",
                             created=1, options=ResponsesOptions(model="m"))
    Response.model_validate(out)
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "content_filter"}
    assert out["output"] == []


def stream_events(chunks, opts):
    tr = ResponsesStreamTranslator("gemini-2.5-pro", "resp_9", 1760000000, opts)
    events = [e for c in chunks for e in tr.feed(c)] + tr.finish()
    for i, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == i
        EVENT.validate_python(data)
    return events


def test_stream_event_sequence():
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Hmm", "thought": True}]}}], "usageMetadata": USAGE},
        {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}], "usageMetadata": USAGE},
        {"candidates": [{"content": {"parts": [{"text": "lo"}]}}], "usageMetadata": USAGE},
        {"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "shell", "args": {"command": ["ls"]}}, "thoughtSignature": SIG}]},
            "finishReason": "STOP"}], "usageMetadata": USAGE},
    ]
    events = stream_events(chunks, options())
    assert [n for n, _ in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = events[-1][1]["response"]
    Response.model_validate(final)
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["usage"]["output_tokens"] == 118
    assert events[12][1]["text"] == "Hello"
    assert [e[1]["output_index"] for e in events if "output_index" in e[1]] == [0] * 6 + [1] * 7 + [2] * 4


def test_stream_incomplete_and_failed():
    events = stream_events([{"candidates": [{"content": {"parts": [{"text": "cut"}]},
                                             "finishReason": "MAX_TOKENS"}]}], ResponsesOptions(model="m"))
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2][1]["item"]["status"] == "incomplete"

    tr = ResponsesStreamTranslator("m", "resp_f", 1, ResponsesOptions(model="m"))
    tr.feed({"candidates": [{"content": {"parts": [{"text": "par"}]}}]})
    name, data = tr.failed_event("upstream went away")
    assert name == "response.failed"
    EVENT.validate_python(data)
    assert data["response"]["error"] == {"code": "server_error", "message": "upstream went away"}


def test_stream_blocked_and_empty():
    events = stream_events([{"promptFeedback": {"blockReason": "SAFETY"}}], ResponsesOptions(model="m"))
    assert [n for n, _ in events] == ["response.created", "response.in_progress", "response.incomplete"]
    events = stream_events([], ResponsesOptions(model="m"))
    assert [n for n, _ in events] == ["response.created", "response.in_progress", "response.completed"]


def test_sse_event_framing():
    assert sse_event("response.created", {"a": 1}) == b'event: response.created\ndata: {"a":1}\n\n'


def test_sdk_consumes_responses_stream():
    chunks = [{"candidates": [{"content": {"parts": [{"text": "Hi "}]}}]},
              {"candidates": [{"content": {"parts": [{"text": "there"}]}, "finishReason": "STOP"}],
               "usageMetadata": USAGE}]
    opts = options()
    tr = ResponsesStreamTranslator("gemini-2.5-pro", "resp_s", 1760000000, opts)
    body = b"".join(sse_event(n, d) for c in chunks for n, d in tr.feed(c))
    body += b"".join(sse_event(n, d) for n, d in tr.finish())
    client = openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(
                               lambda req: httpx2.Response(200, content=body,
                                                           headers={"content-type": "text/event-stream"}))))
    deltas, final = [], None
    for event in client.responses.create(model="m", input="x", stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert deltas == ["Hi ", "there"]
    assert final.output_text == "Hi there" and final.usage.total_tokens == 201


def test_allowed_tools_names_custom_and_built_in_tools():
    body = codex_body(model="gemini-3-flash-preview",
                      tools=[SHELL, {"type": "custom", "name": "apply_patch"}, {"type": "web_search"},
                             {"type": "code_interpreter", "container": {"type": "auto"}}],
                      tool_choice={"type": "allowed_tools", "mode": "required", "tools": [
                          {"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]})
    _, out, _ = responses_request_to_gemini(body)
    assert out["tools"][0] == {"googleSearch": {}}
    assert [d["name"] for d in out["tools"][1]["functionDeclarations"]] == ["apply_patch"]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"},
                                 "includeServerSideToolInvocations": True}
