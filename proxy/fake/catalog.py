"""The models the fake Gemini API knows, shaped like Google's Model resources."""
from __future__ import annotations

from typing import Any

_GENERATE = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_EMBED = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]


def _chat(model_id: str, display: str, description: str, *, version: str = "001",
          input_limit: int = 1_048_576, output_limit: int = 65_536,
          thinking: bool = True, top_k: int = 64) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": f"models/{model_id}",
        "version": version,
        "displayName": display,
        "description": description,
        "inputTokenLimit": input_limit,
        "outputTokenLimit": output_limit,
        "supportedGenerationMethods": list(_GENERATE),
        "temperature": 1,
        "topP": 0.95,
        "topK": top_k,
        "maxTemperature": 2,
    }
    if thinking:
        model["thinking"] = True
    return model


def _embedding(model_id: str, display: str, description: str, *,
               methods: list[str], input_limit: int = 2048) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": display,
        "description": description,
        "inputTokenLimit": input_limit,
        "outputTokenLimit": 1,
        "supportedGenerationMethods": methods,
    }


# Ordered like Google's listing: generative models first, embedders last.
MODELS: list[dict[str, Any]] = [
    _chat("gemini-2.5-flash", "Gemini 2.5 Flash",
          "Stable version of Gemini 2.5 Flash, our mid-size multimodal model that supports "
          "up to 1 million tokens, released in June of 2025."),
    _chat("gemini-2.5-pro", "Gemini 2.5 Pro",
          "Stable release (June 17th, 2025) of Gemini 2.5 Pro", version="2.5"),
    _chat("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite",
          "Stable version of Gemini 2.5 Flash-Lite, released in July of 2025"),
    _chat("gemini-2.0-flash", "Gemini 2.0 Flash", "Gemini 2.0 Flash",
          output_limit=8192, thinking=False, top_k=40),
    _chat("gemini-2.0-flash-lite", "Gemini 2.0 Flash-Lite", "Gemini 2.0 Flash-Lite",
          output_limit=8192, thinking=False, top_k=40),
    _chat("gemini-flash-latest", "Gemini Flash Latest",
          "Latest release of Gemini Flash", version="Gemini Flash Latest"),
    _chat("gemini-flash-lite-latest", "Gemini Flash-Lite Latest",
          "Latest release of Gemini Flash-Lite", version="Gemini Flash-Lite Latest"),
    _chat("gemini-3-pro-preview", "Gemini 3 Pro Preview", "Gemini 3 Pro Preview",
          version="3-pro-preview-11-2025"),
    _chat("gemini-3-flash-preview", "Gemini 3 Flash Preview", "Gemini 3 Flash Preview",
          version="3-flash-preview-12-2025"),
    _chat("gemma-3-27b-it", "Gemma 3 27B", "", input_limit=131_072, output_limit=8192,
          thinking=False),
    _chat("gemini-2.5-flash-image", "Nano Banana", "Gemini 2.5 Flash Image",
          input_limit=32_768, output_limit=32_768, thinking=False),
    _chat("gemini-2.5-flash-preview-tts", "Gemini 2.5 Flash Preview TTS",
          "Gemini 2.5 Flash Preview TTS", input_limit=8192, output_limit=16_384, thinking=False),
    _embedding("gemini-embedding-001", "Gemini Embedding 001",
               "Obtain a distributed representation of a text.", methods=list(_EMBED)),
    _embedding("text-embedding-004", "Text Embedding 004",
               "Obtain a distributed representation of a text.", methods=["embedContent"]),
]

BY_ID: dict[str, dict[str, Any]] = {m["name"][len("models/"):]: m for m in MODELS}

# Google's default dimensionality per embedding model.
EMBED_DIMS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}


def get(model_id: str) -> dict[str, Any] | None:
    """Return the Model resource for `model_id` (bare id), or None."""
    return BY_ID.get(model_id)


def is_embedding(model_id: str) -> bool:
    """Tell whether `model_id` is an embedding model."""
    model = BY_ID.get(model_id)
    return bool(model) and "embedContent" in model["supportedGenerationMethods"]


def needs_thought_signatures(model_id: str) -> bool:
    """Tell whether the model enforces function-call thought signatures (Gemini 3+)."""
    return model_id.startswith("gemini-3")


def always_thinks(model_id: str) -> bool:
    """Tell whether the model refuses a thinking budget of 0."""
    return model_id.startswith(("gemini-2.5-pro", "gemini-3-pro"))


def draws(model_id: str) -> bool:
    """Tell whether the model answers with images (the `-image` models)."""
    return model_id.endswith("-image") or "-image-" in model_id


def speaks(model_id: str) -> bool:
    """Tell whether the model is a speech model (the `-tts` ones answer audio only)."""
    return model_id.endswith("-tts")
