"""Validate client JSON field by field, naming the field in every complaint."""
from __future__ import annotations

import math
from typing import Any

from .errors import TranslationError


def _param(path: str) -> str:
    """Return the top-level parameter a field path belongs to (`messages[2].content` → `messages`)."""
    cut = len(path)
    for sep in ".[":
        i = path.find(sep)
        if i != -1:
            cut = min(cut, i)
    return path[:cut]


def fail(path: str, problem: str, *, code: str | None = None) -> TranslationError:
    """Build the TranslationError for `path: problem`."""
    return TranslationError(f"{path}: {problem}", param=_param(path), code=code)


def is_number(value: Any) -> bool:
    """Tell whether value is a finite JSON number (bools are not numbers here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_int(value: Any) -> bool:
    """Tell whether value is a JSON integer (1.0 counts; bools do not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def expect_dict(value: Any, path: str) -> dict[str, Any]:
    """Return value if it is an object, else raise naming path."""
    if not isinstance(value, dict):
        raise fail(path, "must be an object")
    return value


def expect_list(value: Any, path: str) -> list[Any]:
    """Return value if it is an array, else raise naming path."""
    if not isinstance(value, list):
        raise fail(path, "must be an array")
    return value


def expect_str(value: Any, path: str, *, nonempty: bool = False) -> str:
    """Return value if it is a string (optionally non-empty), else raise naming path."""
    if not isinstance(value, str):
        raise fail(path, "must be a string")
    if nonempty and not value:
        raise fail(path, "must not be empty")
    return value






def opt_number(body: dict[str, Any], key: str, lo: float, hi: float,
               path: str | None = None) -> float | None:
    """Return body[key] if present and not null; it must be a number in [lo, hi]."""
    value = body.get(key)
    if value is None:
        return None
    path = path or key
    if not is_number(value):
        raise fail(path, "must be a number")
    if not lo <= value <= hi:
        raise fail(path, f"must be between {lo:g} and {hi:g}, got {value!r}")
    return value


def opt_int(body: dict[str, Any], key: str, lo: int, hi: int | None = None,
            path: str | None = None) -> int | None:
    """Return body[key] if present and not null; it must be an integer in [lo, hi]."""
    value = body.get(key)
    if value is None:
        return None
    path = path or key
    if not is_int(value):
        raise fail(path, "must be an integer")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise fail(path, f"must be {bound}, got {value}")
    return value
