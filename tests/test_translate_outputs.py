"""What Gemini answers beyond text and calls: citations, logprobs, code runs, images, audio."""
import base64

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.translate.audio import wav
from proxy.translate.chat import ChatOptions, gemini_to_chat_completion
from proxy.translate.chat_stream import ChatStreamTranslator
from proxy.translate.grounding import citations
from proxy.translate.logprobs import split_by_text
from proxy.translate.responses import ResponsesOptions, ResponsesStreamTranslator, gemini_to_response

EVENT = TypeAdapter(ResponseStreamEvent)
TEXT = "Der Bär schläft. Paris is big."


def grounded(text=TEXT, seg_text=True):
    start = len("Der Bär schläft. ".encode())  # Gemini counts UTF-8 bytes
    seg = {"startIndex": start, "endIndex": len(text.encode()), **({"text": "Paris is big."} if seg_text else {})}
    return {"content": {"parts": [{"text": text}]}, "finishReason": "STOP",
            "groundingMetadata": {
                "webSearchQueries": ["paris size"],
                "groundingChunks": [{"web": {"uri": "https://a.example/1", "title": "a.example"}},
                                    {"web": {"uri": "https://b.example/2"}}],
                "groundingSupports": [{"segment": seg, "groundingChunkIndices": [0, 1, 7]}]}}


def test_citations_count_characters_not_bytes():
    for seg_text in (True, False):
        cites = citations(grounded(seg_text=seg_text), TEXT)
        assert [(c["url"], c["title"]) for c in cites] == [("https://a.example/1", "a.example"),
                                                           ("https://b.example/2", "https://b.example/2")]
        assert {TEXT[c["start_index"]:c["end_index"]] for c in cites} == {"Paris is big."}


def test_recitation_sources_are_citations_too():
    cand = {"content": {"parts": [{"text": TEXT}]},
            "citationMetadata": {"citationSources": [{"startIndex": 0, "endIndex": 3,
                                                      "uri": "https://c.example", "license": "mit"}]}}
    assert citations(cand, TEXT) == [{"url": "https://c.example", "title": "mit",
                                      "start_index": 0, "end_index": 3}]


def test_chat_answer_with_code_images_and_search_steps():
    parts = [{"toolCall": {"id": "s", "toolType": "GOOGLE_SEARCH_WEB", "args": {}}},
             {"toolResponse": {"id": "s", "response": {}}},
             {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
             {"codeExecutionResult": {"outcome": "OUTCOME_FAILED", "output": "boom"}},
             {"text": "done"},
             {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]
    out = gemini_to_chat_completion({"candidates": [{"content": {"parts": parts}}]}, model="m",
                                    completion_id="c", created=1, options=ChatOptions(model="m"))
    ChatCompletion.model_validate(out)
    message = out["choices"][0]["message"]
    assert message["content"] == "\n```python\nprint(1)\n```\n\n```output error\nboom\n```\ndone"
    assert message["images"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"},
                                  "index": 0}]
    assert out["service_tier"] == "default"


def test_chat_audio_answer_is_wav_with_gemini_rate():
    pcm = b"\x01\x00\x02\x00"
    part = {"inlineData": {"mimeType": "audio/L16;codec=pcm;rate=16000",
                           "data": base64.b64encode(pcm).decode()}}
    out = gemini_to_chat_completion({"candidates": [{"content": {"parts": [part]}}]}, model="m",
                                    completion_id="c", created=1,
                                    options=ChatOptions(model="m", audio_format="wav"))
    ChatCompletion.model_validate(out)
    audio = out["choices"][0]["message"]["audio"]
    assert base64.b64decode(audio["data"]) == wav(pcm, 16000)
    assert wav(pcm, 16000)[24:28] == (16000).to_bytes(4, "little")


def test_chat_stream_sends_each_citation_once():
    tr = ChatStreamTranslator("m", "c", 1, ChatOptions(model="m"))
    chunks = tr.feed({"candidates": [{"content": {"parts": [{"text": "Der Bär schläft. "}]}}]})
    chunks += tr.feed({"candidates": [dict(grounded(), content={"parts": [{"text": "Paris is big."}]})]})
    chunks += tr.feed({"candidates": [dict(grounded(), content={"parts": [{"text": ""}]})]})  # repeated
    chunks += tr.finish()
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    notes = [a for c in chunks for a in c["choices"][0]["delta"].get("annotations", [])]
    assert [a["url_citation"]["url"] for a in notes] == ["https://a.example/1", "https://b.example/2"]
    assert TEXT[notes[0]["url_citation"]["start_index"]:notes[0]["url_citation"]["end_index"]] == "Paris is big."


def test_responses_stream_events_validate_for_every_item_kind():
    opts = ResponsesOptions(model="m", logprobs=True, top_logprobs=1, custom_tools={"patch"},
                            namespaces={"spawn": "agents"})
    tr = ResponsesStreamTranslator("m", "r", 1, opts)
    logprobs = {"chosenCandidates": [{"token": "Der ", "logProbability": -0.5}],
                "topCandidates": [{"candidates": [{"token": "Der ", "logProbability": -0.5}]}]}
    chunks = [
        {"candidates": [{"content": {"parts": [{"executableCode": {"code": "print(1)"}}]}}]},
        {"candidates": [{"content": {"parts": [{"codeExecutionResult": {"outcome": "OUTCOME_OK",
                                                                         "output": "1\n"}}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "Der Bär schläft. "}]},
                         "logprobsResult": logprobs}]},
        {"candidates": [dict(grounded(), content={"parts": [{"text": "Paris is big."}]})]},
        {"candidates": [{"content": {"parts": [
            {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
            {"functionCall": {"name": "patch", "args": {"input": "*** Begin"}}},
            {"functionCall": {"name": "spawn", "args": {"id": "7"}}}]}}]},
    ]
    events = [e for c in chunks for e in tr.feed(c)] + tr.finish()
    for i, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == i
        EVENT.validate_python(data)
    final = events[-1][1]["response"]
    Response.model_validate(final)
    kinds = [o["type"] for o in final["output"]]
    assert kinds == ["code_interpreter_call", "message", "image_generation_call",
                     "custom_tool_call", "function_call", "web_search_call"]
    run, message, image, custom, call, search = final["output"]
    assert run["outputs"] == [{"type": "logs", "logs": "1\n"}] and run["code"] == "print(1)"
    assert [a["url"] for a in message["content"][0]["annotations"]] == ["https://a.example/1",
                                                                       "https://b.example/2"]
    assert message["content"][0]["logprobs"][0]["token"] == "Der "
    assert image["result"] == "UklG" and image["output_format"] == "webp"
    assert custom["input"] == "*** Begin" and call["namespace"] == "agents"
    assert search["action"]["queries"] == ["paris size"]
    names = [n for n, _ in events]
    assert "response.output_text.annotation.added" in names
    assert "response.custom_tool_call_input.done" in names


def test_responses_unary_matches_the_stream():
    opts = ResponsesOptions(model="m")
    out = gemini_to_response({"candidates": [grounded()], "usageMetadata": {"serviceTier": "flex"}},
                             model="m", response_id="r", created=1, options=opts)
    Response.model_validate(out)
    assert [o["type"] for o in out["output"]] == ["web_search_call", "message"]
    assert out["service_tier"] == "flex"


def test_logprobs_are_dealt_out_to_consecutive_messages():
    entries = [{"token": t} for t in ["ab", "c", "de", "f"]]
    assert split_by_text(entries, ["abc", "def"]) == [entries[:2], entries[2:]]
    assert split_by_text(entries, ["abcdef"]) == [entries]
