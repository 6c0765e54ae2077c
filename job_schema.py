"""The job contract: what `job["input"]` may hold, validated strictly (unknown fields, wrong
types, NaN and out-of-range numbers are refused), with one clear sentence on failure.

A job speaks `text` in one voice (the voice fields at the top level), or is a dialogue: `voices`
by name, then `segments` (one voice each) or `text` with `[name]` tags, as f5-tts's CLI reads them.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from config import MAX_TRANSCRIPT_CHARS, Settings
from errors import InvalidInput, LimitExceeded, preview
from invisible import without_invisible
from text_normalization import supported as supported_text_language
from voices import SOURCES, check_voice_name

MAX_SEED = 2**31 - 1
LANGUAGE = re.compile(r"[A-Za-z][A-Za-z ]{1,31}")
#: A voice's name in a dialogue: a key of `voices`, a segment's `voice`, a `[tag]` in the text.
SPEAKER = re.compile(r"[A-Za-z0-9_-]{1,32}")
TAG = re.compile(r"\[([A-Za-z0-9_-]{1,32})\]")
VOICE_SOURCES = tuple(SOURCES)  # voice_name, voice_url, voice_base64
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, str_strip_whitespace=True)
#: An error message lists the first few problems, within about this many characters.
MESSAGE_BUDGET = 300
NO_WORDS_IN_REF_TEXT = ("has no letters or digits: send the words spoken in the reference, or leave it out to have "
                        "it transcribed")
NOTHING_TO_SPEAK = "has nothing to speak (no letters or digits)"


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _spoken_characters(value, nothing_left: str):
    """A text to be spoken (before validation) without the invisible characters that mean nothing
    in it (a BOM, a zero-width space: see `invisible`); one that held only those is refused with
    `nothing_left`, not taken for blank."""
    if not isinstance(value, str):
        return value
    kept = without_invisible(value)
    if value.strip() and not kept.strip():
        raise ValueError(nothing_left)
    return kept


class VoiceInput(BaseModel):
    """One voice: a recording (exactly one source), what it says, its language, its speed."""

    model_config = STRICT

    voice_name: Optional[str] = Field(None, min_length=1, max_length=200)
    voice_url: Optional[str] = Field(None, min_length=1, max_length=4096)
    voice_base64: Optional[str] = Field(None, min_length=1)
    ref_text: Optional[str] = Field(None, max_length=MAX_TRANSCRIPT_CHARS)
    language: Optional[str] = Field(None, max_length=32)
    speed: Optional[float] = Field(None, ge=0.3, le=3.0)  # None: the job's

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

    @field_validator("ref_text", mode="before")
    @classmethod
    def _ref_text_characters(cls, value):
        return _spoken_characters(value, NO_WORDS_IN_REF_TEXT)

    @field_validator("ref_text")
    @classmethod
    def _spoken(cls, value):
        if value and not _speakable(value):  # blank means: transcribe it
            raise ValueError(NO_WORDS_IN_REF_TEXT)
        return value

    @model_validator(mode="after")
    def _checked(self) -> "VoiceInput":
        self.check_source()
        return self

    def check_source(self) -> None:
        given = [n for n in VOICE_SOURCES if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of voice_name, voice_url, voice_base64"
                + (f" (got {', '.join(given)})" if given else "")
            )


class SegmentInput(BaseModel):
    """One turn of a dialogue: text in one of the job's voices."""

    model_config = STRICT

    voice: str = Field(min_length=1, max_length=32)
    text: str = Field(min_length=1)
    speed: Optional[float] = Field(None, ge=0.3, le=3.0)  # None: the voice's
    #: Seconds of silence after this segment (at most MAX_PAUSE_SECONDS, checked with the settings).
    pause_after: float = Field(0.0, ge=0.0)

    @field_validator("text", mode="before")
    @classmethod
    def _text_characters(cls, value):
        return _spoken_characters(value, NOTHING_TO_SPEAK)

    @field_validator("text")
    @classmethod
    def _has_words(cls, value):
        if not _speakable(value):
            raise ValueError(NOTHING_TO_SPEAK)
        return value


