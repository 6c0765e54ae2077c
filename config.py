"""Every setting of the worker, read once from the environment into one validated object.

Nothing here imports torch, huggingface_hub or f5_tts: each entry point reads these settings and
points every cache at the volume (`cache_env.configure`) *before* those libraries are imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal, Mapping, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger("f5worker.config")

#: Architectures f5-tts ships configs for, plus the tiny random-weight test model.
MODEL_NAMES = ("F5TTS_v1_Base", "F5TTS_Base", "E2TTS_Base", "F5TTS_v1_Small", "F5TTS_Small", "E2TTS_Small", "tiny")
#: The longest reference transcript, from the request (ref_text) or from a sidecar.
MAX_TRANSCRIPT_CHARS = 2000
#: The most MAX_INLINE_BYTES may be: its base64 (4 characters for 3 bytes) and the rest of a
#: result (captions text among it) fit RunPod's 20 MB limit on a /runsync result.
MAX_INLINE_LIMIT = 14 * 2**20


class ConfigError(RuntimeError):
    """A setting is invalid; the message names the environment variable."""


def _blank_to_none(value):
    return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseModel):
    """Field aliases are the environment variable names (see the README's settings table)."""

    # No setting may be infinite or NaN: "inf" passes every lower bound and turns a limit or a
    # timeout off, "nan" fails every comparison at the first job.
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore", allow_inf_nan=False)

    # --- storage -----------------------------------------------------------------------
    runpod_volume: Path = Field(Path("/runpod-volume"), alias="RUNPOD_VOLUME")
    models_dir_override: Optional[Path] = Field(None, alias="MODELS_DIR")
    require_volume: bool = Field(False, alias="REQUIRE_VOLUME")
    #: RunPod's model cache (the endpoint's Model field), read-only; None: <RUNPOD_VOLUME>/huggingface-cache/hub.
    runpod_model_cache: Optional[Path] = Field(None, alias="RUNPOD_MODEL_CACHE")
    #: Filled in by the validator: where models and caches live, and whether that is the volume.
    models_dir: Path = Field(Path("models"), exclude=True)
    on_volume: bool = Field(False, exclude=True)

    # --- model -------------------------------------------------------------------------
    f5_model: str = Field("F5TTS_v1_Base", alias="F5_MODEL")
    f5_ckpt_file: Optional[Path] = Field(None, alias="F5_CKPT_FILE")
    f5_vocab_file: Optional[Path] = Field(None, alias="F5_VOCAB_FILE")
    device: str = Field("auto", alias="DEVICE")
    #: Download what is missing from the hub at load time. False: only the volume is used.
    allow_model_download: bool = Field(True, alias="ALLOW_MODEL_DOWNLOAD")
    #: Padded mel frames (batch x longest chunk) per batched sampling call: the memory budget.
    #: At least 4000: an ordinary chunk is at most about 2,100 frames (22 s), and is never split across calls.
    max_batch_frames: int = Field(24_000, ge=4_000, le=1_000_000, alias="MAX_BATCH_FRAMES")
    #: After the load at start, in its thread, pay what a fresh worker's first job would (a tiny
    #: synthesis, the English grammar, the S3 client: `runpod_handler.warm_up`); the HTTP door's
    #: /ping says 200 only after it.
    warmup: bool = Field(True, alias="WARMUP")
    #: torch.compile the DiT blocks (dynamic shapes) in the background; None: on CUDA only.
    #: Compiled code is cached under <models>/torch.
    compile: Optional[bool] = Field(None, alias="COMPILE")
    #: With COMPILE: keep the DiT blocks compiled ahead of time (AOTInductor) under
    #: <models>/f5-tts/compiled/, built by the first worker of a kind and loaded by the next ones
    #: at load time. False: every worker compiles with torch.compile.
    aot_compile: bool = Field(True, alias="AOT_COMPILE")
    #: On CUDA, capture one sampling step as a CUDA graph and replay it for the other steps.
    cuda_graphs: bool = Field(True, alias="CUDA_GRAPHS")
    #: Whisper model that transcribes a reference when the caller gives no transcript.
    asr_model: str = Field("openai/whisper-large-v3-turbo", alias="ASR_MODEL")
    prefetch_asr: bool = Field(True, alias="PREFETCH_ASR")
    #: Every job's chunks heard back by Whisper and re-sampled when words were dropped or
    #: repeated, unless the job says `verify: false` (`verification`).
    verify: bool = Field(False, alias="VERIFY")
    #: The Whisper model that hears the output; None: ASR_MODEL (one model in memory and on the volume).
    verify_asr_model_override: Optional[str] = Field(None, alias="VERIFY_ASR_MODEL")
    #: A chunk heard with more errors than this (word error rate; character error rate for Chinese
    #: and Japanese) is sampled again. Why 0.2: F5-TTS's own evaluation hears about 2% of words
    #: (and 1.5% of Chinese characters) wrong with Whisper large-v3 in speech that is right, so a
    #: chunk of 10-40 words holds a misheard word now and then, well under the bound; what F5-TTS
    #: gets wrong (a dropped clause, a repeated phrase, an ending cut off, the reference's
    #: transcript spoken first) is a fifth of a chunk or more. In a chunk of a few words (a stream's
    #: first) one wrong word is over it: sampled again, as F5-TTS's lost first words should be.
    verify_max_error: float = Field(0.2, gt=0.0, le=1.0, alias="VERIFY_MAX_ERROR")
    #: Samplings of one chunk at most, the first included: each retry costs a sampling and a hearing.
    verify_attempts: int = Field(3, ge=1, le=5, alias="VERIFY_ATTEMPTS")

    # --- jobs --------------------------------------------------------------------------
    #: The handler streams: a generator that yields each piece of audio as it is made (read from
    #: /stream/<id>), then the whole result; /run and /runsync return the list of all of them.
    stream: bool = Field(False, alias="STREAM")

    # --- the HTTP door (SERVE=http) ------------------------------------------------------
    #: queue: RunPod's job queue, through the RunPod SDK; http: the worker's own HTTP server
    #: (OpenAI's speech API and the native job contract), for RunPod's load-balancing endpoints.
    serve: Literal["queue", "http"] = Field("queue", alias="SERVE")
    #: The HTTP server's port, and the port /ping is also answered on (None: PORT's alone), as
    #: RunPod's load balancer names them.
    port: int = Field(80, ge=1, le=65535, alias="PORT")
    port_health: Optional[int] = Field(None, ge=1, le=65535, alias="PORT_HEALTH")
    #: Requests being served at once (synthesis and native jobs); one more is answered 429 at once.
    max_concurrent_requests: int = Field(16, ge=1, le=1024, alias="MAX_CONCURRENT_REQUESTS")
    #: Outside RunPod: every request but /ping must carry `Authorization: Bearer <API_KEY>`.
    api_key: Optional[str] = Field(None, min_length=16, max_length=512, alias="API_KEY", repr=False)
    #: Voices by name without S3: a folder laid out as the bucket (<VOICES_DIR>/<S3_VOICES_PREFIX><name>).
    voices_dir_override: Optional[Path] = Field(None, alias="VOICES_DIR")
    job_tmp_dir: Path = Field(Path("/tmp"), alias="JOB_TMP_DIR")
    #: Below the size of JOB_TMP_DIR's disk (checked at start), or every job would be refused.
    min_free_disk_mb: int = Field(200, ge=0, alias="MIN_FREE_DISK_MB")
    output_dir: Path = Field(Path("output"), alias="OUTPUT_DIR")
    write_local_output: Optional[bool] = Field(None, alias="WRITE_LOCAL_OUTPUT")
    max_text_chars: int = Field(20_000, ge=1, le=1_000_000, alias="MAX_TEXT_CHARS")
    #: A dialogue job's voices (each staged, decoded and transcribed), segments, and longest pause.
    max_voices: int = Field(8, ge=1, le=64, alias="MAX_VOICES")
    max_segments: int = Field(500, ge=1, le=100_000, alias="MAX_SEGMENTS")
    max_pause_seconds: float = Field(10.0, ge=0, le=600, alias="MAX_PAUSE_SECONDS")
    #: Characters of numbers and symbols (with the words that change their reading) one job may
    #: send through the text normalisation grammars: at most about 3 ms of CPU each on a 2-core
    #: CPU (the slowest of bench.py --normalize's dense texts), so about 9 s at this default. A
    #: number alone is read without a grammar and does not count.
    max_normalize_chars: int = Field(3_000, ge=0, le=1_000_000, alias="MAX_NORMALIZE_CHARS")
    max_voice_bytes: int = Field(50 * 1024 * 1024, ge=1024, alias="MAX_VOICE_BYTES")
    #: Memory for prepared references kept across jobs (`voice_cache`); a 12 s one is 1.1 MB. 0: none kept.
    voice_cache_mb: int = Field(256, ge=0, le=65_536, alias="VOICE_CACHE_MB")
    #: MIN_VOICE_SECONDS <= MAX_VOICE_SECONDS, and MIN_VOICE_SECONDS < REF_CLIP_SECONDS: the
    #: reference is clipped first, then must be that long (checked at start).
    max_voice_seconds: float = Field(600.0, gt=0, alias="MAX_VOICE_SECONDS")
    min_voice_seconds: float = Field(1.0, ge=0.1, alias="MIN_VOICE_SECONDS")
    #: f5-tts clips at 12 s and sizes chunks to 22 s with the reference: at most 15 leaves 7 s.
    ref_clip_seconds: float = Field(12.0, ge=2.0, le=15.0, alias="REF_CLIP_SECONDS")
    #: At least a second: below that, next to no text could be spoken.
    max_output_seconds: float = Field(1800.0, ge=1.0, alias="MAX_OUTPUT_SECONDS")
    #: Raw audio bytes that may be returned inline (base64 adds a third): the default's base64 fits
    #: /run's 10 MB, the most's fits /runsync's 20 MB. The least (16 KiB) holds a word of WAV.
    max_inline_bytes: int = Field(7 * 1024 * 1024, ge=16 * 1024, le=MAX_INLINE_LIMIT, alias="MAX_INLINE_BYTES")
    voice_url_timeout_s: float = Field(20.0, ge=1.0, le=300, alias="VOICE_URL_TIMEOUT")
    allow_http_urls: bool = Field(False, alias="ALLOW_HTTP_URLS")
    #: Lifts the private/loopback address guard on voice_url: for local tests only.
    allow_private_urls: bool = Field(False, alias="ALLOW_PRIVATE_URLS")

    # --- S3 ----------------------------------------------------------------------------
    s3_bucket: Optional[str] = Field(None, alias="S3_BUCKET")
    s3_endpoint_url: Optional[str] = Field(None, alias="S3_ENDPOINT_URL")
    s3_region: Optional[str] = Field(None, alias="S3_REGION")
    s3_access_key_id: Optional[str] = Field(None, alias="S3_ACCESS_KEY_ID", repr=False)
    s3_secret_access_key: Optional[str] = Field(None, alias="S3_SECRET_ACCESS_KEY", repr=False)
    s3_voices_prefix: str = Field("voices/", alias="S3_VOICES_PREFIX")
    s3_output_prefix: str = Field("output/", alias="S3_OUTPUT_PREFIX")
    #: A minute at least (a URL must outlive the caller's reading of the result); SigV4's most, 7 days.
    s3_presign_expires: int = Field(3600, ge=60, le=7 * 24 * 3600, alias="S3_PRESIGN_EXPIRES")
    s3_max_attempts: int = Field(5, ge=1, le=20, alias="S3_MAX_ATTEMPTS")
    #: Seconds for each of S3_MAX_ATTEMPTS attempts: a second at least, so that a distant store can
    #: answer; a read at most RunPod's default execution timeout of a job (600 s).
    s3_connect_timeout: float = Field(5.0, ge=1.0, le=120, alias="S3_CONNECT_TIMEOUT")
    s3_read_timeout: float = Field(30.0, ge=1.0, le=600, alias="S3_READ_TIMEOUT")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        return _blank_to_none(value)

    @field_validator("compile", mode="before")
    @classmethod
    def _auto_is_unset(cls, value):
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    @field_validator("serve", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _key(cls, value):
        if value is not None and (any(ch.isspace() for ch in value) or not value.isprintable()):
            raise ValueError("must be one word of printable characters (no spaces), as an Authorization header carries it")
        return value

    @field_validator("f5_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"must be one of {', '.join(MODEL_NAMES)}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda or cuda:N")

    @field_validator("s3_voices_prefix", "s3_output_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.lstrip("/")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value):
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, such as https://<account>.r2.cloudflarestorage.com")
        if parts.username is not None or parts.password is not None:  # they would reach every audio_url
            raise ValueError("must not carry credentials (user:secret@...): set S3_ACCESS_KEY_ID and "
                             "S3_SECRET_ACCESS_KEY instead")
        try:
            parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        if self.models_dir_override is not None:
            models_dir, on_volume = self.models_dir_override, _is_within(self.models_dir_override, self.runpod_volume)
        elif _volume_mounted(self.runpod_volume):
            models_dir, on_volume = self.runpod_volume / "models", True
        elif self.require_volume:
            raise ValueError(
                f"REQUIRE_VOLUME is set but the network volume {self.runpod_volume} is not mounted "
                "(set RUNPOD_VOLUME to where it is mounted)"
            )
        else:
            models_dir, on_volume = Path("models"), False
        object.__setattr__(self, "models_dir", models_dir.absolute())
        object.__setattr__(self, "on_volume", on_volume)
        if self.runpod_model_cache is None:
            object.__setattr__(self, "runpod_model_cache", self.runpod_volume / "huggingface-cache" / "hub")
        return self

    @model_validator(mode="after")
    def _every_job_can_pass(self) -> "Settings":
        """Settings each valid alone, that together would refuse every job."""
        if self.min_voice_seconds >= self.ref_clip_seconds:
            raise ValueError(f"MIN_VOICE_SECONDS ({self.min_voice_seconds:g}) must be below REF_CLIP_SECONDS "
                             f"({self.ref_clip_seconds:g}): the reference is clipped to that, so no voice would do")
        if self.max_voice_seconds < self.min_voice_seconds:
            raise ValueError(f"MAX_VOICE_SECONDS ({self.max_voice_seconds:g}) must be at least MIN_VOICE_SECONDS "
                             f"({self.min_voice_seconds:g}): every voice would be too long or too short")
        if _is_within(self.local_voices_dir, self.job_tmp_dir) and any(
                part.startswith("f5job-") for part in self.local_voices_dir.absolute().relative_to(
                    self.job_tmp_dir.absolute()).parts):
            raise ValueError(f"VOICES_DIR ({self.local_voices_dir}) must not be inside a job's scratch directory "
                             "under JOB_TMP_DIR: those are removed when the job ends")
        disk = _disk_bytes(self.job_tmp_dir)
        if disk is not None and self.min_free_disk_mb and self.min_free_disk_mb * 2**20 >= disk:  # 0: no floor
            raise ValueError(f"MIN_FREE_DISK_MB ({self.min_free_disk_mb}) must be below the size of the disk that "
                             f"holds JOB_TMP_DIR ({disk // 2**20} MB): every job would be refused")
        return self

    # --- derived -----------------------------------------------------------------------
    @property
    def verify_asr_model(self) -> str:
        return self.verify_asr_model_override or self.asr_model

    @property
    def s3_enabled(self) -> bool:
        return bool(self.s3_bucket)

    @property
    def local_voices_dir(self) -> Path:
        """Where voices by name are kept without S3: VOICES_DIR, else `<MODELS_DIR>/voices` (on
        the network volume when there is one: kept across restarts and shared by every worker of
        the endpoint, where OUTPUT_DIR is on each worker's own disk)."""
        return (self.voices_dir_override or self.models_dir / "voices").absolute()

    @property
    def local_output_enabled(self) -> bool:
        """Write results to OUTPUT_DIR too; by default only outside RunPod's job queue (the
        variable the SDK itself checks), so workers never fill their container disk."""
        if self.write_local_output is not None:
            return self.write_local_output
        return not in_job_queue()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        data = dict(environ)
        # RunPod's own workers name the bucket settings BUCKET_*: accept those too.
        for ours, theirs in (
            ("S3_ENDPOINT_URL", "BUCKET_ENDPOINT_URL"),
            ("S3_ACCESS_KEY_ID", "BUCKET_ACCESS_KEY_ID"),
            ("S3_SECRET_ACCESS_KEY", "BUCKET_SECRET_ACCESS_KEY"),
        ):
            if not data.get(ours) and data.get(theirs):
                data[ours] = data[theirs]
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        try:
            return cls.model_validate({k: v for k, v in data.items() if k in names})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def in_job_queue() -> bool:
    """Whether this process takes jobs from RunPod's queue: the variable the RunPod SDK itself checks."""
    return "RUNPOD_WEBHOOK_GET_JOB" in os.environ


def _volume_mounted(volume: Path) -> bool:
    """Whether the network volume is at `volume`. Without one, RunPod still makes the folder to
    mount its model cache in (`<volume>/huggingface-cache/hub`): a folder holding only that, and
    no mount point itself, is no volume."""
    if not volume.is_dir():
        return False
    if os.path.ismount(volume):
        return True
    try:
        return {p.name for p in volume.iterdir()} != {"huggingface-cache"}
    except OSError:
        return True


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.absolute().relative_to(parent.absolute())
        return True
    except ValueError:
        return False


def _disk_bytes(path: Path) -> int | None:
    """The size of the disk that holds `path` (or would, once made); None when unknown."""
    for folder in (path.absolute(), *path.absolute().parents):
        try:
            return shutil.disk_usage(folder).total
        except OSError:
            continue
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {msg}" if name else msg)  # a check of several settings names them itself
    return "invalid setting(s): " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use and never again."""
    settings = Settings.from_env(os.environ)
    if not settings.on_volume and settings.models_dir_override is None and settings.f5_model != "tiny" \
            and settings.runpod_model_cache.is_dir():
        log.warning("Network volume %s is not mounted: model files are read from RunPod's model cache %s first, and "
                    "what it lacks is downloaded to %s on local disk at every cold start (the start-up log names "
                    "where each file came from).", settings.runpod_volume, settings.runpod_model_cache,
                    settings.models_dir)
    elif not settings.on_volume and settings.models_dir_override is None and settings.f5_model != "tiny":
        log.warning(
            "Network volume %s is not mounted: models and caches go to %s on local disk. "
            "Every cold start will download the models again. Attach a network volume "
            "(or set REQUIRE_VOLUME=true to make this an error).",
            settings.runpod_volume,
            settings.models_dir,
        )
    return settings


def settings_or_exit() -> Settings:
    """For the command-line entry points: the settings, or one line naming the bad setting and
    exit status 2 (a usage error) instead of a traceback."""
    try:
        return get_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
