"""OpenAI's wire shapes, for the HTTP door: a speech request read and mapped to a job's raw input
(the job's own rules then validate it, with the queue door's sentences), and the objects,
errors and server-sent events OpenAI's clients read.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from errors import InvalidInput, preview

#: What each accepted `model` means: the job fields it stands for, where the request sets none.
#: `f5-tts` (and the loaded model's own name): the worker's defaults. OpenAI's names, which many
#: apps send unchanged: `tts-1` is OpenAI's faster model, here 16 sampling steps (EPSS's tuned
#: schedule) instead of 32; `tts-1-hd` and `gpt-4o-mini-tts` are the defaults.
MODELS = {"f5-tts": {}, "tts-1": {"nfe_step": 16}, "tts-1-hd": {}, "gpt-4o-mini-tts": {}}
#: response_format -> the job's output_format. `aac` is refused: libsndfile cannot write it.
RESPONSE_FORMATS = {"mp3": "mp3", "opus": "opus", "flac": "flac", "wav": "wav", "pcm": "pcm"}
#: Formats whose bytes go out as the audio is made; the others are encoded whole, then sent.
STREAMED_FORMATS = ("pcm", "wav")
STREAM_FORMATS = ("audio", "sse")
#: A job's fields that a speech request sets through its own (or that do not apply to an answer
#: that is the audio itself): refused as extra fields, with what to send instead.
NOT_EXTRA = {"text": "send it as input", "voice_name": "send it as voice", "output_format": "send response_format",
             "return_base64": "the answer is the audio", "captions_format": "the answer is the audio; use /v1/jobs"}


@dataclass(frozen=True)
class Speech:
    """A speech request, read: the job it asks for and how its answer is sent."""

    job: dict
    response_format: str
    stream_format: str
    #: Its audio is sent as it is made (pcm and wav); else encoded whole, then sent.
    streamed: bool
    #: Fields accepted and not acted on (instructions).
    ignored: tuple[str, ...] = ()


def _invalid(field: str, why: str) -> InvalidInput:
    return InvalidInput(f"Invalid input: {field}: {why}.")


def model_names(loaded: str) -> list[str]:
    return [loaded, *[m for m in MODELS if m != loaded]]


def speech_request(body, loaded: str) -> Speech:
    """OpenAI's `POST /v1/audio/speech` body as a job's raw input. Our own job fields come as extra
    fields (the SDK's `extra_body`) and pass on to the job, validated by its rules."""
    if not isinstance(body, dict):
        raise InvalidInput("Invalid input: the body must be a JSON object.")
    extra = {k: v for k, v in body.items()
             if k not in ("model", "input", "voice", "response_format", "speed", "instructions", "stream_format")}
    for field, instead in NOT_EXTRA.items():
        if field in extra:
            raise _invalid(field, f"is not a field of /v1/audio/speech ({instead})")
    model = body.get("model")
    if model is None:
        raise _invalid("model", f"field required (one of {', '.join(model_names(loaded))})")
    if not isinstance(model, str) or (model not in MODELS and model != loaded):
        raise _invalid("model", f"'{preview(model)}' is not a model of this worker: give one of "
                       f"{', '.join(model_names(loaded))}")
    fmt = body.get("response_format", "mp3")
    if fmt == "aac":
        raise _invalid("response_format", "aac is not available (no AAC encoder on this worker): ask for mp3, opus, "
                       "flac, wav or pcm")
    if fmt not in RESPONSE_FORMATS:
        raise _invalid("response_format", f"'{preview(fmt)}' is not a format: give mp3, opus, flac, wav or pcm")
    stream_format = body.get("stream_format", "audio")
    if stream_format not in STREAM_FORMATS:
        raise _invalid("stream_format", f"'{preview(stream_format)}' is not a stream format: give audio or sse")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("instructions", "must be a string")
    job = {**MODELS.get(model, {}), **extra, "output_format": RESPONSE_FORMATS[fmt]}
    if "input" in body:
        job["text"] = body["input"]
    if "speed" in body:
        job["speed"] = body["speed"]  # OpenAI's 0.25-4.0; the job takes 0.3-3.0 and says so past it
    voice = body.get("voice")
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]
    if voice is not None:
        if not isinstance(voice, str):
            raise _invalid("voice", "give a voice's name, or {\"id\": <its id>}")
        job["voice_name"] = voice
    elif not any(k in extra for k in ("voice_url", "voice_base64", "voices")):
        raise _invalid("voice", "field required (a stored voice's name or id: see GET /v1/audio/voices)")
    return Speech(job, fmt, stream_format, fmt in STREAMED_FORMATS, ("instructions",) if instructions else ())


def error_body(message: str, status: int, code: str, param: str | None = None) -> dict:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse_event(event: dict) -> bytes:
    """One server-sent event, as OpenAI frames them: a `data:` line of JSON, then a blank line."""
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def audio_delta(audio: bytes | memoryview) -> bytes:
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


def audio_done(input_chars: int, frames: int, **ours) -> bytes:
    """The last event. Usage: the input's characters in, the audio's mel frames (10.7 ms) out."""
    usage = {"input_tokens": input_chars, "output_tokens": frames, "total_tokens": input_chars + frames}
    return sse_event({"type": "speech.audio.done", "usage": usage, **ours})


def error_event(body: dict) -> bytes:
    """A failure after the stream began (its status already sent): OpenAI's `error` event."""
    return sse_event({"type": "error", **body})


def voice_object(voice_id: str, created_at: int) -> dict:
    return {"id": voice_id, "object": "audio.voice", "name": voice_id, "created_at": created_at,
            "type": "audio_sample"}


def voice_deleted(voice_id: str) -> dict:
    return {"id": voice_id, "deleted": True, "object": "audio.voice.deleted"}


def model_list(loaded: str) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "f5-tts-worker"}
                                       for name in model_names(loaded)]}
