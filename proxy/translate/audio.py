"""Chat `modalities` / `audio` ↔ Gemini responseModalities / speechConfig, and audio answers.

Gemini's speech models (the `-tts` ones) answer 16-bit mono PCM only ("audio/L16;
codec=pcm;rate=24000"), so `pcm16` passes through and `wav` gets a RIFF header; formats
that need an encoder (mp3, opus, aac, flac) are refused.
"""
from __future__ import annotations

import base64
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from .fields import expect_dict, expect_list, fail
from .params import Strictness
from .signatures import new_id

# OpenAI's built-in voices: Gemini knows none of them (its voices are Kore, Puck, Zephyr…).
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx",
                           "sage", "shimmer", "verse", "marin", "cedar"})
AUDIO_FORMATS = ("wav", "pcm16")
AUDIO_TTL = 3600  # expires_at: audio is not kept here at all; an hour mirrors OpenAI's promise
_RATE = re.compile(r"rate=(\d+)")


@dataclass(slots=True)
class Speech:
    """What a request asked for: Gemini's generationConfig part and the answer's audio format."""

    config: dict[str, Any]
    audio_format: str | None = None  # None: no audio asked for


def modalities(body: dict[str, Any], stream: bool, strict: Strictness) -> Speech:
    """Translate `modalities` and `audio` into responseModalities and speechConfig."""
    wanted = body.get("modalities")
    kinds: list[str] = []
    if wanted is not None:
        for i, kind in enumerate(expect_list(wanted, "modalities")):
            if kind not in ("text", "audio", "image"):
                raise fail(f"modalities[{i}]", "must be text, audio or image")
            kinds.append(kind)
    audio = body.get("audio")
    if "audio" not in kinds:
        if audio is not None:
            raise fail("audio", "needs modalities to include \"audio\"")
        if "image" in kinds:  # an extension (as OpenRouter): image models answer with pictures
            return Speech({"responseModalities": ["TEXT", "IMAGE"]})
        return Speech({})
    if "image" in kinds:
        raise fail("modalities", "audio and image cannot be asked for together")
    spec = expect_dict(audio, "audio")
    fmt = spec.get("format")
    if fmt not in AUDIO_FORMATS:
        if fmt in ("mp3", "opus", "aac", "flac"):
            strict.unsupported("audio.format", f"Gemini speaks 16-bit PCM; {fmt} would need an "
                                               "encoder the proxy does not have: ask for wav or pcm16")
            return Speech({})
        raise fail("audio.format", "must be wav, pcm16, mp3, opus, aac or flac")
    if stream and fmt != "pcm16":
        raise fail("audio.format", "streamed audio must be pcm16 (as OpenAI requires)")
    voice = spec.get("voice")
    if isinstance(voice, dict):
        strict.unsupported("audio.voice", "custom voices are OpenAI's; name a Gemini voice "
                                          "such as Kore or Puck")
        return Speech({})
    if not isinstance(voice, str) or not voice:
        raise fail("audio.voice", "must be a Gemini voice name such as Kore or Puck")
    if voice.lower() in OPENAI_VOICES:
        raise fail("audio.voice", f"{voice!r} is an OpenAI voice; Gemini's voices have other "
                                  "names, such as Kore, Puck, Charon or Zephyr")
    # Gemini's speech models answer audio only: the text modality yields no transcript.
    return Speech({"responseModalities": ["AUDIO"],
                   "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}}},
                  fmt)


def is_audio(part: dict[str, Any]) -> bool:
    """Tell whether a Gemini part is inline audio."""
    blob = part.get("inlineData")
    return (isinstance(blob, dict) and isinstance(blob.get("mimeType"), str)
            and blob["mimeType"].startswith("audio/") and isinstance(blob.get("data"), str))


def wav(pcm: bytes, rate: int) -> bytes:
    """Wrap 16-bit mono little-endian PCM in a RIFF/WAVE header."""
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1,
                         rate, rate * 2, 2, 16, b"data", len(pcm))
    return header + pcm


def audio_data(parts: list[dict[str, Any]], fmt: str) -> str:
    """Return the base64 audio of Gemini's audio parts, in the format the client asked for."""
    datas = [p["inlineData"]["data"] for p in parts]
    if fmt == "pcm16" and len(datas) == 1:
        return datas[0]  # untouched: no decode, no re-encode
    pcm = b"".join(base64.b64decode(d) for d in datas)
    if fmt == "wav":
        m = _RATE.search(parts[0]["inlineData"]["mimeType"])
        pcm = wav(pcm, int(m.group(1)) if m else 24000)
    return base64.b64encode(pcm).decode("ascii")


def message_audio(parts: list[dict[str, Any]], fmt: str, transcript: str,
                  audio_id: str | None = None) -> dict[str, Any]:
    """Return OpenAI's `message.audio` for Gemini's audio parts."""
    return {"id": audio_id or new_id("audio_"), "data": audio_data(parts, fmt),
            "expires_at": int(time.time()) + AUDIO_TTL, "transcript": transcript}