class JobInput(VoiceInput):
    text: Optional[str] = Field(None, min_length=1)
    voices: Optional[dict[str, VoiceInput]] = None
    segments: Optional[list[SegmentInput]] = None
    _segments: Optional[list[SegmentInput]] = PrivateAttr(None)  # as spoken, tags read once

    speed: float = Field(1.0, ge=0.3, le=3.0)  # a voice's or a segment's own speed goes before it
    nfe_step: int = Field(32, ge=4, le=128)
    cfg_strength: float = Field(2.0, ge=0.0, le=10.0)
    sway_sampling_coef: float = Field(-1.0, ge=-1.0, le=1.0)
    cross_fade_duration: float = Field(0.15, ge=0.0, le=2.0)
    target_rms: float = Field(0.1, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    remove_silence: bool = False
    #: Numbers, money, dates, times, units, symbols and abbreviations spoken as words.
    normalize: bool = True
    #: The text's language for that ("en", "zh" or a num2words code); None: English or Chinese
    #: chosen per sentence from its script.
    text_language: Optional[str] = Field(None, min_length=1, max_length=8)

    output_format: Literal["wav", "flac", "mp3", "ogg", "opus", "pcm"] = "wav"
    return_base64: bool = False
    #: A subtitle file of the captions, delivered beside the audio; vtt_words: WebVTT with each
    #: word's time inside its cue (a verified job's word timings).
    captions_format: Optional[Literal["srt", "vtt", "vtt_words"]] = None
    #: Each chunk heard back by the ASR model, sampled again when its words are wrong, and its words
    #: timed (`verification`). None: the worker's VERIFY setting.
    verify: Optional[bool] = None
    #: Each streamed piece's encoding (a worker with STREAM on): raw 16-bit PCM or a playable WAV.
    stream_format: Literal["pcm", "wav"] = "wav"

    @field_validator("text", mode="before")
    @classmethod
    def _text_characters(cls, value):
        return _spoken_characters(value, NOTHING_TO_SPEAK)

    @field_validator("text_language")
    @classmethod
    def _text_language(cls, value):
        if value is not None and not supported_text_language(value):
            raise ValueError(f"'{preview(value)}' is not a language the worker reads numbers in: give en, zh, or a "
                             "num2words code such as de, fr, es, it, pt, ru, ja, ko")
        return value

    @model_validator(mode="after")
    def _checked(self) -> "JobInput":
        if self.voices is None:
            if self.segments is not None:
                raise ValueError("segments needs voices: the voices its segments name")
            if self.text is None:
                raise ValueError("text: field required")
            self.check_source()
            if not _speakable(self.text):
                raise ValueError(f"text {NOTHING_TO_SPEAK}")
            return self
        top = [n for n in (*VOICE_SOURCES, "ref_text", "language") if getattr(self, n) is not None]
        if top:
            raise ValueError(f"with voices, give {', '.join(top)} inside each voice, not beside them")
        if not self.voices:
            raise ValueError("voices is empty: give at least one voice")
        for name in self.voices:
            if not SPEAKER.fullmatch(name):
                raise ValueError(f"voices: '{preview(name)}' is not a voice name (1 to 32 letters, digits, '_' or '-')")
        if (self.text is None) == (self.segments is None):
            raise ValueError("with voices, give either segments or text with [voice] tags")
        if self.segments is not None and not self.segments:
            raise ValueError("segments is empty: give at least one")
        segments = self.segments if self.segments is not None else _read_tags(self.text)
        for n, segment in enumerate(segments):  # tags and voice names are checked now, before any work
            if segment.voice not in self.voices:
                where = f"segments.{n}.voice" if self.segments is not None else f"text: the tag [{segment.voice}]"
                raise ValueError(f"{where} names no voice of voices ({preview(', '.join(self.voices))})")
        self._segments = segments
        return self

    def segments_in_order(self) -> list[SegmentInput]:
        """A dialogue's segments: as given, or read from the tagged text ("[alice] Hi. [bob] Hello!")."""
        return self._segments

    def text_chars(self) -> int:
        return len(self.text) if self.text is not None else sum(len(s.text) for s in self.segments)

    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)


