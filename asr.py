"""Transcribing a reference with Whisper when the caller gives no transcript.

The model (ASR_MODEL, from <models>/hub like every other model) is loaded on first need only:
never at start and never on the synthesis import path (transformers is imported here, lazily).
The decoded array is passed in, so no FFmpeg is involved.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time

import numpy as np

import loaded_model
import model_cache
from audio_io import resample
from config import Settings
from errors import AudioError, InvalidInput, ModelLoadError, TranscriptUnavailable

log = logging.getLogger("f5worker.asr")

WHISPER_RATE = 16_000
#: After Whisper could not be loaded, jobs without a transcript fail at once for this long
#: instead of each trying again (a download from a hub that is down retries for 20 s and more).
RETRY_AFTER_SECONDS = 300.0
#: What the default ASR_MODEL (whisper-large-v3-turbo, 1.6 GB) takes on disk, with a margin: it is
#: not downloaded where less than this is free beside MIN_FREE_DISK_MB (a small container disk with
#: no network volume), which every job's scratch space needs.
ASR_DOWNLOAD_MB = 1700


class Transcriber:
    def __init__(self, folder, device: str):
        started = time.perf_counter()
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        dtype = loaded_model.inference_dtype(device)
        try:
            self.processor = WhisperProcessor.from_pretrained(folder)
            self.model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
        except Exception as exc:
            raise ModelLoadError(f"The ASR model in {folder} could not be loaded: {type(exc).__name__}: {exc}") from exc
        self.device, self.dtype, self.torch = device, dtype, torch
        self.lock = threading.Lock()
        log.info("loaded ASR model %s on %s in %.2f s", folder, device, time.perf_counter() - started)

    def __call__(self, audio_16k: np.ndarray, language: str | None) -> str:
        features = self.processor(audio_16k, sampling_rate=WHISPER_RATE, return_tensors="pt").input_features
        features = features.to(self.device, self.dtype)
        with self.lock, self.torch.inference_mode():
            try:
                ids = self.model.generate(features, language=language, task="transcribe")
            except ValueError as exc:
                if language is not None and "language" in str(exc).lower():
                    raise InvalidInput(f"language '{language}' is not supported by the ASR model.") from None
                raise
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


_transcriber: Transcriber | None = None
_failed_at: float | None = None
_failed_why = ""
_lock = threading.Lock()


def get_transcriber(settings: Settings, remedy: str = "send ref_text") -> Transcriber:
    """The process's Whisper, loaded on first need. When it cannot be had (not on the volume
    with downloads off, the hub down, a broken snapshot), the job fails alone with one sentence
    saying how to give a transcript (`remedy`); the worker is not replaced: jobs that bring a
    transcript keep working on it."""
    global _transcriber, _failed_at, _failed_why
    if _transcriber is None:
        with _lock:
            if _transcriber is None:
                if _failed_at is not None and time.monotonic() - _failed_at < RETRY_AFTER_SECONDS:
                    raise _unavailable(settings, remedy, _failed_why)
                device = loaded_model.get_model(settings).device  # beside the TTS model
                why = "it is not on the volume and ALLOW_MODEL_DOWNLOAD is false" if not settings.allow_model_download \
                    else "it is not on the volume and could not be downloaded"
                store = model_cache.ModelStore.from_settings(settings)
                try:
                    free = None if not settings.allow_model_download else _free_mb_unless_present(store, settings)
                    if free is not None and free < ASR_DOWNLOAD_MB + settings.min_free_disk_mb:
                        why = (f"it is not on the volume, and the disk of {store.hub_dir} has {free} MB free, too "
                               f"little to download it (about {ASR_DOWNLOAD_MB} MB beside MIN_FREE_DISK_MB)")
                        raise ModelLoadError(why)
                    folder = store.hub_snapshot(settings.asr_model, download=settings.allow_model_download)
                    why = "its copy on the volume could not be loaded"
                    _transcriber = Transcriber(folder, device)
                except ModelLoadError as exc:
                    _failed_at, _failed_why = time.monotonic(), why
                    log.error("the ASR model is unavailable: %s", exc.message)
                    raise _unavailable(settings, remedy, why) from None
    return _transcriber


def _free_mb_unless_present(store: model_cache.ModelStore, settings: Settings) -> int | None:
    """Megabytes free where ASR_MODEL would be downloaded; None when it is already there (or the
    disk cannot be asked)."""
    try:
        store.hub_snapshot(settings.asr_model, download=False)
        return None
    except ModelLoadError:
        pass
    for folder in (store.hub_dir, *store.hub_dir.parents):
        try:
            return shutil.disk_usage(folder).free // 2**20
        except OSError:
            continue
    return None


def _unavailable(settings: Settings, remedy: str, why: str) -> TranscriptUnavailable:
    return TranscriptUnavailable(
        f"The voice has no transcript and speech recognition ({settings.asr_model}) is unavailable on this worker "
        f"({why}): {remedy}."
    )


def transcribe(audio: np.ndarray, rate: int, language: str | None, settings: Settings,
               remedy: str = "send ref_text") -> str:
    text = get_transcriber(settings, remedy)(resample(audio, rate, WHISPER_RATE), language)
    if not any(ch.isalnum() for ch in text):
        raise AudioError("No speech could be transcribed from the voice; send its transcript as ref_text.")
    return text
