"""The voices a job's `voice_name` reads, kept by the HTTP door's voice endpoints: stored, listed,
deleted. One layout for both doors: `<S3_VOICES_PREFIX><name><ext>` with its transcript sidecar
`<stem>.txt`, in the bucket, or without S3 in a local folder laid out the same (`LocalFolder`,
under VOICES_DIR). With S3, a voice stored through this door is the voice a queue job's
`voice_name` reads; the queue door reads the bucket only.

A stored voice is checked as a job's voice is (its name, size, audio and transcript); the
speaker's consent is kept with it as metadata (`f5-consent`).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import soundfile as sf

import audio_io
from config import Settings
from errors import AudioError, InvalidInput, LimitExceeded, StorageError, VoiceNotFound, preview
from job_schema import parse_voice
from checkpoints import SAMPLE_RATE
from voices import candidate_names, check_voice_name, sidecar_key_for

CONSENT_KEY, CREATED_KEY = "f5-consent", "f5-created"
#: libsndfile's name of a container -> the extension a voice in it is stored with.
EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac", "MP3": ".mp3", "OGG": ".ogg"}
MAX_CONSENT_CHARS = 200


class LocalFolder:
    """A folder that plays the bucket's role for voices (S3Storage's voice methods, on files):
    `<root>/<key>`, each object's metadata in a hidden `.<name>.json` beside it, every write
    through a temporary name (several workers may share the folder on a network volume)."""

    place = "in the voices folder (VOICES_DIR)"
    #: What a voice's identity names as its store (voice_cache keys prepared voices by it).
    bucket = "voices-folder"

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        path = (self.root / key).absolute()
        if self.root.absolute() not in path.parents:  # keys are built from checked names: never
            raise InvalidInput("voice_name must be a plain file name (no '/' or '..').")
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.json")

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def head(self, key: str) -> str | None:
        """The file's tag (size and modification time: what changes when it is stored again), or None."""
        try:
            stat = self.path(key).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def download(self, key: str, target: Path, max_bytes: int) -> str:
        path = self.path(key)
        try:
            stat = path.stat()
            if stat.st_size > max_bytes:
                raise LimitExceeded(f"'{key}' is {stat.st_size} bytes; at most {max_bytes} bytes are accepted.")
            data = path.read_bytes()
        except FileNotFoundError:  # removed since it was found
            raise VoiceNotFound(f"The voice '{preview(key)}' is no longer {self.place}.") from None
        except OSError as exc:
            raise StorageError(f"Could not read the voice '{preview(key)}' {self.place} ({type(exc).__name__}).") \
                from None
        target.write_bytes(data)  # the job directory's own errors are the caller's to map
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def read_text(self, key: str, max_bytes: int = 64 * 1024) -> tuple[str, dict] | None:
        path = self.path(key)
        try:
            data = path.read_bytes()[: max_bytes + 1]
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Could not read '{preview(key)}' {self.place} ({type(exc).__name__}).") from None
        if len(data) > max_bytes:
            raise LimitExceeded(f"'{key}' is over {max_bytes} bytes.")
        return data.decode("utf-8", errors="replace"), self.metadata(key)

    def metadata(self, key: str) -> dict:
        try:
            return json.loads(self._meta_path(self.path(key)).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def write_text(self, key: str, text: str, metadata: dict | None = None) -> None:
        self._write(self.path(key), text.encode("utf-8"), metadata)

    def upload(self, path: Path, key: str, content_type: str, metadata: dict | None = None) -> None:
        self._write(self.path(key), path.read_bytes(), metadata)

    def _write(self, path: Path, data: bytes, metadata: dict | None) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for target, content in ((self._meta_path(path), json.dumps(metadata or {}).encode()), (path, data)):
                # of this write alone: two requests may store the same voice's transcript at once
                tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex}.tmp")
                try:
                    tmp.write_bytes(content)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
        except OSError as exc:  # a full or read-only folder: this store's failure, not the worker's
            raise StorageError(f"Could not write '{preview(path.name)}' {self.place} ({type(exc).__name__}: "
                               f"{exc.strerror or exc}).") from None

    def delete(self, key: str) -> None:
        path = self.path(key)
        for target in (path, self._meta_path(path)):
            with suppress(FileNotFoundError):
                target.unlink()

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        folder = self.path(prefix + "x").parent
        if not folder.is_dir():
            return []
        return [(prefix + p.name, p.stat().st_mtime) for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".")]