def _read_tags(text: str) -> list[SegmentInput]:
    parts = TAG.split(text)  # the text before the first tag, then each tag's name and its text
    if len(parts) == 1:
        raise ValueError("text: with voices, the text needs [voice] tags, such as '[alice] Hello. [bob] Hi!'")
    if parts[0].strip():
        raise ValueError(f"text: '{preview(parts[0].strip())}' comes before the first [voice] tag; "
                         "begin the text with one, such as '[alice] Hello.'")
    segments = []
    for name, said in zip(parts[1::2], parts[2::2]):
        if not _speakable(said):
            raise ValueError(f"text: the tag [{name}] has no text to speak after it")
        segments.append(SegmentInput(voice=name, text=said.strip()))
    return segments


def _sentence(exc: ValidationError) -> str:
    """The first few problems (at most five, within MESSAGE_BUDGET characters), then how many more."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts, size = [], 0
    for err in errors[:5]:
        part = _problem(err)
        if parts and size + len(part) > MESSAGE_BUDGET:
            break
        parts.append(part)
        size += len(part) + 2
    more = len(errors) - len(parts)
    return "Invalid input: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + "."


def _problem(err: dict) -> str:
    """One of pydantic's errors as `location: what is wrong`. A location names what the caller
    sent (an unknown field, a key of voices): each of its parts is quoted as caller input."""
    field = ".".join(preview(p) for p in err["loc"])
    msg = "is not a known field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:].rstrip(".")
    return f"{field}: {msg}" if field else msg


def parse_job_input(raw, settings: Settings, streamed: bool | None = None) -> JobInput:
    """`raw` as a job, or InvalidInput / LimitExceeded with one sentence. `streamed`: whether this
    job's audio is sent as it is made, for a door that decides it per request (the HTTP door);
    None: as the worker's STREAM setting says (the queue door)."""
    if not isinstance(raw, dict):
        raise InvalidInput("Invalid input: the job's input must be a JSON object.")
    # Counted before validation: a payload of a million voices, segments or tags is refused
    # before any of them is read.
    for field, limit, setting in (("voices", settings.max_voices, "MAX_VOICES"),
                                  ("segments", settings.max_segments, "MAX_SEGMENTS")):
        given = raw.get(field)
        if isinstance(given, (dict, list)) and len(given) > limit:
            raise LimitExceeded(f"{field} has {len(given)} entries; at most {limit} are accepted per job ({setting}).")
    text = raw.get("text")
    if isinstance(text, str) and raw.get("voices") is not None:
        tags = sum(1 for _ in TAG.finditer(text))
        if tags > settings.max_segments:
            raise LimitExceeded(f"text has {tags} [voice] tags; at most {settings.max_segments} segments are "
                                "accepted per job (MAX_SEGMENTS).")
    try:
        job = JobInput.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(_sentence(exc)) from None
    if job.verify is None:
        job.verify = settings.verify
    if job.captions_format == "vtt_words" and not job.verify:
        raise InvalidInput("Invalid input: captions_format: vtt_words needs verify: true (each word's time comes from "
                           "hearing the audio back); send verify: true, or ask for vtt.")
    chars = job.text_chars()
    if chars > settings.max_text_chars:
        what = "text is" if job.segments is None else "the segments' texts are"
        raise LimitExceeded(f"{what} {chars} characters; at most {settings.max_text_chars} are accepted.")
    if job.voices is not None:
        for n, segment in enumerate(job.segments_in_order()):
            if segment.pause_after > settings.max_pause_seconds:
                raise LimitExceeded(f"segments.{n}.pause_after is {segment.pause_after:g} s; at most "
                                    f"{settings.max_pause_seconds:g} s is accepted (MAX_PAUSE_SECONDS).")
    if streamed is not None:
        _check_streaming(job, streamed)
        return job
    if "stream_format" in job.model_fields_set and not settings.stream:
        raise InvalidInput("Invalid input: stream_format: this worker does not stream (its STREAM setting is off); "
                           "leave it out, or send the job to a streaming endpoint.")
    if job.remove_silence and settings.stream:
        raise InvalidInput("Invalid input: remove_silence: not available on a streaming worker (it shortens pauses "
                           "across the whole audio, and a stream sends the audio before it is whole).")
    return job


