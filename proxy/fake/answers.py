"""Deterministic answers of the fake Gemini API: echoes, calls, JSON samples, embeddings."""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.fake import catalog
from proxy.fake.protojson import decode_bytes

ECHO_LIMIT = 500  # longer user text is cut, so big prompts do not make big answers
COMPACT = (",", ":")


def new_id(nbytes: int = 12) -> str:
    """Return a random URL-safe id like Google's responseId."""
    return base64.urlsafe_b64encode(os.urandom(nbytes)).decode().rstrip("=")


def count_tokens(text: str) -> int:
    """Estimate tokens as Google roughly does for English: one per four characters."""
    return (len(text) + 3) // 4


def part_tokens(part: dict[str, Any]) -> int:
    """Estimate the tokens one part costs (media parts cost a flat 258, like an image)."""
    if "text" in part:
        return count_tokens(part["text"])
    if "inlineData" in part or "fileData" in part:
        return 258
    return count_tokens(json.dumps(part, separators=COMPACT))


def contents_tokens(contents: list[dict[str, Any]]) -> int:
    """Estimate the tokens of a list of Content objects."""
    return sum(part_tokens(p) for c in contents for p in c.get("parts", []))


def prompt_tokens(req: dict[str, Any]) -> int:
    """Estimate the prompt tokens of a request: system instruction, contents and tools."""
    total = contents_tokens(req.get("contents", []))
    if "systemInstruction" in req:
        total += contents_tokens([req["systemInstruction"]])
    if req.get("tools"):
        total += count_tokens(json.dumps(req["tools"], separators=COMPACT))
    return total


def describe_part(part: dict[str, Any]) -> str:
    """Render a part as text for the echo: text itself, media as `[mime N bytes]`."""
    if "text" in part:
        return part["text"]
    if "inlineData" in part:
        blob = part["inlineData"]
        size = len(decode_bytes(blob.get("data", "")) or b"")
        return f"[{blob.get('mimeType', 'application/octet-stream')} {size} bytes]"
    if "fileData" in part:
        ref = part["fileData"]
        return f"[{ref.get('mimeType') or 'file'} {ref.get('fileUri', '')}]"
    if "functionCall" in part:
        return f"[functionCall {part['functionCall'].get('name', '')}]"
    if "executableCode" in part:
        return "[executableCode]"
    if "codeExecutionResult" in part:
        return "[codeExecutionResult]"
    return "[part]"


def user_text(content: dict[str, Any] | None) -> str:
    """Join the non-thought parts of a user content into one line (cut at ECHO_LIMIT)."""
    if not content:
        return ""
    text = " ".join(describe_part(p) for p in content.get("parts", [])
                    if not p.get("thought") and "functionResponse" not in p)
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"


# --- sample values from schemas -----------------------------------------------------------

_FORMATS = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "time": "00:00:00",
            "email": "user@example.com", "uri": "https://example.com", "url": "https://example.com",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1",
            "hostname": "example.com", "enum": "example"}


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if ref == "#":
        return root
    node: Any = root
    for piece in ref.lstrip("#/").split("/"):
        if not isinstance(node, dict) or piece not in node:
            return {}
        node = node[piece]
    return node


