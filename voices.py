"""Staging a job's voice into its job directory: from S3 by name, from a URL, or from base64.

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
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from audio_io import VOICE_EXTENSIONS
from config import Settings
from errors import InvalidInput, LimitExceeded, VoiceFetchError, VoiceNotFound

VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class StagedVoice:
    path: Path
    sidecar_key: str | None = None  # where the voice's transcript lives in S3, for voice_name


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


def from_s3(storage, settings: Settings, name: str, job_dir: Path) -> StagedVoice:
    if storage is None:
        raise InvalidInput("voice_name needs S3 (set S3_BUCKET); send voice_url or voice_base64 instead.")
    key = settings.s3_voices_prefix + check_voice_name(name)
    candidates = [key]
    if not PurePosixPath(name).suffix:
        candidates += [key + ext for ext in VOICE_EXTENSIONS]
    for candidate in candidates:
        if storage.exists(candidate):
            suffix = PurePosixPath(candidate).suffix.lower()
            path = job_dir / ("voice" + (suffix if suffix in VOICE_EXTENSIONS else ""))
            storage.download(candidate, path, settings.max_voice_bytes)
            return StagedVoice(path, sidecar_key_for(candidate))
    raise VoiceNotFound(f"No voice named '{name}' under '{settings.s3_voices_prefix}' in the bucket.")


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
    path.write_bytes(raw)
    return StagedVoice(path)


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
               for a in (ip, inner) if a is not None)


def _resolve(host: str, port: int, settings: Settings) -> str:
    """The address to connect to; every address the name resolves to must be public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise VoiceFetchError(f"voice_url host '{host}' could not be resolved.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not settings.allow_private_urls and any(_refuse_address(ip) for ip in addresses):
        raise VoiceFetchError("voice_url points to a private, loopback, link-local or reserved address; refused.")
    return str(addresses[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address resolved (and checked) beforehand, with SNI and certificate
    checks for the host name: a second DNS answer cannot redirect the request."""

    def __init__(self, host, ip, **kwargs):
        super().__init__(host, **kwargs)
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, ip, **kwargs):
        super().__init__(host, **kwargs)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


def from_url(url: str, settings: Settings, job_dir: Path) -> StagedVoice:
    deadline = time.monotonic() + settings.voice_url_timeout_s
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
        ip = _resolve(parts.hostname, port, settings)
        timeout = max(0.1, deadline - time.monotonic())
        if parts.scheme == "https":
            conn = _PinnedHTTPSConnection(parts.hostname, ip, port=port, timeout=timeout,
                                          context=ssl.create_default_context())
        else:
            conn = _PinnedHTTPConnection(parts.hostname, ip, port=port, timeout=timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers={"User-Agent": "f5-tts-runpod-worker", "Accept": "audio/*,*/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise VoiceFetchError("voice_url redirected without a location.")
                url = urljoin(url, location)
                continue  # the next hop is checked like the first
            if response.status != 200:
                raise VoiceFetchError(f"voice_url answered HTTP {response.status}.")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > settings.max_voice_bytes:
                raise LimitExceeded(f"voice_url is {length} bytes; at most {settings.max_voice_bytes} are accepted.")
            path = job_dir / "voice"
            size = 0
            with open(path, "wb") as fh:
                while block := response.read(1 << 16):
                    size += len(block)
                    if size > settings.max_voice_bytes:
                        raise LimitExceeded(f"voice_url is over {settings.max_voice_bytes} bytes.")
                    if time.monotonic() > deadline:
                        raise VoiceFetchError(f"voice_url took over {settings.voice_url_timeout_s:.0f} s.")
                    fh.write(block)
            return StagedVoice(path)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                raise VoiceFetchError(f"voice_url took over {settings.voice_url_timeout_s:.0f} s.") from None
            raise VoiceFetchError(f"voice_url could not be fetched ({type(exc).__name__}).") from None
        finally:
            conn.close()
    raise VoiceFetchError(f"voice_url redirected more than {MAX_REDIRECTS} times.")
