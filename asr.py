"""Whisper: transcribing a reference when the caller gives no transcript, and hearing a verified
job's audio back (`Transcriber.hear`, words timed).

The model (ASR_MODEL, from <models>/hub like every other model) is loaded on first need only:
never at start and never on the synthesis import path (transformers is imported here, lazily).
The decoded array is passed in, so no FFmpeg is involved.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from functools import cached_property

import numpy as np

import loaded_model
import model_cache
from audio_io import resample
from config import Settings
from errors import AudioError, InvalidInput, ModelLoadError, TranscriptUnavailable, VerifyUnavailable
from verification import Heard

log = logging.getLogger("f5worker.asr")

WHISPER_RATE = 16_000
#: The audio Whisper hears in one pass.
WINDOW_SECONDS = 30
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

    def hear(self, waves: list[np.ndarray], rate: int, language: str | None) -> list[Heard]:
        """What is said in each of `waves` (a verified job's chunks, batched in one call), with each
        word's time from Whisper's cross-attention (transformers' pipeline, `return_timestamps="word"`).
        `language`: what the chunks are written in; one the model does not know is detected instead
        (an English-only model is told neither language nor task: it refuses both). Greedy
        decoding: the same audio is heard the same way, so a verified job is reproducible."""
        config = self.model.generation_config
        if not getattr(config, "is_multilingual", True):
            asked = {}
        else:
            known = getattr(config, "lang_to_id", None) or {}
            asked = {"language": language if f"<|{language}|>" in known else None, "task": "transcribe"}
        audio = [resample(wave, rate, WHISPER_RATE) for wave in waves]
        # Whisper hears 30 s at a time: a longer chunk (rare: chunks are sized to about 22 s with
        # their reference) is heard on its own, by the pipeline's long-form decoding.
        short = [n for n, a in enumerate(audio) if len(a) <= WINDOW_SECONDS * WHISPER_RATE]
        heard: dict[int, Heard] = {}
        for members in (short, [n for n in range(len(audio)) if n not in short]):
            if not members:
                continue
            with self.lock, self.torch.inference_mode():
                out = self.pipeline([{"raw": audio[n], "sampling_rate": WHISPER_RATE} for n in members],
                                    batch_size=len(members) if members is short else 1, return_timestamps="word",
                                    generate_kwargs={**asked, "num_beams": 1})
            for n, said in zip(members, out):
                words = [(w["text"].strip(), float(w["timestamp"][0] or 0.0),
                          None if w["timestamp"][1] is None else float(w["timestamp"][1]))
                         for w in said.get("chunks", []) if w["text"].strip()]
                heard[n] = Heard(said["text"].strip(), words)
        return [heard[n] for n in range(len(audio))]

    @cached_property
    def pipeline(self):
        from transformers import pipeline

        return pipeline("automatic-speech-recognition", model=self.model, tokenizer=self.processor.tokenizer,
                        feature_extractor=self.processor.feature_extractor, device=self.model.device,
                        dtype=self.dtype)


#: The loaded models by id (ASR_MODEL, and VERIFY_ASR_MODEL where it differs), and for a model
#: that could not be had, when and why.
_loaded: dict[str, Transcriber] = {}
_failed: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def get_transcriber(settings: Settings, remedy: str = "send ref_text") -> Transcriber:
    """The process's Whisper (ASR_MODEL), loaded on first need. When it cannot be had (not on the
    volume with downloads off, the hub down, a broken snapshot), the job fails alone with one
    sentence saying how to give a transcript (`remedy`); the worker is not replaced: jobs that
    bring a transcript keep working on it."""
    try:
        return _get(settings, settings.asr_model)
    except _Unavailable as exc:
        raise TranscriptUnavailable(
            f"The voice has no transcript and speech recognition ({settings.asr_model}) is unavailable on this "
            f"worker ({exc}): {remedy}.") from None


def get_listener(settings: Settings) -> Transcriber:
    """The Whisper that hears a verified job's audio (VERIFY_ASR_MODEL, ASR_MODEL by default);
    asked for before any synthesis, so that a job that cannot be verified fails at once."""
    model = settings.verify_asr_model
    try:
        return _get(settings, model)
    except _Unavailable as exc:
        raise VerifyUnavailable(f"verify: speech recognition ({model}) is unavailable on this worker ({exc}); send "
                                "the job without verify.") from None


class _Unavailable(Exception):
    """Why a model cannot be had, as the clause of a sentence."""


def _get(settings: Settings, model_id: str) -> Transcriber:
    transcriber = _loaded.get(model_id)
    if transcriber is not None:
        return transcriber
    with _lock:
        if model_id in _loaded:
            return _loaded[model_id]
        failed = _failed.get(model_id)
        if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_SECONDS:
            raise _Unavailable(failed[1])
        device = loaded_model.get_model(settings).device  # beside the TTS model
        why = "it is not on the volume and ALLOW_MODEL_DOWNLOAD is false" if not settings.allow_model_download \
            else "it is not on the volume and could not be downloaded"
        store = model_cache.ModelStore.from_settings(settings)
        try:
            free = None if not settings.allow_model_download else _free_mb_unless_present(store, model_id)
            if free is not None and free < ASR_DOWNLOAD_MB + settings.min_free_disk_mb:
                why = (f"it is not on the volume, and the disk of {store.hub_dir} has {free} MB free, too "
                       f"little to download it (about {ASR_DOWNLOAD_MB} MB beside MIN_FREE_DISK_MB)")
                raise ModelLoadError(why)
            folder = store.hub_snapshot(model_id, download=settings.allow_model_download)
            why = "its copy on the volume could not be loaded"
            _loaded[model_id] = Transcriber(folder, device)
        except ModelLoadError as exc:
            _failed[model_id] = (time.monotonic(), why)
            log.error("the ASR model %s is unavailable: %s", model_id, exc.message)
            raise _Unavailable(why) from None
        return _loaded[model_id]


def _free_mb_unless_present(store: model_cache.ModelStore, model_id: str) -> int | None:
    """Megabytes free where `model_id` would be downloaded; None when it is already there (or the
    disk cannot be asked)."""
    try:
        store.hub_snapshot(model_id, download=False)
        return None
    except ModelLoadError:
        pass
    for folder in (store.hub_dir, *store.hub_dir.parents):
        try:
            return shutil.disk_usage(folder).free // 2**20
        except OSError:
            continue
    return None


def transcribe(audio: np.ndarray, rate: int, language: str | None, settings: Settings,
               remedy: str = "send ref_text") -> str:
    text = get_transcriber(settings, remedy)(resample(audio, rate, WHISPER_RATE), language)
    if not any(ch.isalnum() for ch in text):
        raise AudioError("No speech could be transcribed from the voice; send its transcript as ref_text.")
    return text
