"""Carry Gemini thought signatures through OpenAI clients that know nothing about them.

Gemini 3 rejects a history whose function calls lack the `thoughtSignature` it
attached to them. OpenAI clients only echo a tool call's `id`, so the signature
rides inside the id:

    call_<24 hex>                      no signature
    call_<24 hex>__ts_b<sig>           sig = the signature's base64 with +/ → -_ and no padding
    call_<24 hex>__ts_u<b64url(utf8)>  for a signature that is not canonical base64

Only `[A-Za-z0-9_-]` appears, so the id survives JSON, the openai SDK and
clients that validate id characters. The "b" form costs no size over the raw
signature. Google's own `extra_content.google.thought_signature` is emitted too
and, when a client sends it back, preferred.
"""
from __future__ import annotations

import base64
import random
import re
from typing import Any

SKIP_SIGNATURE = "skip_thought_signature_validator"
_SEP = "__ts_"
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TO_URL = str.maketrans("+/", "-_")
_FROM_URL = str.maketrans("-_", "+/")
_GEMINI_VERSION = re.compile(r"gemini-(\d+)")


def new_id(prefix: str) -> str:
    """Return prefix + 24 random hex digits (unique enough for ids, cheap to make)."""
    return f"{prefix}{random.getrandbits(96):024x}"


def encode_call_id(signature: str | None, base: str | None = None) -> str:
    """Return a tool call id that carries signature (a fresh `call_…` id unless base given)."""
    base = base or new_id("call_")
    if not signature:
        return base
    if len(signature) % 4 == 0 and _B64.fullmatch(signature):
        return f"{base}{_SEP}b{signature.rstrip('=').translate(_TO_URL)}"
    packed = base64.urlsafe_b64encode(signature.encode("utf-8")).decode("ascii").rstrip("=")
    return f"{base}{_SEP}u{packed}"


def decode_call_id(call_id: Any) -> str | None:
    """Return the signature carried by a tool call id, or None."""
    if not isinstance(call_id, str):
        return None
    cut = call_id.find(_SEP)
    if cut == -1:
        return None
    kind, payload = call_id[cut + len(_SEP):cut + len(_SEP) + 1], call_id[cut + len(_SEP) + 1:]
    if not payload or not _B64URL.fullmatch(payload):
        return None
    padded = payload + "=" * (-len(payload) % 4)
    if kind == "b":
        if len(payload) % 4 == 1:
            return None
        return padded.translate(_FROM_URL)
    if kind == "u":
        try:
            return base64.urlsafe_b64decode(padded).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def extra_content(signature: str) -> dict[str, Any]:
    """Return Google's `extra_content` for a tool call carrying signature."""
    return {"google": {"thought_signature": signature}}


def signature_of(tool_call: dict[str, Any], call_id: Any) -> str | None:
    """Return the signature a client echoed: `extra_content` first, else the id."""
    extra = tool_call.get("extra_content")
    if isinstance(extra, dict):
        google = extra.get("google")
        if isinstance(google, dict):
            sig = google.get("thought_signature")
            if isinstance(sig, str) and sig:
                return sig
    return decode_call_id(call_id)


def requires_signatures(model: str) -> bool:
    """Tell whether a model validates function-call thought signatures (Gemini 3 and later)."""
    m = _GEMINI_VERSION.match(model)
    return bool(m) and int(m.group(1)) >= 3


def add_signature_bypass(contents: list[dict[str, Any]], model: str) -> None:
    """Give each unsigned model turn with function calls the documented bypass signature.

    History from another model or a client that rewrote ids has no signatures;
    Gemini 3 would reject it. Only the first call of a turn carries a signature,
    as with parallel calls Gemini makes itself.
    """
    if not requires_signatures(model):
        return
    for turn in contents:
        if turn["role"] != "model":
            continue
        first = None
        for part in turn["parts"]:
            if "functionCall" in part:
                if "thoughtSignature" in part:
                    first = None
                    break
                if first is None:
                    first = part
        if first is not None:
            first["thoughtSignature"] = SKIP_SIGNATURE
