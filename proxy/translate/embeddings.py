"""Translate OpenAI embeddings requests and answers to and from Gemini batchEmbedContents."""
from __future__ import annotations

import array
import base64
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import TranslationError
from .fields import fail, is_number, opt_int
from .generation import google_options, pick
from .models import normalise_model
from .params import EMBEDDINGS as EMBEDDINGS_PARAMS
from .params import Strictness, check_params
from .usage import token_counts

MAX_BATCH = 100  # batchEmbedContents refuses more requests than this in one call


@dataclass(slots=True)
class EmbedOptions:
    """What the answer translation needs to know about the request."""

    model: str
    encoding_format: str = "float"  # "float" lists or "base64" packed float32
    count: int = 0                  # number of inputs (= embeddings expected back)
    estimated_tokens: int = 0       # for usage: Gemini reports no token counts here
    dropped: list[str] = field(default_factory=list)  # what drop_params let go


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        if not value:
            raise fail("input", "must not be empty")
        return [value]
    if not isinstance(value, list) or not value:
        raise fail("input", "required: a string or a non-empty array of strings")
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise fail(f"input[{i}]", "must not be empty")
            texts.append(item)
        elif isinstance(item, (int, list)) and not isinstance(item, bool):
            raise fail("input", "only text input is supported; token id arrays cannot be "
                                "embedded by Gemini")
        else:
            raise fail(f"input[{i}]", "must be a string")
    return texts


# Gemini's embedding task types (EmbedContentRequest.taskType), passed as the extension
# `extra_body.google.task_type`: they tune the vector for its use.
TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
              "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")


def _task_type(body: dict[str, Any]) -> str | None:
    google, path = google_options(body)
    if google is None:
        return None
    for key in google:
        if key not in ("task_type", "taskType"):
            raise fail(f"{path}.{key}", "unknown option; embeddings take task_type")
    value = pick(google, "task_type", "taskType")
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in TASK_TYPES:
        raise fail(f"{path}.task_type", f"must be one of {', '.join(TASK_TYPES)}")
    return value.upper()


def embeddings_request_to_gemini(body: dict[str, Any], *, aliases: dict[str, str] | None = None,
                                 tolerant: bool = False,
                                 ) -> tuple[str, dict[str, Any], EmbedOptions]:
    """Translate an embeddings request into (model id, batchEmbedContents body, options).

    Gemini takes at most MAX_BATCH requests per call; `split_batches` cuts a
    larger body into several.
    """
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    strict = Strictness(body, tolerant)
    check_params(body, EMBEDDINGS_PARAMS, strict)
    model = normalise_model(body.get("model"), aliases)
    task = _task_type(body)
    texts = _inputs(body.get("input"))
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise fail("encoding_format", "must be float or base64")
    dims = opt_int(body, "dimensions", 1, 65536)
    name = f"models/{model}"
    requests = []
    for text in texts:
        req: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        if task is not None:
            req["taskType"] = task
        requests.append(req)
    chars = sum(len(t) for t in texts)
    options = EmbedOptions(model=model, encoding_format=fmt, count=len(texts),
                           estimated_tokens=max(len(texts), (chars + 3) // 4),
                           dropped=strict.dropped)
    return model, {"requests": requests}, options


def split_batches(body: dict[str, Any], size: int = MAX_BATCH) -> list[dict[str, Any]]:
    """Cut a batchEmbedContents body into bodies of at most `size` requests each."""
    reqs = body["requests"]
    return [{"requests": reqs[i:i + size]} for i in range(0, len(reqs), size)] or [body]


def _pack(values: list[float]) -> str:
    """Encode floats as base64 little-endian float32, as the openai SDK decodes them."""
    packed = array.array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def gemini_to_embeddings(resp: dict[str, Any], *, model: str,
                         options: EmbedOptions) -> dict[str, Any]:
    """Translate a batchEmbedContents (or embedContent) answer into OpenAI's list."""
    if not isinstance(resp, dict):
        raise TranslationError("upstream answer is not a JSON object", status=502)
    items = resp.get("embeddings")
    if items is None and isinstance(resp.get("embedding"), dict):
        items = [resp["embedding"]]
    if not isinstance(items, list):
        raise TranslationError("upstream answer has no embeddings", status=502)
    if options.count and len(items) != options.count:
        raise TranslationError(f"upstream returned {len(items)} embeddings for "
                               f"{options.count} inputs", status=502)
    data = []
    for i, item in enumerate(items):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise TranslationError(f"upstream embedding {i} has no values", status=502)
        vector: Any = values  # float lists pass through untouched
        if options.encoding_format == "base64":
            try:
                vector = _pack(values)
            except (TypeError, OverflowError):
                raise TranslationError(f"upstream embedding {i} is not numeric", status=502) from None
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = options.estimated_tokens
    meta = resp.get("usageMetadata")
    if isinstance(meta, dict) and is_number(meta.get("promptTokenCount")):
        tokens = token_counts(meta)[0]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
