"""Translate a Gemini response stream into Responses API events, one upstream chunk at a time."""
from __future__ import annotations

from typing import Any

from .chat import candidate_parts
from .fields import is_int
from .finish import read_chunk
from .grounding import citations, responses_annotation, search_queries
from .logprobs import token_logprobs
from .outputs import code_item, image_item, image_of
from .response_items import (ResponsesOptions, call_item, message_item, outcome, output_text,
                             reasoning_item, response_object, web_search_item)
from .signatures import encode_call_id, new_id
from .sse import sse_event
from .usage import responses_usage

__all__ = ["ResponsesStreamTranslator", "sse_event"]

Event = tuple[str, dict[str, Any]]


class _OpenItem:
    __slots__ = ("kind", "item_id", "index", "texts", "annotations", "logprobs")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind      # "message" or "reasoning"
        self.item_id = item_id
        self.index = index    # output_index
        self.texts: list[str] = []
        self.annotations: list[dict[str, Any]] = []
        self.logprobs: list[dict[str, Any]] = []


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
        self.single_call = bool(getattr(options, "single_call", False))
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self._open: _OpenItem | None = None
        self._started = False
        self._done = False
        self._usage: Any = None
        self._reason: Any = None
        self._blocked = False
        self._calls = 0
        self._code: tuple[int, dict[str, Any]] | None = None  # a code run awaiting its result
        self._cited: set[tuple[str, int, int]] = set()
        self._searches: tuple[list[str], list[str]] = ([], [])

    def _event(self, kind: str, payload: dict[str, Any]) -> Event:
        payload["type"] = kind
        payload["sequence_number"] = self._seq
        self._seq += 1
        return kind, payload

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.response_id, self.created, self.model, self.options,
                               status=status, output=list(self.output), tier_meta=self._usage,
                               **extra)

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

    def _text(self, kind: str, text: str, out: list[Event],
              logprobs: list[dict[str, Any]] | None = None) -> None:
        item = self._open
        if item is None or item.kind != kind:
            item = self._open_item(kind, out)
        item.texts.append(text)
        if kind == "message":
            item.logprobs += logprobs or []
            out.append(self._event("response.output_text.delta", {
                "item_id": item.item_id, "output_index": item.index, "content_index": 0,
                "delta": text, "logprobs": logprobs or []}))
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
                                   {**ids, "content_index": 0, "text": text,
                                    "logprobs": item.logprobs}))
            out.append(self._event("response.content_part.done", {
                **ids, "content_index": 0,
                "part": output_text(text, item.annotations, item.logprobs)}))
            done = message_item(item.item_id, text, status, item.annotations, item.logprobs)
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
        call_id = encode_call_id(signature)
        started = call_item(fc, call_id, self.options, "in_progress")
        done = call_item(fc, call_id, self.options, item_id=started["id"])
        item_id = done["id"]
        out.append(self._event("response.output_item.added", {"output_index": index,
                                                               "item": started}))
        if done["type"] == "custom_tool_call":
            out.append(self._event("response.custom_tool_call_input.delta", {
                "item_id": item_id, "output_index": index, "delta": done["input"]}))
            out.append(self._event("response.custom_tool_call_input.done", {
                "item_id": item_id, "output_index": index, "input": done["input"]}))
        else:
            out.append(self._event("response.function_call_arguments.delta", {
                "item_id": item_id, "output_index": index, "delta": done["arguments"]}))
            out.append(self._event("response.function_call_arguments.done", {
                "item_id": item_id, "output_index": index, "name": fc["name"],
                "arguments": done["arguments"]}))
        self.output.append(done)
        out.append(self._event("response.output_item.done", {"output_index": index, "item": done}))

    def _whole(self, item: dict[str, Any], out: list[Event], *, pending: bool = False) -> int:
        """Add an item that arrives whole (an image, a code run); return its output_index."""
        self._close(out)
        index = len(self.output)
        started = dict(item, status="in_progress")
        if item["type"] == "image_generation_call":
            started["result"] = None
        out.append(self._event("response.output_item.added", {"output_index": index,
                                                               "item": started}))
        self.output.append(item)
        if not pending:
            out.append(self._event("response.output_item.done", {"output_index": index,
                                                                  "item": item}))
        return index

    def _code_result(self, result: dict[str, Any] | None, out: list[Event]) -> None:
        """Finish the pending code run with its result (or without one)."""
        if self._code is None:
            if result is not None:
                self._whole(code_item(None, result), out)
            return
        index, item = self._code
        self._code = None
        done = code_item({"code": item["code"]}, result, item["id"])
        if result is None:
            done["status"] = "completed"
        self.output[index] = done
        out.append(self._event("response.output_item.done", {"output_index": index, "item": done}))

    def _cite(self, cand: dict[str, Any], out: list[Event]) -> None:
        """Announce the citations a chunk's grounding metadata adds to the message text."""
        if "groundingMetadata" not in cand and "citationMetadata" not in cand:
            return
        queries, urls = search_queries(cand)
        if queries or urls:
            self._searches = (queries, urls)
        item = self._open if self._open is not None and self._open.kind == "message" else None
        if item is None:
            return
        for c in citations(cand, "".join(item.texts)):
            key = (c["url"], c["start_index"], c["end_index"])
            if key in self._cited:
                continue
            self._cited.add(key)
            annotation = responses_annotation(c)
            out.append(self._event("response.output_text.annotation.added", {
                "item_id": item.item_id, "output_index": item.index, "content_index": 0,
                "annotation_index": len(item.annotations), "annotation": annotation}))
            item.annotations.append(annotation)

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
            logprobs = None
            if getattr(self.options, "logprobs", False):
                logprobs = token_logprobs(cand, getattr(self.options, "top_logprobs", 0))
            for part in candidate_parts(cand):
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("codeExecutionResult"), dict):
                    self._code_result(part["codeExecutionResult"], out)
                    continue
                if self._code is not None:
                    self._code_result(None, out)
                fc = part.get("functionCall")
                if isinstance(fc, dict):
                    if isinstance(fc.get("name"), str) and not (self.single_call and self._calls):
                        self._calls += 1
                        self._call(part, fc, out)
                    continue
                if isinstance(part.get("executableCode"), dict):
                    item = code_item(part["executableCode"], None)
                    self._code = (self._whole(item, out, pending=True), item)
                    continue
                image = image_of(part)
                if image is not None:
                    self._whole(image_item(*image), out)
                    continue
                text = part.get("text")
                if not isinstance(text, str) or not text:
                    continue
                if part.get("thought") is True:
                    if self.include_reasoning:
                        self._text("reasoning", text, out)
                else:
                    self._text("message", text, out, logprobs)
                    logprobs = None  # one chunk's logprobs go with its first text
            self._cite(cand, out)
        return out

    def finish(self) -> list[Event]:
        """Close the open item and return response.completed (or response.incomplete)."""
        out = self.start()
        if self._done:
            return out
        self._done = True
        blocked = self._blocked and self._reason is None
        status, incomplete = outcome(self._reason, blocked)
        self._code_result(None, out)
        self._close(out, "completed" if status == "completed" else "incomplete")
        if self._searches[0] or self._searches[1]:
            self._whole(web_search_item(*self._searches), out)
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
