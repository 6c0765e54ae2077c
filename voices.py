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
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Protocol
from urllib.parse import quote, urljoin, urlsplit

from audio_io import VOICE_EXTENSIONS
from config import Settings
from errors import InvalidInput, LimitExceeded, VoiceFetchError, VoiceNotFound, os_error, preview

VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")
MAX_REDIRECTS = 3
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

    storage: object = field(repr=False)
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
    path: Path
    #: The label of the source it came from (`SOURCES`): name, url or base64.
    source: str
    #: Its transcript's place beside it; None: the source keeps none.
    sidecar: Sidecar | None = None


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


def from_s3(storage, settings: Settings, name: str, job_dir: Path) -> StagedVoice:
    if storage is None:
        raise InvalidInput("voice_name needs S3 (set S3_BUCKET); send voice_url or voice_base64 instead.")
    for candidate in [settings.s3_voices_prefix + c for c in candidate_names(check_voice_name(name))]:
        if storage.exists(candidate):
            path = voice_path(job_dir, candidate)
            try:
                etag = storage.download(candidate, path, settings.max_voice_bytes)
            except OSError as exc:
                raise os_error(exc, "the voice", "JOB_TMP_DIR", path) from None
            return StagedVoice(path, "name", S3Sidecar(storage, sidecar_key_for(candidate), candidate, etag))
    raise VoiceNotFound(f"No voice named '{preview(name)}' under '{settings.s3_voices_prefix}' in the bucket.")


def from_base64(data: str, settings: Settings, job_dir: Path) -> StagedVoice:
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
    path = job_dir / "voice"
    try:
        path.write_bytes(raw)
    except OSError as exc:
        raise os_error(exc, "the voice", "JOB_TMP_DIR", path) from None
    return StagedVoice(path, "base64")


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


def stage(voice, folder: Path, settings: Settings, storage) -> StagedVoice:
    """`voice` (a VoiceInput) staged into `folder` (made if need be) by its source's stager;
    `storage` is the job's S3Storage, or None without a bucket."""
    source = source_for(voice)
    folder.mkdir(exist_ok=True)
    return source.stage(getattr(voice, source.field), folder, settings, storage)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refuse_address(ip) -> bool:
    inner = _embedded_ipv4(ip)
    return any(not a.is_global or a.is_multicast or a.is_reserved or a.is_unspecified
               or getattr(a, "is_site_local", False)  # fec0::/10: deprecated, but still routed inside some networks
               for a in (ip, inner) if a is not None)


def _resolve(host: str, port: int, settings: Settings, seconds: float) -> str:
    """The address to connect to; every address the name resolves to must be public. The
    lookup runs in a thread of its own, so a slow resolver cannot hold the job past its deadline."""
    answer: dict = {}

    def lookup():
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            answer["error"] = exc

    thread = threading.Thread(target=lookup, name="voice-url-dns", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _TooSlow()
    if "error" in answer:
        raise VoiceFetchError(f"voice_url host '{preview(host)}' could not be resolved.")
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in answer["infos"]]
    if not settings.allow_private_urls and any(_refuse_address(ip) for ip in addresses):
        raise VoiceFetchError("voice_url points to a private, loopback, link-local or reserved address; refused.")
    return str(addresses[0])


class _TooSlow(Exception):
    """The fetch ran past VOICE_URL_TIMEOUT."""


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address resolved (and checked) beforehand: a second DNS answer cannot redirect
    the request. `abort()` ends whatever the connection is doing, from another thread: a
    socket timeout only bounds each read, and a server sending a byte every half second
    would never trip it."""

    def __init__(self, host, ip, **kwargs):
        super().__init__(host, **kwargs)
        self._ip = ip
        self._wake: socket.socket | None = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        # A second handle on the same socket: shutting it down wakes a read on the first, also
        # once TLS has taken the first over.
        self._wake = sock.dup()
        return sock

    def connect(self):
        self.sock = self._open()

    def abort(self):
        try:
            if self._wake is not None:
                self._wake.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        super().close()
        if self._wake is not None:
            self._wake.close()
            self._wake = None


class _PinnedHTTPSConnection(_PinnedHTTPConnection, http.client.HTTPSConnection):
    """HTTPS to the checked address, with SNI and certificate checks for the host name."""

    def connect(self):
        self.sock = self._context.wrap_socket(self._open(), server_hostname=self.host)


def from_url(url: str, settings: Settings, job_dir: Path) -> StagedVoice:
    """Fetch `voice_url` into the job directory. The whole fetch (every lookup, connection, TLS
    handshake, header and body, across redirects) ends by VOICE_URL_TIMEOUT: a timer aborts the
    connection in use when the time is up."""
    deadline = time.monotonic() + settings.voice_url_timeout_s
    try:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            allowed = ("https", "http") if settings.allow_http_urls else ("https",)
            if parts.scheme not in allowed:
                raise InvalidInput(f"voice_url must be an {' or '.join(allowed)} URL.")
            if not parts.hostname:
                raise InvalidInput("voice_url has no host.")
            if parts.username or parts.password:
                raise InvalidInput("voice_url must not carry credentials.")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise InvalidInput("voice_url has an invalid port.") from None
            ip = _resolve(parts.hostname, port, settings, _left(deadline))
            if parts.scheme == "https":
                conn = _PinnedHTTPSConnection(parts.hostname, ip, port=port, timeout=_left(deadline),
                                              context=ssl.create_default_context())
            else:
                conn = _PinnedHTTPConnection(parts.hostname, ip, port=port, timeout=_left(deadline))
            timer = threading.Timer(_left(deadline), conn.abort)
            timer.daemon = True
            timer.start()
            try:
                location = _get(conn, parts, settings, job_dir / "voice", deadline)
            finally:
                timer.cancel()
                conn.close()
            if location is None:
                return StagedVoice(job_dir / "voice", "url")
            url = urljoin(url, location)  # the next hop is checked like the first
    except _TooSlow:
        raise VoiceFetchError(f"voice_url took over {settings.voice_url_timeout_s:g} s.") from None
    raise VoiceFetchError(f"voice_url redirected more than {MAX_REDIRECTS} times.")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TooSlow()
    return left


def _get(conn, parts, settings: Settings, path: Path, deadline: float) -> str | None:
    """One request: the body written to `path` (None returned), or a redirect's location."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers={"User-Agent": "f5-tts-runpod-worker", "Accept": "audio/*,*/*"})
        response = conn.getresponse()
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            if not location:
                raise VoiceFetchError("voice_url redirected without a location.")
            return location
        if response.status != 200:
            raise VoiceFetchError(f"voice_url answered HTTP {response.status}.")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > settings.max_voice_bytes:
            raise LimitExceeded(f"voice_url is {length} bytes; at most {settings.max_voice_bytes} are accepted.")
        size = 0
        with open(path, "wb") as fh:
            while block := response.read1(1 << 16):
                size += len(block)
                if size > settings.max_voice_bytes:
                    raise LimitExceeded(f"voice_url is over {settings.max_voice_bytes} bytes.")
                _left(deadline)
                try:
                    fh.write(block)
                except OSError as exc:
                    raise os_error(exc, "the voice", "JOB_TMP_DIR", path) from None
        _left(deadline)  # an aborted read ends like the body's end: the body may be cut short
        if length and length.isdigit() and size != int(length):
            raise http.client.IncompleteRead(b"", int(length) - size)
        return None
    except (OSError, http.client.HTTPException) as exc:
        _left(deadline)  # an aborted connection fails as whatever it was doing: say why
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise _TooSlow() from None
        raise VoiceFetchError(f"voice_url could not be fetched ({type(exc).__name__}).") from None
