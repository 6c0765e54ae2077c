"""Staging a job's voice into its job directory: from S3 by name, from a URL, or from base64.

One call, `stage`, picks the stager for the source the voice gives (`SOURCES`: one row per
source); a new source is one more row and one more stager. A staged voice carries its sidecar,
the transcript kept beside it, as an object that reads and writes itself (`S3Sidecar`).

A caller's input never becomes a path: the voice is always written as `<job_dir>/voice<ext>`,
names are plain (no `/`, no `..`), and S3 keys stay under the voices prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Protocol
from urllib.parse import quote

import url_fetch
from audio_io import VOICE_EXTENSIONS
from config import Settings
from errors import InvalidInput, LimitExceeded, VoiceNotFound, os_error, preview

VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")
#: Object metadata of a sidecar the worker wrote: the recording it transcribes.
SIDECAR_VOICE_KEY, SIDECAR_VOICE_ETAG = "f5-voice-key", "f5-voice-etag"


class Sidecar(Protocol):
    """A voice's transcript kept beside it (S3 today; a `<name>.txt` file beside a voice on the
    volume would be one more class). `transcripts` reads it, uses what it holds where it `serves`
    this recording, and writes Whisper's transcript over it only where it `may_replace` it."""

    #: How messages name it ("store the transcript as ...").
    where: str

    def read(self) -> tuple[str, dict] | None:
        """The text stored and its metadata, or None when there is none."""

    def serves(self, metadata: dict) -> bool:
        """Whether a transcript stored with `metadata` is this recording's."""

    def may_replace(self, metadata: dict) -> bool:
        """Whether the worker may write over a transcript stored with `metadata`."""

    def write(self, text: str) -> None:
        """Store `text` as this recording's transcript (raises StorageError)."""


@dataclass(frozen=True)
class S3Sidecar:
    """`<stem>.txt` beside a voice in S3. One a person stores (no metadata) serves every recording
    of that stem; one the worker writes names the recording it transcribes (key and ETag, as
    object metadata) and serves that recording only, and the worker writes only over its own for
    the same key."""

    storage: object = field(repr=False, compare=False)
    key: str
    voice_key: str
    voice_etag: str

    @property
    def where(self) -> str:
        return self.key

    def read(self) -> tuple[str, dict] | None:
        return self.storage.read_text(self.key)

    def serves(self, metadata: dict) -> bool:
        owner = metadata.get(SIDECAR_VOICE_KEY)
        return owner is None or (owner == quote(self.voice_key) and metadata.get(SIDECAR_VOICE_ETAG) == self.voice_etag)

    def may_replace(self, metadata: dict) -> bool:
        return metadata.get(SIDECAR_VOICE_KEY) == quote(self.voice_key)  # never over yours, nor over a sibling's

    def write(self, text: str) -> None:
        self.storage.write_text(self.key, text, {SIDECAR_VOICE_KEY: quote(self.voice_key),
                                                 SIDECAR_VOICE_ETAG: self.voice_etag})


@dataclass(frozen=True)
class StagedVoice:
    #: Where it was written in the job directory; None for a voice only identified (`identify`).
    path: Path | None
    #: The label of the source it came from (`SOURCES`): name, url or base64.
    source: str
    #: Its transcript's place beside it; None: the source keeps none.
    sidecar: Sidecar | None = None
    #: What names this recording exactly (`s3://<bucket>/<key>#<ETag>`, or `sha256:<content>`);
    #: None: not known until its content is read.
    identity: str | None = None


def check_voice_name(name: str) -> str:
    if not VOICE_NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            "voice_name must be a plain file name (letters, digits, '.', '_', '-', spaces; no '/' or '..')."
        )
    return name


def sidecar_key_for(key: str) -> str:
    """voices/alice.wav -> voices/alice.txt (voices/alice -> voices/alice.txt)."""
    path = PurePosixPath(key)
    stem = path.stem if path.suffix.lower() in VOICE_EXTENSIONS else path.name
    return str(path.with_name(stem + ".txt"))


def candidate_names(name: str) -> list[str]:
    """The names a voice may be kept under, in the order they are tried: `name` itself, then,
    without a suffix, `name` with each of VOICE_EXTENSIONS."""
    return [name] + ([name + ext for ext in VOICE_EXTENSIONS] if not PurePosixPath(name).suffix else [])


def voice_path(job_dir: Path, name: str) -> Path:
    """Where a voice stored as `name` is staged: `voice` with the name's suffix, where it is a
    voice's (decoders go by it)."""
    suffix = PurePosixPath(name).suffix.lower()
    return job_dir / ("voice" + (suffix if suffix in VOICE_EXTENSIONS else ""))


