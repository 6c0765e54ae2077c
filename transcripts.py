"""The reference's transcript: the caller's, the voice's sidecar (a `voices.Sidecar`, which
reads and writes itself), or Whisper's (`asr`) on the clipped reference, remembered by the
recording's identity (its S3 key and ETag, or its content's sha256) and language. Whisper's
transcript is written back as the voice's sidecar once the job has succeeded.

Sidecars in S3 (`voices.S3Sidecar`): one you store as `<stem>.txt` is used for every recording of
that stem. One the worker writes names the recording it was made from (key and ETag, as object
metadata) and is used for that recording only: a sibling `bob.flac` never gets `bob.wav`'s
transcript, and a re-uploaded `bob.wav` is transcribed again. The worker writes only where no
sidecar is, or over its own for the same key, and only a transcript whose language Whisper chose
itself.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import asr
from config import MAX_TRANSCRIPT_CHARS, Settings
from errors import LimitExceeded, StorageError, preview
from invisible import without_invisible
from voices import Sidecar, StagedVoice

log = logging.getLogger("f5worker.transcripts")


@dataclass(frozen=True)
class Transcript:
    text: str
    source: str  # request, sidecar or asr
    store: Sidecar | None = None  # where to write it once the job succeeded


class Transcripts:
    """Finds each job's transcript; keeps Whisper's by (recording's identity, language)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = TranscriptCache()

    def find(self, ref_text: str | None, language: str | None, voice: StagedVoice, reference, rate: int) -> Transcript:
        if ref_text:
            return Transcript(ref_text, "request")
        sidecar = voice.sidecar
        may_store = sidecar is not None
        if sidecar is not None:
            stored = sidecar.read()
            if stored is not None:
                text, meta = without_invisible(stored[0]).strip(), stored[1]  # Windows editors begin files with a BOM
                if sidecar.serves(meta):
                    if len(text) > MAX_TRANSCRIPT_CHARS:
                        raise LimitExceeded(
                            f"The transcript {preview(sidecar.where)} is over {MAX_TRANSCRIPT_CHARS} characters.")
                    if text:
                        return Transcript(text, "sidecar")
                may_store = sidecar.may_replace(meta)
        cache_key = (voice.identity or hashlib.sha256(voice.path.read_bytes()).hexdigest(), language)
        text = self.cache.get(cache_key)
        if text is None:
            remedy = "send ref_text"
            if sidecar is not None:
                remedy += f", or store the transcript as {preview(sidecar.where)}"
            text = asr.transcribe(reference, rate, language, self.settings, remedy)
            self.cache.put(cache_key, text)
        return Transcript(text, "asr", sidecar if may_store and language is None else None)

    @staticmethod
    def keep(transcript: Transcript) -> None:
        """Write Whisper's transcript back beside the voice (call it after the job succeeded), so
        the next job with that recording skips ASR. A failure costs only that."""
        if transcript.store is None:
            return
        try:
            transcript.store.write(transcript.text)
        except StorageError as exc:
            log.warning("could not store the transcript sidecar: %s", exc.message)


class TranscriptCache:
    """Whisper's transcripts by (recording's identity, language asked for); the oldest go first."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> str | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key, text: str) -> None:
        with self._lock:
            self._items[key] = text
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
