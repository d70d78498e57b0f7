"""Gemini logprobsResult → OpenAI token logprobs (Chat `choices[].logprobs`, Responses output_text)."""
from __future__ import annotations

from typing import Any

from .fields import is_number


def _entry(candidate: dict[str, Any]) -> dict[str, Any] | None:
    token = candidate.get("token")
    if not isinstance(token, str):
        return None
    logprob = candidate.get("logProbability", 0.0)
    return {"token": token, "logprob": float(logprob) if is_number(logprob) else 0.0,
            "bytes": list(token.encode("utf-8"))}


def token_logprobs(cand: Any, top: int) -> list[dict[str, Any]] | None:
    """Return OpenAI's token logprob entries for a candidate's logprobsResult (None: none sent).

    Gemini's chosenCandidates[i] pairs with topCandidates[i]; `top` alternatives are kept.
    """
    result = cand.get("logprobsResult") if isinstance(cand, dict) else None
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    tops = result.get("topCandidates")
    tops = tops if isinstance(tops, list) else []
    out = []
    for i, picked in enumerate(chosen if isinstance(chosen, list) else []):
        entry = _entry(picked) if isinstance(picked, dict) else None
        if entry is None:
            continue
        alternatives = tops[i].get("candidates") if i < len(tops) and isinstance(tops[i], dict) else None
        entry["top_logprobs"] = [e for e in (_entry(a) for a in (alternatives or [])[:top]
                                             if isinstance(a, dict)) if e is not None]
        out.append(entry)
    return out


def logprobs_config(top: int | None, wanted: bool) -> dict[str, Any]:
    """Return the generationConfig fields asking Gemini for logprobs (`top` alternatives)."""
    if not wanted:
        return {}
    gen: dict[str, Any] = {"responseLogprobs": True}
    if top:
        gen["logprobs"] = top
    return gen


def split_by_text(entries: list[dict[str, Any]], texts: list[str]) -> list[list[dict[str, Any]]]:
    """Deal token entries out to consecutive texts by their lengths (the last takes the rest)."""
    out: list[list[dict[str, Any]]] = []
    i = 0
    for n, text in enumerate(texts):
        if n == len(texts) - 1:
            out.append(entries[i:])
            break
        taken, size = [], 0
        while i < len(entries) and size < len(text):
            size += len(entries[i]["token"])
            taken.append(entries[i])
            i += 1
        out.append(taken)
    return out
