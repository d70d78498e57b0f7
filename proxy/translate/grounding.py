"""Gemini's grounding (Google Search) and citation metadata → OpenAI url_citation annotations."""
from __future__ import annotations

from typing import Any

from .fields import is_int


def _span(text: str, seg: dict[str, Any]) -> tuple[int, int] | None:
    """Return the (start, end) character span of a grounding segment in `text`.

    Gemini counts UTF-8 bytes; OpenAI counts characters. The segment's own text, when sent,
    is looked for near where the offsets point, which also survives texts the offsets were
    not counted over (a stream's accumulated text, code markers in between).
    """
    start_b = seg.get("startIndex", 0)
    end_b = seg.get("endIndex")
    start_b = int(start_b) if is_int(start_b) and start_b > 0 else 0
    raw = text.encode("utf-8")
    start = len(raw[:start_b].decode("utf-8", "ignore"))
    quoted = seg.get("text")
    if isinstance(quoted, str) and quoted:
        found = text.find(quoted, max(0, start - len(quoted)))
        if found == -1:
            found = text.find(quoted)
        if found != -1:
            return found, found + len(quoted)
    if not is_int(end_b) or end_b < start_b:
        return None
    end = len(raw[:int(end_b)].decode("utf-8", "ignore"))
    return (start, end) if end <= len(text) else None


def citations(cand: Any, text: str) -> list[dict[str, Any]]:
    """Return {url, title, start_index, end_index} for each source a candidate cites in `text`."""
    if not isinstance(cand, dict):
        return []
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int, int]] = set()

    def add(url: Any, title: Any, span: tuple[int, int] | None) -> None:
        if not isinstance(url, str) or not url or span is None or (url, *span) in seen:
            return
        seen.add((url, *span))
        out.append({"url": url, "title": title if isinstance(title, str) and title else url,
                    "start_index": span[0], "end_index": span[1]})

    meta = cand.get("groundingMetadata")
    if isinstance(meta, dict):
        chunks = meta.get("groundingChunks")
        chunks = chunks if isinstance(chunks, list) else []
        supports = meta.get("groundingSupports")
        for support in supports if isinstance(supports, list) else []:
            if not isinstance(support, dict) or not isinstance(support.get("segment"), dict):
                continue
            span = _span(text, support["segment"])
            for index in support.get("groundingChunkIndices") or []:
                chunk = chunks[index] if is_int(index) and 0 <= index < len(chunks) else None
                web = chunk.get("web") if isinstance(chunk, dict) else None
                if isinstance(web, dict):
                    add(web.get("uri"), web.get("title"), span)
    recited = cand.get("citationMetadata")
    sources = recited.get("citationSources") if isinstance(recited, dict) else None
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict):
            add(source.get("uri"), source.get("title") or source.get("license"), _span(text, source))
    return out


def search_queries(cand: Any) -> tuple[list[str], list[str]]:
    """Return (the queries Google searched for, the URLs it found) for a grounded candidate."""
    meta = cand.get("groundingMetadata") if isinstance(cand, dict) else None
    if not isinstance(meta, dict):
        return [], []
    queries = [q for q in meta.get("webSearchQueries") or [] if isinstance(q, str)]
    urls = []
    for chunk in meta.get("groundingChunks") or []:
        web = chunk.get("web") if isinstance(chunk, dict) else None
        if isinstance(web, dict) and isinstance(web.get("uri"), str) and web["uri"] not in urls:
            urls.append(web["uri"])
    return queries, urls


def chat_annotation(citation: dict[str, Any]) -> dict[str, Any]:
    """Return a Chat Completions annotation for a citation."""
    return {"type": "url_citation", "url_citation": dict(citation)}


def responses_annotation(citation: dict[str, Any]) -> dict[str, Any]:
    """Return a Responses output_text annotation for a citation."""
    return {"type": "url_citation", **citation}