@dataclass(frozen=True)
class StoredVoice:
    """A voice as the voice endpoints describe it: its id is its name (what `voice` and
    `voice_name` take), with its extension where it was stored under one."""

    id: str
    created_at: int


class VoiceStore:
    """The voices of one worker: `storage` is its S3Storage, or a LocalFolder without a bucket."""

    def __init__(self, settings: Settings, storage):
        self.settings, self.storage = settings, storage

    def _key(self, name: str) -> str:
        return self.settings.s3_voices_prefix + name

    def create(self, name: str, recording: Path, consent: str, ref_text: str | None = None) -> StoredVoice:
        """`recording` stored as the voice `name` (any voice of that name before it replaced, with
        its transcript), checked as a job's voice is; `ref_text`: what it says (else Whisper
        transcribes it at its first job and keeps the transcript beside it)."""
        s = self.settings
        parse_voice({"voice_name": name, **({"ref_text": ref_text} if ref_text else {})})
        consent = (consent or "").strip()
        if not consent or len(consent) > MAX_CONSENT_CHARS or not consent.isprintable():
            raise InvalidInput(f"Invalid input: consent: give the id or a note of the speaker's consent to this "
                               f"voice (1 to {MAX_CONSENT_CHARS} printable characters): a cloned voice is "
                               "someone's voice.")
        size = recording.stat().st_size
        if size > s.max_voice_bytes:
            raise LimitExceeded(f"The voice is {size} bytes; at most {s.max_voice_bytes} bytes are accepted.")
        audio, rate = audio_io.read_audio(recording, s.max_voice_seconds, keep_seconds=s.ref_clip_seconds + 1)
        audio_io.prepare_reference(audio, rate, SAMPLE_RATE, s.ref_clip_seconds, s.min_voice_seconds)
        ext = EXTENSIONS.get(sf.info(str(recording)).format)
        if ext is None:
            raise AudioError("The voice is not a readable audio file (WAV, FLAC, OGG or MP3 expected).")
        suffix = PurePosixPath(name).suffix.lower()
        stored = name if suffix in EXTENSIONS.values() else name + ext
        self.remove(name)  # a sibling of another extension would be found first
        created = int(time.time())
        self.storage.upload(recording, self._key(stored), audio_io.FORMATS[ext[1:]][2],
                            {CONSENT_KEY: quote(consent), CREATED_KEY: str(created)})
        if ref_text:  # as a person stores it: no metadata, so it serves this recording
            self.storage.write_text(sidecar_key_for(self._key(stored)), ref_text.strip())
        return StoredVoice(name, created)

    def remove(self, name: str) -> bool:
        """Every recording stored under `name` (and their transcripts); whether there was one."""
        found = False
        for candidate in candidate_names(check_voice_name(name)):
            suffix = PurePosixPath(candidate).suffix.lower()
            if suffix and suffix not in EXTENSIONS.values():
                continue  # never a transcript (`alice.txt`) or anything else that is not a recording
            key = self._key(candidate)
            if self.storage.exists(key):
                found = True
                self.storage.delete(key)
                self.storage.delete(sidecar_key_for(key))
        return found

    def delete(self, name: str) -> None:
        if not self.remove(name):
            raise VoiceNotFound(f"No voice named '{preview(name)}' under '{self.settings.s3_voices_prefix}' "
                                f"{getattr(self.storage, 'place', 'in the bucket')}.")

    def voices(self) -> list[StoredVoice]:
        """Every stored recording, by the name a job gives it (without its extension)."""
        prefix = self.settings.s3_voices_prefix
        found = {}
        for key, modified in self.storage.listing(prefix):
            rest = PurePosixPath(key[len(prefix):])
            if str(rest.parent) == "." and rest.suffix.lower() in EXTENSIONS.values():
                found.setdefault(rest.stem, int(modified))
        return [StoredVoice(name, created) for name, created in sorted(found.items())]
