"""What a worker has read, it keeps: each voice's prepared reference (decoded, resampled and
clipped for the model) in memory across jobs, by what names its recording exactly, the least
recently used dropped past VOICE_CACHE_MB.

A recording is named by `voices.StagedVoice.identity`: an S3 voice by its bucket, key and ETag,
asked with one HEAD per job (no freshness window: any window would serve a re-uploaded voice's old
recording for its length, and a HEAD costs a few milliseconds beside the store); a base64 voice by
its content's sha256; a URL voice by the sha256 of what was fetched (it is fetched every time, and
spares only the decoding). A job gets only the recording it named: a new ETag or other bytes are
another entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

import voices
from config import Settings


class VoiceCache:
    """Prepared references by recording identity, within `max_bytes` (0: none kept)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    def get(self, identity: str | None) -> np.ndarray | None:
        with self._lock:
            if identity not in self._items:
                return None
            self._items.move_to_end(identity)
            return self._items[identity]

    def put(self, identity: str | None, audio: np.ndarray) -> None:
        if identity is None or audio.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(identity, None)
            self.nbytes += audio.nbytes - (old.nbytes if old is not None else 0)
            self._items[identity] = audio
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._items)

    def stage(self, voice, folder: Path, settings: Settings, storage) -> tuple[voices.StagedVoice, np.ndarray | None]:
        """`voice` (a VoiceInput) as `voices.stage` gives it, and its prepared reference when this
        recording's is kept (then an S3 or base64 voice is not staged at all: only its identity
        is read)."""
        if self.max_bytes:
            known = voices.identify(voice, settings, storage)
            if known is not None and (prepared := self.get(known.identity)) is not None:
                return known, prepared
            if known is not None and known.source == "name":  # staged by the key just found: no second search
                voice = voice.model_copy(update={"voice_name": known.sidecar.voice_key[len(settings.s3_voices_prefix):]})
        staged = voices.stage(voice, folder, settings, storage)
        if staged.identity is None and self.max_bytes:
            staged = voices.StagedVoice(staged.path, staged.source, staged.sidecar,
                                        voices.content_identity(staged.path.read_bytes()))
        return staged, self.get(staged.identity)
