"""Transcribing a reference with Whisper when the caller gives no transcript.

The model (ASR_MODEL, from <models>/hub like every other model) is loaded on first need only:
never at start and never on the synthesis import path (transformers is imported here, lazily).
The decoded array is passed in, so no FFmpeg is involved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import numpy as np

import model_cache
from audio_io import resample
from config import Settings
from errors import AudioError, InvalidInput, ModelLoadError

log = logging.getLogger("f5worker.asr")

WHISPER_RATE = 16_000


class Transcriber:
    def __init__(self, repo_id: str, device: str, download: bool):
        started = time.perf_counter()
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        folder = model_cache.hub_snapshot(repo_id, download=download)
        dtype = model_cache.inference_dtype(device)
        try:
            self.processor = WhisperProcessor.from_pretrained(folder)
            self.model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
        except Exception as exc:
            raise ModelLoadError(f"The ASR model in {folder} could not be loaded: {type(exc).__name__}: {exc}") from exc
        self.device, self.dtype, self.torch = device, dtype, torch
        self.lock = threading.Lock()
        log.info("loaded ASR model %s on %s in %.2f s", repo_id, device, time.perf_counter() - started)

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
_lock = threading.Lock()


def get_transcriber(settings: Settings) -> Transcriber:
    global _transcriber
    if _transcriber is None:
        with _lock:
            if _transcriber is None:
                device = model_cache.get_model().device  # beside the TTS model
                _transcriber = Transcriber(settings.asr_model, device, settings.allow_model_download)
    return _transcriber


def transcribe(audio: np.ndarray, rate: int, language: str | None, settings: Settings) -> str:
    text = get_transcriber(settings)(resample(audio, rate, WHISPER_RATE), language)
    if not any(ch.isalnum() for ch in text):
        raise AudioError("No speech could be transcribed from the voice; send its transcript as ref_text.")
    return text


class TranscriptCache:
    """Transcripts of voices sent by URL or base64, by content hash; the oldest go first."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self._items[key] = text
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
