"""Gemini answer parts that are neither text nor function calls: images and code execution."""
from __future__ import annotations

from typing import Any

from .signatures import new_id

# Gemini runs code itself (the codeExecution tool); Chat has no place for that, so the code
# and its result go into the text as fenced blocks these info strings mark.
CODE_FENCE = "python"
RESULT_FENCE = "output"
FAILED_FENCE = "output error"


def image_of(part: dict[str, Any]) -> tuple[str, str] | None:
    """Return (mime type, base64 data) of an inline image part, else None."""
    blob = part.get("inlineData")
    if not isinstance(blob, dict):
        return None
    mime, data = blob.get("mimeType"), blob.get("data")
    if isinstance(mime, str) and mime.startswith("image/") and isinstance(data, str):
        return mime, data
    return None


def data_url(mime: str, data: str) -> str:
    """Return a data: URL for base64 data."""
    return f"data:{mime};base64,{data}"


def chat_image(mime: str, data: str, index: int) -> dict[str, Any]:
    """Return an image as `message.images[]` carries it (OpenRouter's and litellm's form)."""
    return {"type": "image_url", "image_url": {"url": data_url(mime, data)}, "index": index}


def image_item(mime: str, data: str, status: str = "completed",
               item_id: str | None = None) -> dict[str, Any]:
    """Return a Responses `image_generation_call` output item holding an image."""
    fmt = mime.split("/", 1)[1].split(";")[0]
    item: dict[str, Any] = {"type": "image_generation_call", "id": item_id or new_id("ig_"),
                            "status": status, "result": data if status == "completed" else None}
    if fmt in ("png", "webp", "jpeg", "gif"):
        item["output_format"] = fmt
    return item


def is_code(part: dict[str, Any]) -> bool:
    """Tell whether a part is Gemini's code execution (the code, or its result)."""
    return isinstance(part.get("executableCode"), dict) or isinstance(part.get("codeExecutionResult"), dict)


def code_text(part: dict[str, Any]) -> str:
    """Return a code execution part as a fenced block for Chat text."""
    code = part.get("executableCode")
    if isinstance(code, dict):
        lang = str(code.get("language") or CODE_FENCE).lower()
        body = code.get("code") if isinstance(code.get("code"), str) else ""
        return f"\n```{lang if lang != 'language_unspecified' else CODE_FENCE}\n{body}\n```\n"
    result = part.get("codeExecutionResult")
    result = result if isinstance(result, dict) else {}
    output = result.get("output") if isinstance(result.get("output"), str) else ""
    fence = RESULT_FENCE if result.get("outcome") in (None, "OUTCOME_OK") else FAILED_FENCE
    return f"\n```{fence}\n{output}\n```\n"


def code_item(code: dict[str, Any] | None, result: dict[str, Any] | None,
              item_id: str | None = None) -> dict[str, Any]:
    """Return a Responses `code_interpreter_call` item for Gemini's code and its result."""
    outputs = None
    status = "in_progress"
    if result is not None:
        output = result.get("output") if isinstance(result.get("output"), str) else ""
        outputs = [{"type": "logs", "logs": output}]
        status = "completed" if result.get("outcome") in (None, "OUTCOME_OK") else "failed"
    return {"type": "code_interpreter_call", "id": item_id or new_id("ci_"),
            "code": code.get("code") if code else None, "container_id": "gemini",
            "outputs": outputs, "status": status}
