"""The voice_url client: an HTTP(S) GET hardened against server-side request forgery and slow
servers. Every address a host resolves to must be public (IPv4 carried inside IPv6 included), the
connection goes to the address checked (a second DNS answer cannot move it), every redirect is
checked like the first hop, and the whole fetch ends by VOICE_URL_TIMEOUT.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from config import Settings
from errors import InvalidInput, LimitExceeded, VoiceFetchError, os_error, preview

MAX_REDIRECTS = 3
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


def fetch(url: str, path: Path, settings: Settings) -> None:
    """Fetch `voice_url` into `path`, at most MAX_VOICE_BYTES, from public addresses only (unless
    ALLOW_PRIVATE_URLS), over https only (unless ALLOW_HTTP_URLS), following up to MAX_REDIRECTS
    redirects, each hop checked like the first. The whole fetch (every lookup, connection, TLS
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
                location = _get(conn, parts, settings, path, deadline)
            finally:
                timer.cancel()
                conn.close()
            if location is None:
                return
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