def sample(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """Build a small value valid against an OpenAPI-subset Schema or a JSON Schema.

    Objects get every declared property, strings "example", numbers 1 (clamped to any
    bounds), enums their first value, arrays one item (or `minItems`).
    """
    if not isinstance(schema, dict):
        return "example" if schema is not False else None
    root = schema if root is None else root
    if depth > 12:
        return None
    if "$ref" in schema:
        return sample(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            picked = next((o for o in options if not _is_null(o)), options[0])
            return sample(picked, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            sub = _resolve(sub["$ref"], root) if isinstance(sub, dict) and "$ref" in sub else sub
            if isinstance(sub, dict):
                for k, v in sub.items():
                    if k == "properties":
                        merged.setdefault("properties", {}).update(v)
                    elif k == "required":
                        merged.setdefault("required", []).extend(v)
                    else:
                        merged[k] = v
        return sample(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind else ("object" if "properties" in schema else
                                           "array" if "items" in schema else "string")
    if kind == "object":
        props = schema.get("properties") or {}
        order = [k for k in schema.get("propertyOrdering", []) if k in props]
        order += [k for k in props if k not in order]
        return {k: sample(props[k], root, depth + 1) for k in order}
    if kind == "array":
        count = max(1, _int(schema.get("minItems"), 1))
        if "maxItems" in schema:
            count = min(count, _int(schema["maxItems"], count))
        prefix = schema.get("prefixItems") or []
        items = [sample(p, root, depth + 1) for p in prefix[:count]]
        while len(items) < count:
            items.append(sample(schema.get("items", {"type": "string"}), root, depth + 1))
        return items
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "example") if isinstance(fmt, str) else "example"
    min_len = _int(schema.get("minLength"), 0)
    if len(text) < min_len:
        text += "x" * (min_len - len(text))
    if "maxLength" in schema:
        text = text[: _int(schema["maxLength"], len(text))]
    return text


def _int(value: Any, default: int) -> int:
    """Read a schema bound leniently (JSON Schema from clients can be sloppy)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and str(schema.get("type", "")).lower() == "null"


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    value: float = 1
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(low, (int, float)) and not isinstance(low, bool) and value < low:
        value = math.ceil(low) + (1 if "exclusiveMinimum" in schema else 0) if integer else low + (
            0.5 if "exclusiveMinimum" in schema else 0)
    if isinstance(high, (int, float)) and not isinstance(high, bool) and value > high:
        value = math.floor(high) - (1 if "exclusiveMaximum" in schema else 0) if integer else high - (
            0.5 if "exclusiveMaximum" in schema else 0)
    return int(value) if integer or float(value).is_integer() else value


# --- generateContent answers ---------------------------------------------------------------

@dataclass
class Answer:
    """What the fake model says to one generateContent request."""

    model: str
    prompt_tokens: int
    text: str | None = None
    thought: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish: str = "STOP"
    blocked: bool = False
    cached_tokens: int = 0
    tool_use_tokens: int = 0  # what Google's own tools (search, code execution) read
    candidate_count: int = 1
    response_id: str = field(default_factory=lambda: new_id(17))
    before: list[dict[str, Any]] = field(default_factory=list)  # code runs, ahead of the text
    media: list[dict[str, Any]] = field(default_factory=list)   # images or audio, after it
    grounded: bool = False          # Google Search grounded the text: groundingMetadata
    query: str = ""                 # what the search searched for
    logprobs: int | None = None     # responseLogprobs: alternatives per token (None: off)
    service_tier: str | None = None  # the tier asked for, reported in usageMetadata

    @property
    def thought_tokens(self) -> int:
        return count_tokens(self.thought) if self.thought else 0

    @property
    def candidate_tokens(self) -> int:
        total = count_tokens(self.text) if self.text else 0
        return total + sum(part_tokens(c) for c in [*self.before, *self.media, *self.calls])

    def usage(self, candidates: int | None = None, thoughts: int | None = None) -> dict[str, Any]:
        """Return usageMetadata; stream chunks pass their cumulative counts."""
        cand = self.candidate_tokens if candidates is None else candidates
        thought = self.thought_tokens if thoughts is None else thoughts
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if not self.blocked:
            usage["candidatesTokenCount"] = cand
        usage["totalTokenCount"] = self.prompt_tokens + self.tool_use_tokens + cand + thought
        if self.tool_use_tokens:
            usage["toolUsePromptTokenCount"] = self.tool_use_tokens
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]
        if thought:
            usage["thoughtsTokenCount"] = thought
        if self.service_tier:
            usage["serviceTier"] = self.service_tier.lower()
        return usage

    def _grounding(self) -> dict[str, Any]:
        """Return groundingMetadata citing two pages for the answer's first sentence-ish span."""
        text = self.text or ""
        cut = min(len(text), max(1, len(text) // 2))
        span = text[:cut]
        end = len(span.encode("utf-8"))
        chunks = [{"web": {"uri": f"https://vertexaisearch.cloud.google.com/grounding-api-redirect/{n}",
                           "title": title}}
                  for n, title in (("AbC1", "example.com"), ("DeF2", "example.org"))]
        return {"webSearchQueries": [self.query or "search"],
                "searchEntryPoint": {"renderedContent": "<div>Google Search</div>"},
                "groundingChunks": chunks,
                "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": end, "text": span},
                                       "groundingChunkIndices": [0, 1],
                                       "confidenceScores": [0.9, 0.8]}]}

    def _logprobs(self, parts: list[dict[str, Any]] | None) -> dict[str, Any]:
        """Return logprobsResult for the text of these parts: one token per word."""
        tokens = [t for p in parts or [] if "text" in p and not p.get("thought")
                  for t in re.findall(r"\S*\s*", p["text"]) if t]
        top = self.logprobs or 0
        chosen = [{"token": t, "tokenId": 1000 + i, "logProbability": -0.1 * (i % 5)}
                  for i, t in enumerate(tokens)]
        alternatives = [{"candidates": [c, *({"token": f"alt{k}", "tokenId": k,
                                              "logProbability": -1.0 - k} for k in range(top - 1))][:top]}
                        for c in chosen]
        result: dict[str, Any] = {"chosenCandidates": chosen,
                                  "logProbabilitySum": sum(c["logProbability"] for c in chosen)}
        if top:
            result["topCandidates"] = alternatives
        return result

    def _envelope(self, parts: list[dict[str, Any]] | None, last: bool,
                  usage: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.blocked:
            body["promptFeedback"] = {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]}
        else:
            candidates = []
            for index in range(self.candidate_count):
                cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
                if last:
                    cand["finishReason"] = self.finish
                    if self.grounded and self.text:
                        cand["groundingMetadata"] = self._grounding()
                if self.logprobs is not None:
                    cand["logprobsResult"] = self._logprobs(parts)
                cand["index"] = index
                candidates.append(cand)
            body["candidates"] = candidates
        body["usageMetadata"] = usage
        body["modelVersion"] = self.model
        body["responseId"] = self.response_id
        return body

    def body(self) -> dict[str, Any]:
        """Return the whole unary GenerateContentResponse."""
        parts: list[dict[str, Any]] = []
        if self.thought:
            parts.append({"text": self.thought, "thought": True})
        parts.extend(self.before)
        if self.text is not None:
            parts.append({"text": self.text})
        parts.extend(self.media)
        parts.extend(self.calls)
        return self._envelope(parts, True, self.usage())

    def chunks(self, count: int) -> list[dict[str, Any]]:
        """Split the answer into stream chunks: new text only, cumulative usage.

        Thoughts take the first chunk, text is cut into the remaining ones (never an
        empty piece, so short text yields fewer chunks), a function call arrives whole.
        """
        if self.blocked:
            return [self._envelope(None, True, self.usage())]
        pieces: list[tuple[list[dict[str, Any]], int, int]] = []
        thoughts = self.thought_tokens
        if self.thought:
            pieces.append(([{"text": self.thought, "thought": True}], 0, thoughts))
        if self.before:
            pieces.append((list(self.before), 0, thoughts))
        if self.text is not None:
            slots = max(1, count - len(pieces) - (1 if self.calls else 0))
            slots = min(slots, max(1, len(self.text)))
            size = len(self.text)
            bounds = [size * i // slots for i in range(slots + 1)]
            for start, end in zip(bounds, bounds[1:]):
                pieces.append(([{"text": self.text[start:end]}],
                               count_tokens(self.text[:end]), thoughts))
        if self.media:
            pieces.append((list(self.media), self.candidate_tokens, thoughts))
        if self.calls:
            pieces.append((list(self.calls), self.candidate_tokens, thoughts))
        if not pieces:
            pieces.append(([{"text": ""}], 0, thoughts))
        last = len(pieces) - 1
        return [self._envelope(parts, i == last, self.usage(cand, th))
                for i, (parts, cand, th) in enumerate(pieces)]


def _is_blocked(contents: list[dict[str, Any]]) -> bool:
    return any("BLOCKME" in p.get("text", "") for c in contents
               if c.get("role", "user") in ("", "user") for p in c.get("parts", []))


def _last_user(contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    for content in reversed(contents):
        if content.get("role", "user") in ("", "user"):
            return content
    return None


def _params_schema(decl: dict[str, Any]) -> Any:
    if "parameters" in decl:
        return decl["parameters"]
    return decl.get("parametersJsonSchema", {"type": "object", "properties": {}})


TOOL_USE_TOKENS = 40  # tokens Google's own tools add to the prompt (search results, code output)
_SERVER_TOOLS = ("googleSearch", "google_search", "googleSearchRetrieval", "codeExecution",
                 "code_execution", "urlContext", "url_context")


def _server_tools(tools: list[dict[str, Any]]) -> bool:
    """Whether the request uses a tool Google runs itself (it reports toolUsePromptTokenCount)."""
    return any(name in tool for tool in tools if isinstance(tool, dict) for name in _SERVER_TOOLS)


def generate(req: dict[str, Any], model_id: str, *, cached: dict[str, Any] | None = None) -> Answer:
    """Answer a parsed, checked GenerateContentRequest deterministically.

    `cached` is the CachedContent the request names: its contents, system instruction
    and tools count as prompt and its tools can be called.
    """
    contents = req.get("contents", [])
    tools = req.get("tools", [])
    tool_config = req.get("toolConfig", {})
    prompt = prompt_tokens(req)
    cached_tokens = 0
    if cached:
        cached_tokens = prompt_tokens(cached)
        prompt += cached_tokens
        tools = cached.get("tools", [])
        tool_config = cached.get("toolConfig", {})
    cfg = req.get("generationConfig", {})
    answer = Answer(model=model_id, prompt_tokens=prompt, cached_tokens=cached_tokens,
                    tool_use_tokens=TOOL_USE_TOKENS if _server_tools(tools) else 0,
                    candidate_count=cfg.get("candidateCount", 1) or 1,
                    logprobs=cfg.get("logprobs", 0) if cfg.get("responseLogprobs") else None,
                    service_tier=req.get("serviceTier"))
    if _is_blocked(contents):
        answer.blocked = True
        return answer
    said = user_text(_last_user(contents))
    if catalog.speaks(model_id):  # a speech model answers with audio only
        answer.media.append(speech(said))
        return answer
    if any("googleSearch" in t or "google_search" in t for t in tools):
        answer.grounded, answer.query = True, said[:100]
        if tool_config.get("includeServerSideToolInvocations"):  # Gemini 3 shows its search
            answer.before += [
                {"toolCall": {"id": "srv1", "toolType": "GOOGLE_SEARCH_WEB",
                              "args": {"queries": [answer.query]}}},
                {"toolResponse": {"id": "srv1", "toolType": "GOOGLE_SEARCH_WEB",
                                  "response": {"results": 2}}}]
    if any("codeExecution" in t or "code_execution" in t for t in tools):
        answer.before += [{"executableCode": {"language": "PYTHON", "code": "print(6 * 7)"}},
                          {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}}]
    if catalog.draws(model_id) and cfg.get("responseModalities", ["TEXT", "IMAGE"]) != ["TEXT"]:
        answer.media.append({"inlineData": {"mimeType": "image/png", "data": PIXEL_PNG}})
    last = contents[-1] if contents else {}
    last_is_user = last.get("role", "user") in ("", "user")
    results = [p["functionResponse"] for p in last.get("parts", []) if "functionResponse" in p]
    if cfg.get("thinkingConfig", {}).get("includeThoughts"):
        answer.thought = f"**Considering the request**\n\nThe user wrote: {said[:200]}"
    decls = [d for tool in tools for d in tool.get("functionDeclarations", [])]
    calling = tool_config.get("functionCallingConfig", {})
    has_text = any("text" in p for p in last.get("parts", []))
    if last_is_user and results:
        payload = [r.get("response", {}) for r in results]
        answer.text = "Result: " + json.dumps(payload[0] if len(payload) == 1 else payload,
                                              separators=COMPACT, ensure_ascii=False)
    elif decls and calling.get("mode", "AUTO") != "NONE" and last_is_user and has_text:
        by_name = {d.get("name"): d for d in decls}
        names = [n for n in calling.get("allowedFunctionNames", []) if n in by_name] or list(by_name)
        chosen = names[:2] if "PARALLEL" in said and len(names) >= 2 else names[:1]
        for i, name in enumerate(chosen):
            call: dict[str, Any] = {"functionCall": {"name": name,
                                                     "args": sample(_params_schema(by_name[name]))}}
            if i == 0 and catalog.needs_thought_signatures(model_id):
                call["thoughtSignature"] = base64.b64encode(os.urandom(48)).decode()
            answer.calls.append(call)
        return answer
    else:
        mime = cfg.get("responseMimeType", "")
        schema = cfg.get("responseJsonSchema", cfg.get("responseSchema"))
        if mime == "application/json":
            value = sample(schema) if schema is not None else {"text": "Echo: " + said}
            answer.text = json.dumps(value, ensure_ascii=False)
        elif mime == "text/x.enum" and isinstance(schema, dict) and schema.get("enum"):
            answer.text = str(schema["enum"][0])
        else:
            answer.text = "Echo: " + said
    limit = cfg.get("maxOutputTokens")
    if limit and answer.text and count_tokens(answer.text) > limit:
        answer.text = answer.text[: limit * 4]
        answer.finish = "MAX_TOKENS"
    return answer


PIXEL_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
             "rkJggg==")  # a 1×1 PNG: what the fake image model draws
SPEECH_RATE = 24000


def speech(text: str) -> dict[str, Any]:
    """Return what a speech model says: 16-bit mono PCM, one sample per character (for tests)."""
    samples = b"".join(((ord(c) * 37) % 65536).to_bytes(2, "little") for c in text[:2000] or " ")
    return {"inlineData": {"mimeType": f"audio/L16;codec=pcm;rate={SPEECH_RATE}",
                           "data": base64.b64encode(samples).decode()}}


# --- embeddings ---------------------------------------------------------------------------

def embedding(text: str, dims: int) -> list[float]:
    """Return a unit-length vector that depends only on `text` (and `dims`)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.random() - 0.5 for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 8) for v in values]


def content_text(content: dict[str, Any]) -> str:
    """Join the text parts of a Content (what an embedding is computed from)."""
    return " ".join(p.get("text", "") for p in content.get("parts", []) if "text" in p)
