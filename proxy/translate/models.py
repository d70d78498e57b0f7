"""Resolve model names and translate Gemini model listings into OpenAI's."""
from __future__ import annotations

import re
from typing import Any

from .errors import TranslationError

# A model id becomes a URL path segment upstream: letters, digits, . _ - only.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _strip_prefix(name: str) -> str:
    return name[7:] if name.startswith("models/") else name


def normalise_model(name: Any, aliases: dict[str, str] | None = None) -> str:
    """Return the Gemini model id (no `models/` prefix) for a client's model name.

    Aliases map client names (`gpt-4o`) to Gemini ids; `default` answers a
    missing model. Unknown names pass through for Gemini to judge.
    """
    aliases = aliases or {}
    if name is None or name == "":
        name = aliases.get("default")
        if not name:
            raise TranslationError("model: required", param="model")
    if not isinstance(name, str):
        raise TranslationError("model: must be a string", param="model")
    name = name.strip()
    target = aliases.get(name)
    if target is None:
        name = _strip_prefix(name)
        target = aliases.get(name, name)
    if not isinstance(target, str):
        raise TranslationError("model: must be a string", param="model")
    target = _strip_prefix(target)
    if not _MODEL_ID.fullmatch(target):
        raise TranslationError(f"model: {target[:100]!r} is not a valid model name",
                               param="model", code="model_not_found")
    return target


def gemini_model_to_openai(model: dict[str, Any]) -> dict[str, Any]:
    """Translate one Gemini Model resource into an OpenAI model object."""
    name = model.get("name") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name:
        raise TranslationError("upstream model has no name", status=502)
    return {"id": _strip_prefix(name), "object": "model", "created": 0, "owned_by": "google"}


def gemini_models_to_openai(models: list[dict[str, Any]], *,
                            aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Translate a Gemini model list into OpenAI's `/v1/models` answer, aliases included."""
    data = []
    seen: set[str] = set()
    for model in models if isinstance(models, list) else []:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            continue
        entry = gemini_model_to_openai(model)
        if entry["id"] not in seen:
            seen.add(entry["id"])
            data.append(entry)
    for alias in aliases or {}:
        if isinstance(alias, str) and alias not in seen:
            seen.add(alias)
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "google"})
    return {"object": "list", "data": data}
