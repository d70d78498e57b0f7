"""Assemble Gemini `contents` from a conversation: role merging, tool results, system text."""
from __future__ import annotations

from typing import Any

from .errors import TranslationError
from .signatures import add_signature_bypass
from .tools import function_response_part


class History:
    """Collects turns in order and hands back Gemini `contents` + `systemInstruction`.

    Gemini wants strictly alternating user/model turns, so consecutive turns of
    one role merge. A run of tool results becomes one user turn, ordered as the
    calls were made, as Gemini pairs results with calls by position.
    """

    def __init__(self) -> None:
        self.system: list[str] = []
        self.turns: list[dict[str, Any]] = []
        # call id → (function name, order key of the call)
        self.calls: dict[str, tuple[str, tuple[int, int]]] = {}
        self._results: list[tuple[tuple[int, int], int, dict[str, Any]]] = []
        self._result_media: list[dict[str, Any]] = []
        self._model_turns = 0

    def add_system(self, text: str) -> None:
        """Add system/developer text (all of it ends up in systemInstruction)."""
        if text:
            self.system.append(text)

    def add(self, role: str, parts: list[dict[str, Any]]) -> None:
        """Append a turn's parts, merging with the previous turn of the same role."""
        self._flush_results()
        self._append(role, parts)

    def _append(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1]["parts"].extend(parts)
        else:
            self.turns.append({"role": role, "parts": parts})

    def add_model_turn(self, parts: list[dict[str, Any]],
                       call_ids: list[tuple[str | None, str]]) -> None:
        """Append an assistant turn and remember its calls (id, name) in call order."""
        self._model_turns += 1
        for position, (call_id, name) in enumerate(call_ids):
            if call_id:
                self.calls[call_id] = (name, (self._model_turns, position))
        self.add("model", parts)

    def call_name(self, call_id: str, path: str) -> tuple[str, tuple[int, int]]:
        """Return (name, order) of an earlier call, or raise naming path."""
        found = self.calls.get(call_id)
        if found is None:
            raise TranslationError(
                f"{path}: {call_id[:120]!r} does not match any earlier assistant tool call",
                param=path.split("[")[0].split(".")[0])
        return found

    def add_result(self, order: tuple[int, int], name: str, output: str,
                   media: list[dict[str, Any]] | None = None) -> None:
        """Queue a tool result; results in a row form one user turn in call order."""
        self._results.append((order, len(self._results), function_response_part(name, output)))
        if media:
            self._result_media.extend(media)

    def _flush_results(self) -> None:
        if not self._results:
            return
        self._results.sort(key=lambda r: (r[0], r[1]))
        parts = [r[2] for r in self._results]
        # Images a tool returned ride along after the responses (any model accepts that).
        parts.extend(self._result_media)
        self._results = []
        self._result_media = []
        self._append("user", parts)

    def finish(self, model: str, path: str = "messages") -> tuple[list[dict[str, Any]],
                                                                  dict[str, Any] | None]:
        """Return (contents, systemInstruction or None)."""
        self._flush_results()
        system = {"parts": [{"text": "\n\n".join(self.system)}]} if self.system else None
        if not self.turns:
            if system is None:
                raise TranslationError(f"{path}: nothing to send (every message is empty)",
                                       param=path.split(".")[0])
            # Gemini needs at least one turn; a system-only prompt becomes the user turn.
            return [{"role": "user", "parts": system["parts"]}], None
        add_signature_bypass(self.turns, model)
        return self.turns, system
