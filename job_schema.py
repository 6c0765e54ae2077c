"""The job contract: what `job["input"]` may hold, validated strictly (unknown fields, wrong
types, NaN and out-of-range numbers are refused), with one clear sentence on failure."""

from __future__ import annotations

import re
import secrets
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config import MAX_TRANSCRIPT_CHARS, Settings
from errors import InvalidInput, LimitExceeded
from voices import check_voice_name

MAX_SEED = 2**31 - 1
LANGUAGE = re.compile(r"[A-Za-z][A-Za-z ]{1,31}")


class JobInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, str_strip_whitespace=True)

    text: str = Field(min_length=1)
    voice_name: Optional[str] = Field(None, min_length=1, max_length=200)
    voice_url: Optional[str] = Field(None, min_length=1, max_length=4096)
    voice_base64: Optional[str] = Field(None, min_length=1)
    ref_text: Optional[str] = Field(None, max_length=MAX_TRANSCRIPT_CHARS)
    language: Optional[str] = Field(None, max_length=32)

    speed: float = Field(1.0, ge=0.3, le=3.0)
    nfe_step: int = Field(32, ge=4, le=128)
    cfg_strength: float = Field(2.0, ge=0.0, le=10.0)
    sway_sampling_coef: float = Field(-1.0, ge=-1.0, le=1.0)
    cross_fade_duration: float = Field(0.15, ge=0.0, le=2.0)
    target_rms: float = Field(0.1, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    remove_silence: bool = False

    output_format: Literal["wav", "flac", "mp3", "ogg", "opus", "pcm"] = "wav"
    return_base64: bool = False
    #: A subtitle file of the captions, delivered beside the audio.
    captions_format: Optional[Literal["srt", "vtt"]] = None
    #: Each streamed piece's encoding (a worker with STREAM on): raw 16-bit PCM or a playable WAV.
    stream_format: Literal["pcm", "wav"] = "wav"

    @field_validator("voice_name")
    @classmethod
    def _plain_name(cls, value):
        if value is not None:
            try:
                check_voice_name(value)
            except InvalidInput as exc:
                raise ValueError(exc.message.removeprefix("voice_name ")) from None
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value):
        if value is not None and not LANGUAGE.fullmatch(value):
            raise ValueError("must be a language name or code, such as 'en' or 'german'")
        return value

    @field_validator("ref_text")
    @classmethod
    def _spoken(cls, value):
        if value and not any(ch.isalnum() for ch in value):  # blank means: transcribe it
            raise ValueError("has no letters or digits: send the words spoken in the reference, or leave it out "
                             "to have it transcribed")
        return value

    @model_validator(mode="after")
    def _one_voice(self) -> "JobInput":
        given = [n for n in ("voice_name", "voice_url", "voice_base64") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of voice_name, voice_url, voice_base64"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if not any(ch.isalnum() for ch in self.text):
            raise ValueError("text has nothing to speak (no letters or digits)")
        return self

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)


def _sentence(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        field = ".".join(str(p) for p in err["loc"])
        msg = "is not a known field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        msg = msg[0].lower() + msg[1:].rstrip(".")
        parts.append(f"{field}: {msg}" if field else msg)
    more = len(exc.errors()) - 5
    return "Invalid input: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + "."


def parse_job_input(raw, settings: Settings) -> JobInput:
    if not isinstance(raw, dict):
        raise InvalidInput("Invalid input: the job's input must be a JSON object.")
    try:
        job = JobInput.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(_sentence(exc)) from None
    if len(job.text) > settings.max_text_chars:
        raise LimitExceeded(f"text is {len(job.text)} characters; at most {settings.max_text_chars} are accepted.")
    if "stream_format" in job.model_fields_set and not settings.stream:
        raise InvalidInput("Invalid input: stream_format: this worker does not stream (its STREAM setting is off); "
                           "leave it out, or send the job to a streaming endpoint.")
    if job.remove_silence and settings.stream:
        raise InvalidInput("Invalid input: remove_silence: not available on a streaming worker (it shortens pauses "
                           "across the whole audio, and a stream sends the audio before it is whole).")
    return job
