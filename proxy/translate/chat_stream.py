"""Translate a Gemini response stream into Chat Completions chunks, one upstream chunk at a time."""
from __future__ import annotations

import time
from typing import Any

from .audio import AUDIO_TTL, audio_data, is_audio
from .chat import ChatOptions, candidate_parts, choice_logprobs, tool_call
from .errors import gemini_error_to_openai
from .fields import is_int
from .finish import chat_finish_reason, read_chunk
from .generation import answered_tier
from .grounding import chat_annotation, citations
from .outputs import chat_image, code_text, image_of, is_code
from .signatures import new_id
from .sse import SSE_DONE, SSEParser, sse  # re-exported: the stream's framing lives here too
from .usage import chat_usage

__all__ = ["ChatStreamTranslator", "SSEParser", "SSE_DONE", "sse"]


class _Choice:
    __slots__ = ("started", "calls", "reason", "text", "cited", "images", "audio_id")

    def __init__(self) -> None:
        self.started = False  # role delta sent
        self.calls = 0        # tool calls sent (the next call's index)
        self.reason: Any = None
        self.text: list[str] = []  # content so far, kept to place citations in it
        self.cited: set[tuple[str, int, int]] = set()
        self.images = 0
        self.audio_id: str | None = None


class ChatStreamTranslator:
    """Turn GenerateContentResponse chunks into `chat.completion.chunk` dicts.

    Text goes out as soon as it arrives (one chunk per upstream chunk and
    choice); each function call becomes one complete tool_calls delta; the
    finish reason and usage wait for `finish()`, since Gemini repeats usage on
    every chunk and the last one counts.
    """

    def __init__(self, model: str, completion_id: str, created: int,
                 options: ChatOptions) -> None:
        self.model = model
        self.completion_id = completion_id
        self.created = created
        self.options = options
        self.include_usage = bool(getattr(options, "include_usage", False))
        self.include_reasoning = bool(getattr(options, "include_reasoning", False))
        self.single_call = bool(getattr(options, "single_call", False))
        self.audio_format = getattr(options, "audio_format", None) or "pcm16"
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._blocked = False
        self._finished = False

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk",
                 "created": self.created, "model": self.model,
                 "service_tier": answered_tier(self._usage, getattr(self.options, "service_tier", None)),
                 "choices": [{"index": index, "delta": delta, "logprobs": None,
                              "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _open(self, index: int, state: _Choice, out: list[dict[str, Any]]) -> None:
        if not state.started:
            state.started = True
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))

    def _flush_text(self, index: int, state: _Choice, texts: list[str], thoughts: list[str],
                    out: list[dict[str, Any]], logprobs: dict[str, Any] | None = None) -> None:
        if not texts and not thoughts:
            return
        self._open(index, state, out)
        delta: dict[str, Any] = {}
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
            thoughts.clear()
        if texts:
            delta["content"] = "".join(texts)
            state.text.append(delta["content"])
            texts.clear()
        chunk = self._chunk(index, delta)
        if logprobs is not None and "content" in delta:
            chunk["choices"][0]["logprobs"] = logprobs
        out.append(chunk)

    def _annotations(self, index: int, state: _Choice, cand: dict[str, Any],
                     out: list[dict[str, Any]]) -> None:
        """Send the citations a chunk's grounding metadata adds (Gemini repeats them)."""
        if "groundingMetadata" not in cand and "citationMetadata" not in cand:
            return
        text = "".join(state.text)
        state.text = [text]
        fresh = []
        for c in citations(cand, text):
            key = (c["url"], c["start_index"], c["end_index"])
            if key not in state.cited:
                state.cited.add(key)
                fresh.append(chat_annotation(c))
        if fresh:
            self._open(index, state, out)
            out.append(self._chunk(index, {"annotations": fresh}))

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the OpenAI chunks for one upstream chunk (none for an empty one)."""
        out: list[dict[str, Any]] = []
        if not isinstance(chunk, dict) or self._finished:
            return out
        meta, blocked, candidates = read_chunk(chunk)
        if meta is not None:
            self._usage = meta
        self._blocked = self._blocked or blocked
        for cand in candidates:
            index = cand.get("index")
            index = int(index) if is_int(index) and index >= 0 else 0  # omitted when 0
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            reason = cand.get("finishReason")
            if isinstance(reason, str):
                state.reason = reason
            texts: list[str] = []
            thoughts: list[str] = []
            logprobs = choice_logprobs(cand, self.options)
            for part in candidate_parts(cand):
                if not isinstance(part, dict):
                    continue
                fc = part.get("functionCall")
                if isinstance(fc, dict):
                    call = tool_call(part, fc)
                    if call is None or (self.single_call and state.calls):
                        continue
                    self._flush_text(index, state, texts, thoughts, out, logprobs)
                    self._open(index, state, out)
                    call["index"] = state.calls
                    state.calls += 1
                    out.append(self._chunk(index, {"tool_calls": [call]}))
                    continue
                if is_code(part):
                    texts.append(code_text(part))
                    continue
                image = image_of(part)
                if image is not None:
                    self._flush_text(index, state, texts, thoughts, out, logprobs)
                    self._open(index, state, out)
                    out.append(self._chunk(index, {"images": [chat_image(*image, state.images)]}))
                    state.images += 1
                    continue
                if is_audio(part):
                    self._open(index, state, out)
                    state.audio_id = state.audio_id or new_id("audio_")
                    out.append(self._chunk(index, {"audio": {
                        "id": state.audio_id, "data": audio_data([part], self.audio_format),
                        "transcript": ""}}))
                    continue
                text = part.get("text")
                if isinstance(text, str) and text:
                    if part.get("thought") is True:
                        if self.include_reasoning:
                            thoughts.append(text)
                    else:
                        texts.append(text)
            self._flush_text(index, state, texts, thoughts, out, logprobs)
            self._annotations(index, state, cand, out)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Return the closing chunks: finish_reason per choice, then usage if asked for."""
        if self._finished:
            return []
        self._finished = True
        out: list[dict[str, Any]] = []
        if not self._choices:
            self._choices[0] = _Choice()
        for index in sorted(self._choices):
            state = self._choices[index]
            self._open(index, state, out)
            if state.audio_id:  # the last audio delta says until when the audio is kept
                out.append(self._chunk(index, {"audio": {
                    "id": state.audio_id, "expires_at": int(time.time()) + AUDIO_TTL}}))
            if self._blocked and state.reason is None and not state.calls:
                reason = "content_filter"
            else:
                reason = chat_finish_reason(state.reason, state.calls > 0)
            out.append(self._chunk(index, {}, reason))
        if self.include_usage:
            out.append({"id": self.completion_id, "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model,
                        "service_tier": answered_tier(self._usage,
                                                      getattr(self.options, "service_tier", None)),
                        "choices": [], "usage": chat_usage(self._usage)})
        return out

    def error_chunk(self, status: int, message: str) -> dict[str, Any]:
        """Return the `{"error": …}` payload for a failure after the stream began.

        The openai SDK raises APIError when a `data:` event carries `error`.
        """
        _, body = gemini_error_to_openai(status, {"error": {"message": message}})
        return body
