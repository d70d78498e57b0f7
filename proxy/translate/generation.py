"""Build Gemini `generationConfig` pieces: thinking, structured output, stop, Google extras."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .fields import expect_dict, expect_list, fail, is_int
from .schema import schema_for_gemini
from .signatures import requires_signatures

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
_NO_THINKING = re.compile(r"gemini-(1\.|2\.0)|gemma|learnlm|aqa|imagen|veo|embedding|text-")
MAX_STOP_SEQUENCES = 5


def thinks(model: str) -> bool:
    """Tell whether a model accepts `thinkingConfig` (2.0 and older, Gemma… do not)."""
    return not _NO_THINKING.match(model)


def _budget(model: str, effort: str) -> int:
    """Map an effort to a 2.5-style thinking budget (Google's own 1K/8K/24K table)."""
    pro = "pro" in model
    lite = "lite" in model
    if effort == "none":
        return 128 if pro else 0  # 2.5 Pro cannot switch thinking off; 128 is its floor
    if effort == "minimal":
        return 512 if lite else 128
    if effort in ("xhigh", "max"):
        return 32768 if pro else 24576
    return {"low": 1024, "medium": 8192, "high": 24576}[effort]


def _level(model: str, effort: str) -> str:
    """Map an effort to a Gemini 3 thinking level (3 Pro has only LOW and HIGH)."""
    flash = "flash" in model
    if effort in ("none", "minimal"):
        return "MINIMAL" if flash else "LOW"
    if effort == "low":
        return "LOW"
    if effort == "medium":
        return "MEDIUM" if flash or model.startswith("gemini-3.1") else "HIGH"
    return "HIGH"


def thinking_for_effort(model: str, effort: str | None, include_thoughts: bool) -> dict[str, Any] | None:
    """Return `thinkingConfig` for an OpenAI reasoning effort (budget or level, never both)."""
    if not thinks(model):
        return None
    cfg: dict[str, Any] = {}
    if effort is not None:
        if requires_signatures(model):
            cfg["thinkingLevel"] = _level(model, effort)
        else:
            cfg["thinkingBudget"] = _budget(model, effort)
    if include_thoughts and cfg.get("thinkingBudget") != 0:
        cfg["includeThoughts"] = True
    return cfg or None


def parse_effort(value: Any, path: str) -> str | None:
    """Validate an OpenAI `reasoning_effort` value."""
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in EFFORTS:
        raise fail(path, f"must be one of {', '.join(EFFORTS)}")
    return value.lower()


@dataclass(slots=True)
class GoogleExtras:
    """Gemini-only options a client sent under `extra_body.google` or `google`."""

    thinking: dict[str, Any] | None = None
    safety_settings: list[dict[str, Any]] | None = None
    cached_content: str | None = None


_GOOGLE_KEYS = frozenset({"thinking_config", "thinkingConfig", "safety_settings", "safetySettings",
                          "cached_content", "cachedContent"})


def google_options(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Return (the Google options object, its path): `extra_body.google` or top-level `google`."""
    extra_body = body.get("extra_body")
    if extra_body is not None:
        for key in expect_dict(extra_body, "extra_body"):
            if key != "google":
                raise fail(f"extra_body.{key}", "unknown option; extra_body holds `google`")
        if extra_body.get("google") is not None:
            return expect_dict(extra_body["google"], "extra_body.google"), "extra_body.google"
    if body.get("google") is not None:
        return expect_dict(body["google"], "google"), "google"
    return None, ""


def pick(d: dict[str, Any], snake: str, camel: str) -> Any:
    """Return d[snake], else d[camel] (Google options come in either spelling)."""
    return d[snake] if snake in d else d.get(camel)


def google_extras(body: dict[str, Any]) -> GoogleExtras:
    """Read `extra_body.google` (Google's compat layer) or top-level `google` extras."""
    extras = GoogleExtras()
    google, path = google_options(body)
    if google is None:
        return extras
    for key in google:
        if key not in _GOOGLE_KEYS:
            raise fail(f"{path}.{key}", "unknown option; the Google options are thinking_config, "
                                        "safety_settings and cached_content")

    thinking = pick(google, "thinking_config", "thinkingConfig")
    if thinking is not None:
        tpath = f"{path}.thinking_config"
        thinking = expect_dict(thinking, tpath)
        cfg: dict[str, Any] = {}
        budget = pick(thinking, "thinking_budget", "thinkingBudget")
        level = pick(thinking, "thinking_level", "thinkingLevel")
        include = pick(thinking, "include_thoughts", "includeThoughts")
        if budget is not None and level is not None:
            raise fail(tpath, "set thinking_budget or thinking_level, not both")
        if budget is not None:
            if not is_int(budget) or budget < -1:
                raise fail(f"{tpath}.thinking_budget", "must be an integer ≥ -1")
            cfg["thinkingBudget"] = int(budget)
        if level is not None:
            if not isinstance(level, str) or level.upper() not in _LEVELS:
                raise fail(f"{tpath}.thinking_level", f"must be one of {', '.join(_LEVELS).lower()}")
            cfg["thinkingLevel"] = level.upper()
        if include is not None:
            if not isinstance(include, bool):
                raise fail(f"{tpath}.include_thoughts", "must be a boolean")
            cfg["includeThoughts"] = include
        extras.thinking = cfg

    safety = pick(google, "safety_settings", "safetySettings")
    if safety is not None:
        spath = f"{path}.safety_settings"
        settings = []
        for i, item in enumerate(expect_list(safety, spath)):
            item = expect_dict(item, f"{spath}[{i}]")
            category, threshold = item.get("category"), item.get("threshold")
            if not isinstance(category, str) or not category:
                raise fail(f"{spath}[{i}].category", "must be a harm category name")
            if not isinstance(threshold, str) or not threshold:
                raise fail(f"{spath}[{i}].threshold", "must be a threshold name")
            settings.append({"category": category, "threshold": threshold})
        extras.safety_settings = settings

    cached = pick(google, "cached_content", "cachedContent")
    if cached is not None:
        if not isinstance(cached, str) or not cached.strip():
            raise fail(f"{path}.cached_content", "must be a cachedContents/… name")
        cached = cached.strip()
        extras.cached_content = cached if cached.startswith("cachedContents/") else f"cachedContents/{cached}"
    return extras


def thinking_config(model: str, effort: str | None, extras: GoogleExtras, want_thoughts: bool,
                    *, effort_implies_thoughts: bool = True) -> tuple[dict[str, Any] | None, bool]:
    """Return (thinkingConfig, include_reasoning) from an effort and Google extras.

    Explicit Google `thinking_config` wins over the effort. Thoughts are asked
    for when the client wants reasoning back: explicitly (`want_thoughts`), or,
    for Chat, by naming any effort other than none (as litellm does).
    """
    if extras.thinking is not None:
        cfg = dict(extras.thinking)
        if want_thoughts and "includeThoughts" not in cfg:
            cfg["includeThoughts"] = True
        return (cfg or None), bool(cfg.get("includeThoughts"))
    include = want_thoughts or (effort_implies_thoughts and effort is not None and effort != "none")
    cfg = thinking_for_effort(model, effort, include)
    return cfg, bool(cfg and cfg.get("includeThoughts"))


def stop_sequences(value: Any, path: str = "stop") -> list[str] | None:
    """Normalise OpenAI `stop` (string or list) into Gemini `stopSequences`."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else None
    items = expect_list(value, path)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise fail(f"{path}[{i}]", "must be a string")
        if item:
            out.append(item)
    if len(out) > MAX_STOP_SEQUENCES:
        raise fail(path, f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
    return out or None


def structured_output(kind: Any, schema: Any, *, type_path: str,
                      schema_path: str) -> dict[str, Any]:
    """Return the generationConfig fragment for an OpenAI response format.

    `kind` is text / json_object / json_schema; `schema` the JSON Schema for
    json_schema (its `name` and `strict` never reach Gemini).
    """
    if kind is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        if schema is not None:
            as_json, converted = schema_for_gemini(schema, path=schema_path, response=True)
            out["responseJsonSchema" if as_json else "responseSchema"] = converted
        return out
    raise fail(type_path, "must be text, json_object or json_schema")


# OpenAI service_tier → Gemini serviceTier (the google-genai SDK's values, sent at the
# request's top level); "auto" lets Google choose, which is its standard tier.
SERVICE_TIERS = {"auto": None, "default": "standard", "flex": "flex", "priority": "priority"}
# Gemini's tier in usageMetadata.serviceTier → what an OpenAI answer calls it.
ANSWERED_TIERS = {"standard": "default", "flex": "flex", "priority": "priority"}


def service_tier(value: Any, strict: Any) -> str | None:
    """Return Gemini's serviceTier for an OpenAI `service_tier` (None: Google's default)."""
    if value is None:
        return None
    if value == "scale":
        strict.unsupported("service_tier", "Gemini has no scale tier (it has flex, standard "
                                           "and priority)")
        return None
    if not isinstance(value, str) or value not in SERVICE_TIERS:
        raise fail("service_tier", "must be auto, default, flex or priority")
    return SERVICE_TIERS[value]


def answered_tier(meta: Any, requested: str | None) -> str:
    """Return the tier an answer reports: Gemini's own word if it sent one, else the request's."""
    if isinstance(meta, dict):
        tier = meta.get("serviceTier")
        if isinstance(tier, str) and tier.lower() in ANSWERED_TIERS:
            return ANSWERED_TIERS[tier.lower()]
    return ANSWERED_TIERS.get(requested or "standard", "default")


# OpenAI image `detail` → Gemini mediaResolution ("original" asks for the most Gemini has).
MEDIA_RESOLUTIONS = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH",
                     "original": "MEDIA_RESOLUTION_HIGH"}
_RESOLUTION_RANK = {None: 1, "MEDIA_RESOLUTION_LOW": 0, "MEDIA_RESOLUTION_HIGH": 2}


def image_detail(spec: Any, path: str) -> str | None:
    """Return the mediaResolution an image's `detail` asks for (None: auto, Gemini's default)."""
    detail = spec.get("detail") if isinstance(spec, dict) else None
    if detail is None or detail == "auto":
        return None
    if not isinstance(detail, str) or detail not in MEDIA_RESOLUTIONS:
        raise fail(f"{path}.detail", "must be auto, low, high or original")
    return MEDIA_RESOLUTIONS[detail]


def media_resolution(details: list[str | None]) -> str | None:
    """Return the one mediaResolution for a request's images (Gemini sets it per request).

    The highest detail any image asks for wins, an image without one counting as Gemini's
    default: no image is seen at less detail than it asked for.
    """
    if not details:
        return None
    return max(details, key=lambda d: _RESOLUTION_RANK[d])