def _check_streaming(job: JobInput, streamed: bool) -> None:
    """A door's own rule: how a request's audio is sent is the door's to choose (stream_format is not
    the job's), and a streamed request cannot remove silence."""
    if "stream_format" in job.model_fields_set:
        raise InvalidInput("Invalid input: stream_format: is not a field of this request (the audio of a streamed "
                           "request is sent as it is made, in the format the request asks for).")
    if job.remove_silence and streamed:
        raise InvalidInput("Invalid input: remove_silence: not available on a streamed request (it shortens pauses "
                           "across the whole audio, and a stream sends the audio before it is whole); ask for the "
                           "audio whole (a response_format of mp3, opus or flac is sent whole).")


def parse_voice(raw: dict) -> VoiceInput:
    """One voice alone (a voice stored for later jobs), by the rules of a job's voice."""
    try:
        return VoiceInput.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(_sentence(exc)) from None


class JobResult(BaseModel):
    """What a job answers, as every front door returns it: where the audio went (the delivery's
    fields, only those that apply), what was made and how, and how long each step took."""

    model_config = ConfigDict(extra="forbid")

    #: Where the audio went: S3 (its key, a presigned URL), inline, the local copy (OUTPUT_DIR).
    s3_key: Optional[str] = None
    audio_url: Optional[str] = None
    audio_base64: Optional[str] = None
    local_path: Optional[str] = None
    #: The subtitle file (captions_format), beside the audio.
    captions_s3_key: Optional[str] = None
    captions_url: Optional[str] = None
    captions_text: Optional[str] = None
    captions_local_path: Optional[str] = None
    #: What was made, and how.
    duration_s: float
    sample_rate: int
    format: str
    seed: int
    model: str
    #: A dialogue's voices: each one's transcript and where it came from; and its segments.
    voices: Optional[dict[str, dict[str, str | bool]]] = None
    segments: Optional[int] = None
    #: A single voice's transcript and where it came from (request, sidecar or asr).
    ref_text: Optional[str] = None
    ref_text_source: Optional[str] = None
    #: Whether the voice's prepared reference was this worker's from an earlier job (S3: one HEAD,
    #: no download); a dialogue says it of each voice in `voices`.
    voice_cached: Optional[bool] = None
    normalized_text: str
    chunks: int
    batches: int
    #: Each chunk's text and its time in the audio (and its voice, in a dialogue).
    captions: list[dict]
    #: A verified job's verdict (whether every chunk met VERIFY_MAX_ERROR, its worst chunk, what
    #: was sampled again, and each chunk's heard text, error and attempts), and each spoken word's
    #: time in the audio.
    verification: Optional[dict] = None
    words: Optional[list[dict]] = None
    #: Seconds per step (normalize, download, model, transcript, synthesis, encode, upload,
    #: total; first_audio when streamed; verify and verify_asr, within synthesis, when verified),
    #: and synthesis time per second of audio.
    timings: dict[str, float]
    rtf: Optional[float]

    def answer(self) -> dict:
        """The result as JSON-ready fields: the ones that apply to this job, in a fixed order."""
        return self.model_dump(exclude_unset=True)