def find_in_s3(storage, settings: Settings, name: str, look=None) -> tuple[str, object]:
    """The key a voice named `name` is stored under, and what `look(key)` (one HEAD per name
    tried; `storage.exists` by default) said of it."""
    if storage is None:
        raise InvalidInput("voice_name needs S3 (set S3_BUCKET); send voice_url or voice_base64 instead.")
    for candidate in [settings.s3_voices_prefix + c for c in candidate_names(check_voice_name(name))]:
        found = (look or storage.exists)(candidate)
        if found:
            return candidate, found
    raise VoiceNotFound(f"No voice named '{preview(name)}' under '{settings.s3_voices_prefix}' "
                        f"{getattr(storage, 'place', 'in the bucket')}.")


def s3_voice(storage, key: str, etag: str, path: Path | None = None) -> StagedVoice:
    """The voice stored at `key` with `etag`, its sidecar and its identity."""
    return StagedVoice(path, "name", S3Sidecar(storage, sidecar_key_for(key), key, etag),
                       f"s3://{storage.bucket}/{key}#{etag}")


def from_s3(storage, settings: Settings, name: str, job_dir: Path) -> StagedVoice:
    candidate, _ = find_in_s3(storage, settings, name)
    path = voice_path(job_dir, candidate)
    try:
        etag = storage.download(candidate, path, settings.max_voice_bytes)  # what was read: it may have changed
    except OSError as exc:
        raise os_error(exc, "the voice", "JOB_TMP_DIR", path) from None
    return s3_voice(storage, candidate, etag, path)


def decoded_base64(data: str, settings: Settings) -> bytes:
    """The bytes of `voice_base64` (a data: URL or bare base64), within MAX_VOICE_BYTES."""
    if data.startswith("data:"):  # data:audio/wav;base64,....
        data = data.partition(",")[2]
    data = "".join(data.split())
    if len(data) * 3 // 4 > settings.max_voice_bytes:
        raise LimitExceeded(f"voice_base64 decodes to over {settings.max_voice_bytes} bytes.")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("voice_base64 is not valid base64.") from None
    if not raw:
        raise InvalidInput("voice_base64 is empty.")
    return raw


def from_base64(data: str, settings: Settings, job_dir: Path) -> StagedVoice:
    raw = decoded_base64(data, settings)
    path = job_dir / "voice"
    try:
        path.write_bytes(raw)
    except OSError as exc:
        raise os_error(exc, "the voice", "JOB_TMP_DIR", path) from None
    return StagedVoice(path, "base64")


def from_url(url: str, settings: Settings, job_dir: Path) -> StagedVoice:
    """Fetch `voice_url` into the job directory (`url_fetch`: public addresses only, the whole
    fetch by VOICE_URL_TIMEOUT)."""
    path = job_dir / "voice"
    url_fetch.fetch(url, path, settings)
    return StagedVoice(path, "url")


@dataclass(frozen=True)
class Source:
    """One way a voice is given: the VoiceInput field that holds it, the label results and logs
    name it by, and its stager, `stage(value, job_dir, settings, storage) -> StagedVoice`."""

    field: str
    label: str
    stage: Callable[[str, Path, Settings, object], StagedVoice]


#: Every source of a voice, by the VoiceInput field that holds it. The stagers look their
#: function up when called, so a test may replace one.
SOURCES: dict[str, Source] = {s.field: s for s in (
    Source("voice_name", "name", lambda name, job_dir, settings, storage: from_s3(storage, settings, name, job_dir)),
    Source("voice_url", "url", lambda url, job_dir, settings, storage: from_url(url, settings, job_dir)),
    Source("voice_base64", "base64", lambda data, job_dir, settings, storage: from_base64(data, settings, job_dir)),
)}


def source_for(voice) -> Source:
    """The source `voice` (a VoiceInput) gives: exactly one of SOURCES' fields is set."""
    given = [s for name, s in SOURCES.items() if getattr(voice, name, None) is not None]
    if len(given) != 1:
        raise InvalidInput(f"give exactly one of {', '.join(SOURCES)}.")
    return given[0]


def source_of(voice) -> str:
    """How results and logs name `voice`'s source: name, url or base64."""
    return source_for(voice).label


def identify(voice, settings: Settings, storage) -> StagedVoice | None:
    """`voice` (a VoiceInput) identified without staging it, where its source allows: S3 by its
    key and current ETag (a HEAD), base64 by its content; None for a URL (its content is known
    only once fetched). Raises what its stager would for a voice that is not there or not valid."""
    if voice.voice_name is not None:
        return s3_voice(storage, *find_in_s3(storage, settings, voice.voice_name, storage and storage.head))
    if voice.voice_base64 is not None:
        return StagedVoice(None, "base64", None, content_identity(decoded_base64(voice.voice_base64, settings)))
    return None


def content_identity(data: bytes) -> str:
    """The identity of a recording known by its content (base64 and URL voices)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage(voice, folder: Path, settings: Settings, storage) -> StagedVoice:
    """`voice` (a VoiceInput) staged into `folder` (made if need be) by its source's stager;
    `storage` is the job's S3Storage, or None without a bucket."""
    source = source_for(voice)
    folder.mkdir(exist_ok=True)
    return source.stage(getattr(voice, source.field), folder, settings, storage)

