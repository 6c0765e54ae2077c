"""The result to the caller: uploaded to S3 with a presigned URL, inline as base64 (within
RunPod's payload limit), and copied to OUTPUT_DIR when that is on (`Delivery`); or, for a door
that answers with the audio itself, kept as the response's body (`BodyDelivery`)."""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path

import audio_io
from atomic import write_atomic
from config import Settings
from errors import LimitExceeded, os_error

log = logging.getLogger("f5worker.delivery")

#: Output formats that no other format shrinks much further: an oversized answer in one of them
#: is not told to ask for another.
COMPRESSED = ("mp3", "ogg", "opus")


class Delivery:
    """Delivers one worker's results; `storage` is its S3Storage, or None without a bucket."""

    def __init__(self, settings: Settings, storage):
        self.settings, self.storage = settings, storage

    def key(self, name: str) -> str:
        """The S3 key of a result file named `name` (`<job id>.<extension>`)."""
        return f"{self.settings.s3_output_prefix}{name}"

    def check_planned_size(self, return_base64: bool, fmt: str, samples: int, stream_fmt: str | None = None) -> None:
        """`check_inline_size` before any work, for `samples` of audio in `fmt` and, when the job
        streams, its pieces in `stream_fmt`: at least what the plan's audio encodes to."""
        least = audio_io.least_encoded_bytes(fmt, samples) or 0
        streamed = audio_io.least_encoded_bytes(stream_fmt, samples) if stream_fmt else 0
        self.check_inline_size(return_base64, least, fmt, planned=True, streamed=streamed)

    def check_inline_size(self, return_base64: bool, size: int, fmt: str, planned: bool = False,
                          streamed: int = 0) -> None:
        """What the answer carries must fit RunPod's payload limits (MAX_INLINE_BYTES of audio): the
        file when it is returned inline, and a streamed job's pieces (`streamed` bytes), which /run
        and /runsync return as well."""
        s = self.settings
        inline = size if self.storage is None or return_base64 else 0
        answer = inline + streamed
        if answer <= s.max_inline_bytes:
            return
        amount = f"{'would be at least' if planned else 'is'} {_human(answer)}, over the {_human(s.max_inline_bytes)}"
        if inline == 0:  # the pieces alone
            raise LimitExceeded(
                f"A streamed job's answer holds every piece of its audio: this one {amount} that /run and /runsync "
                "can return (RunPod refuses large payloads): send a shorter text, or send it to an endpoint that "
                "does not stream (with S3, its answer is a URL).")
        remedy = "drop return_base64 to get an S3 URL" if self.storage is not None else "configure S3_BUCKET"
        smaller = "" if fmt in COMPRESSED else ", ask for output_format mp3 or opus"
        what = "A streamed job's pieces and its audio together" if streamed else "The audio"
        raise LimitExceeded(f"{what} {amount} that can be returned inline (RunPod refuses large payloads): "
                            f"{remedy}{smaller}, or send a shorter text.")

    def deliver(self, path: Path, key: str, content_type: str, return_base64: bool, captions=None,
                streamed: int = 0) -> dict:
        """`path` to S3 as `key` and/or inline, and the local copy; and `captions`, a subtitle file
        (path, key, content type), beside it; `streamed`: bytes of audio the answer already holds
        in pieces. Whatever fails, the job leaves nothing behind: limits and local copies come
        before the uploads, and a failed upload removes the copies."""
        self.check_inline_size(return_base64, path.stat().st_size, path.suffix.lstrip("."), streamed=streamed)
        inline = self.storage is None or return_base64
        stored = []
        try:
            url, local = self.store(path, key, content_type, stored)
            output = {"s3_key": key, "audio_url": url} if url else {}
            if inline:
                output["audio_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
            if local is not None:
                output["local_path"] = str(local)
            if captions is not None:
                text_path, text_key, text_type = captions
                url, local = self.store(text_path, text_key, text_type, stored)
                output.update({"captions_s3_key": text_key, "captions_url": url} if url else {})
                if inline:
                    output["captions_text"] = text_path.read_text(encoding="utf-8")
                if local is not None:
                    output["captions_local_path"] = str(local)
        except BaseException:
            for copy in stored:
                copy.unlink(missing_ok=True)
            raise
        return output

    def store(self, path: Path, key: str, content_type: str, copies: list) -> tuple[str | None, Path | None]:
        """The local copy (noted in `copies`), then the upload: (presigned URL or None, copy or None)."""
        s, url = self.settings, None
        local = self.copy_locally(path) if s.local_output_enabled else None
        if local is not None:
            copies.append(local)
            log.info("wrote %s", local)
        if self.storage is not None:
            self.storage.upload(path, key, content_type)
            url = self.storage.presign(key, s.s3_presign_expires)
        return url, local

    def copy_locally(self, path: Path) -> Path:
        """The result in OUTPUT_DIR, whole or not at all (through a temporary name)."""
        folder = self.settings.output_dir.absolute()
        local = folder / path.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(local, lambda tmp: shutil.copyfile(path, tmp))
        except OSError as exc:
            raise os_error(exc, "the local copy of the result", "OUTPUT_DIR", folder) from None
        return local


#: What a RunPod load-balancing endpoint carries in one request or response.
LB_PAYLOAD_BYTES = 30 * 2**20


class BodyDelivery:
    """The audio as the body of an HTTP response (one per request): no upload, no local copy; the
    body must fit `limit` bytes (a load-balancing endpoint's payload limit). A streamed request's
    body is its stream: nothing is kept then."""

    def __init__(self, limit: int = LB_PAYLOAD_BYTES):
        self.limit = limit
        self.body: bytes | None = None
        self.content_type: str | None = None

    def key(self, name: str) -> str:
        return name

    def check_planned_size(self, return_base64: bool, fmt: str, samples: int, stream_fmt: str | None = None) -> None:
        self.check_size(audio_io.least_encoded_bytes(stream_fmt or fmt, samples) or 0, fmt, planned=True)

    def check_size(self, size: int, fmt: str, planned: bool = False) -> None:
        if size <= self.limit:
            return
        smaller = "" if fmt in COMPRESSED else ", ask for response_format mp3 or opus"
        raise LimitExceeded(f"The audio {'would be at least' if planned else 'is'} {_human(size)}, over the "
                            f"{_human(self.limit)} an HTTP answer can carry (RunPod's load balancer refuses larger "
                            f"payloads): send a shorter text{smaller}.")

    def deliver(self, path: Path, key: str, content_type: str, return_base64: bool, captions=None,
                streamed: int = 0) -> dict:
        if not streamed:
            self.check_size(path.stat().st_size, path.suffix.lstrip("."))
            self.body, self.content_type = path.read_bytes(), content_type
        return {}


def _human(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.1f} KB"
