"""Translate a Gemini response stream into Responses API events, one upstream chunk at a time."""
from __future__ import annotations

from typing import Any

from .chat import candidate_parts
from .fields import is_int
from .finish import read_chunk
from .response_items import (ResponsesOptions, function_call_item, message_item, outcome,
                             output_text, reasoning_item, response_object)
from .signatures import encode_call_id, new_id
from .sse import sse_event
from .tools import function_call_json
from .usage import responses_usage

__all__ = ["ResponsesStreamTranslator", "sse_event"]

Event = tuple[str, dict[str, Any]]


class _OpenItem:
    __slots__ = ("kind", "item_id", "index", "texts")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind      # "message" or "reasoning"
        self.item_id = item_id
        self.index = index    # output_index
        self.texts: list[str] = []


class ResponsesStreamTranslator:
    """Turn GenerateContentResponse chunks into the Responses API event sequence.

    created → in_progress → per item: output_item.added, its content events,
    output_item.done → completed (or incomplete) with the full response and
    usage. Every event carries `type` and an increasing `sequence_number`.
    Only the first candidate is followed (the Responses API has no `n`).
    """

    def __init__(self, model: str, response_id: str, created: int,
                 options: ResponsesOptions) -> None:
        self.model = model
        self.response_id = response_id
        self.created = created
        self.options = options
        self.include_reasoning = bool(getattr(options, "include_reasoning", False))
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self._open: _OpenItem | None = None
        self._started = False
        self._done = False
        self._usage: Any = None
        self._reason: Any = None
        self._blocked = False

    def _event(self, kind: str, payload: dict[str, Any]) -> Event:
        payload["type"] = kind
        payload["sequence_number"] = self._seq
        self._seq += 1
        return kind, payload

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.response_id, self.created, self.model, self.options,
                               status=status, output=list(self.output), **extra)

    def start(self) -> list[Event]:
        """Return response.created and response.in_progress (once; feed/finish call it too)."""
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", {"response": self._response("in_progress")}),
                self._event("response.in_progress", {"response": self._response("in_progress")})]

    # -- items ------------------------------------------------------------------------------
    def _open_item(self, kind: str, out: list[Event]) -> _OpenItem:
        self._close(out)
        index = len(self.output)
        if kind == "message":
            item = _OpenItem(kind, new_id("msg_"), index)
            out.append(self._event("response.output_item.added", {
                "output_index": index,
                "item": {"type": "message", "id": item.item_id, "role": "assistant",
                         "status": "in_progress", "content": []}}))
            out.append(self._event("response.content_part.added", {
                "item_id": item.item_id, "output_index": index, "content_index": 0,
                "part": output_text("")}))
        else:
            item = _OpenItem(kind, new_id("rs_"), index)
            out.append(self._event("response.output_item.added", {
                "output_index": index,
                "item": {"type": "reasoning", "id": item.item_id, "summary": []}}))
            out.append(self._event("response.reasoning_summary_part.added", {
                "item_id": item.item_id, "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}))
        self._open = item
        return item

    def _text(self, kind: str, text: str, out: list[Event]) -> None:
        item = self._open
        if item is None or item.kind != kind:
            item = self._open_item(kind, out)
        item.texts.append(text)
        if kind == "message":
            out.append(self._event("response.output_text.delta", {
                "item_id": item.item_id, "output_index": item.index, "content_index": 0,
                "delta": text, "logprobs": []}))
        else:
            out.append(self._event("response.reasoning_summary_text.delta", {
                "item_id": item.item_id, "output_index": item.index, "summary_index": 0,
                "delta": text}))

    def _close(self, out: list[Event], status: str = "completed") -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        text = "".join(item.texts)
        ids = {"item_id": item.item_id, "output_index": item.index}
        if item.kind == "message":
            out.append(self._event("response.output_text.done",
                                   {**ids, "content_index": 0, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done",
                                   {**ids, "content_index": 0, "part": output_text(text)}))
            done = message_item(item.item_id, text, status)
        else:
            out.append(self._event("response.reasoning_summary_text.done",
                                   {**ids, "summary_index": 0, "text": text}))
            out.append(self._event("response.reasoning_summary_part.done",
                                   {**ids, "summary_index": 0,
                                    "part": {"type": "summary_text", "text": text}}))
            done = reasoning_item(item.item_id, text)
        self.output.append(done)
        out.append(self._event("response.output_item.done",
                               {"output_index": item.index, "item": done}))

    def _call(self, part: dict[str, Any], fc: dict[str, Any], out: list[Event]) -> None:
        self._close(out)
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        index = len(self.output)
        item_id = new_id("fc_")
        call_id = encode_call_id(signature)
        arguments = function_call_json(fc.get("args"))
        out.append(self._event("response.output_item.added", {
            "output_index": index,
            "item": function_call_item(item_id, call_id, fc["name"], "", "in_progress")}))
        out.append(self._event("response.function_call_arguments.delta", {
            "item_id": item_id, "output_index": index, "delta": arguments}))
        out.append(self._event("response.function_call_arguments.done", {
            "item_id": item_id, "output_index": index, "name": fc["name"],
            "arguments": arguments}))
        done = function_call_item(item_id, call_id, fc["name"], arguments)
        self.output.append(done)
        out.append(self._event("response.output_item.done", {"output_index": index, "item": done}))

    # -- the stream -----------------------------------------------------------------------
    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """Return the events for one upstream chunk (after created/in_progress on the first)."""
        out = self.start()
        if not isinstance(chunk, dict) or self._done:
            return out
        meta, blocked, candidates = read_chunk(chunk)
        if meta is not None:
            self._usage = meta
        self._blocked = self._blocked or blocked
        for cand in candidates:
            index = cand.get("index")
            if is_int(index) and index != 0:
                continue  # only the first candidate (index omitted when 0)
            if isinstance(cand.get("finishReason"), str):
                self._reason = cand["finishReason"]
            for part in candidate_parts(cand):
                if not isinstance(part, dict):
                    continue
                fc = part.get("functionCall")
                if isinstance(fc, dict):
                    if isinstance(fc.get("name"), str):
                        self._call(part, fc, out)
                    continue
                text = part.get("text")
                if not isinstance(text, str) or not text:
                    continue
                if part.get("thought") is True:
                    if self.include_reasoning:
                        self._text("reasoning", text, out)
                else:
                    self._text("message", text, out)
        return out

    def finish(self) -> list[Event]:
        """Close the open item and return response.completed (or response.incomplete)."""
        out = self.start()
        if self._done:
            return out
        self._done = True
        blocked = self._blocked and self._reason is None
        status, incomplete = outcome(self._reason, blocked)
        self._close(out, "completed" if status == "completed" else "incomplete")
        response = self._response(status, usage=responses_usage(self._usage),
                                  incomplete=incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, {"response": response}))
        return out

    def failed_event(self, message: str, code: str = "server_error") -> Event:
        """Return the response.failed event for a failure after the stream began."""
        self._done = True
        self._open = None
        response = self._response("failed", usage=responses_usage(self._usage),
                                  error={"code": code, "message": message})
        return self._event("response.failed", {"response": response})
