"""Typed errors raised along a job's path, and the one place they become RunPod's error shape.

Every message is a sentence meant for the caller: it never carries credentials, presigned
URLs, base64 payloads or a traceback.
"""

from __future__ import annotations

import errno
import logging
import sys

from invisible import shown

log = logging.getLogger("f5worker.errors")


class JobError(Exception):
    """A job failed for a reason the caller should read. `refresh_worker` asks RunPod for a
    fresh worker after the job (the process may be in a broken state)."""

    refresh_worker = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(JobError):
    """The job's input does not follow the contract."""


class VoiceNotFound(JobError):
    """No voice object under the given name."""


class VoiceFetchError(JobError):
    """The voice could not be fetched (URL refused, unreachable, too large)."""


class AudioError(JobError):
    """The voice is not usable audio (unreadable, too short, too long, silent)."""


class LimitExceeded(JobError):
    """A request or its result exceeds a configured limit."""


class SynthesisError(JobError):
    """The model produced something that must not be returned (non-finite samples)."""


class StorageError(JobError):
    """S3 could not be read or written after retries."""


class DiskSpaceError(JobError):
    """The worker's disk is full (or nearly): a fresh worker starts with an empty container disk."""

    refresh_worker = True


class WorkerSetupError(JobError):
    """A folder or file the worker needs cannot be created or read (read-only volume, bad path,
    broken install). A fresh worker would meet the same settings and volume: no refresh."""


class TranscriptUnavailable(JobError):
    """No transcript for the voice, and the speech recogniser cannot be had on this worker. Jobs
    that bring a transcript still work here: no refresh."""


class VerifyUnavailable(JobError):
    """A job asks for `verify`, and the speech recogniser that hears it cannot be had on this
    worker. Jobs without verify still work here: no refresh."""


class ModelLoadError(JobError):
    """The model could not be found or loaded; the worker is useless until fixed."""

    refresh_worker = True


class GpuError(JobError):
    """A CUDA error during synthesis: the CUDA context may be poisoned."""

    refresh_worker = True


#: The most characters of caller input any message or log line quotes (the README's 40).
PREVIEW_CHARS = 40


def preview(value, limit: int = PREVIEW_CHARS) -> str:
    """Caller input as a message quotes it: at most `limit` characters, never a whole payload, and
    each character a reader would not see (a BOM, a zero-width space, a control, a newline that
    would split a log line) as its code point, <U+FEFF>. Cut short, it ends in "…"."""
    pieces, size = [], 0
    for ch in str(value):  # a million-character value is read only as far as the limit
        piece = shown(ch)
        if size + len(piece) > limit:
            while pieces and size > limit - 1:
                size -= len(pieces.pop())
            return "".join(pieces) + "…"
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


#: errno values that mean "no room", and "this place cannot be written".
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error(exc: OSError, what: str, setting: str, path=None) -> JobError:
    """A failed write or folder creation as one sentence naming the cause and the place: `what`
    could not be written to `path` (the setting that chooses it)."""
    where = path or exc.filename or "its folder"
    if exc.errno in _FULL:
        return DiskSpaceError(f"The disk is full: {what} could not be written to {where} ({setting}).")
    if exc.errno in _NOT_WRITABLE:
        return WorkerSetupError(f"{what[0].upper()}{what[1:]} could not be written: {where} is read-only or not "
                                f"writable ({setting}).")
    return WorkerSetupError(f"{what[0].upper()}{what[1:]} could not be written to {where} ({setting}): "
                            f"{exc.strerror or type(exc).__name__}.")


def _is_gpu_failure(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:  # nothing has run on a GPU yet
        return False
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", ())  # torch >= 2.8 raises this for CUDA faults
    if accelerator_error and isinstance(exc, accelerator_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUDA" in text or "cuDNN" in text or "CUBLAS" in text)


def as_job_error(exc: BaseException, job_id: str) -> JobError:
    """Any exception as the typed error its caller reads (logged once here): an unwritable or full
    disk no site anticipated, a GPU failure (which asks for a fresh worker), or an internal error
    named by its type only. Every front door maps what this returns its own way."""
    if isinstance(exc, OSError) and exc.errno in _FULL | _NOT_WRITABLE:  # a write no site anticipated
        log.error("job %s: %s", job_id, exc)
        exc = os_error(exc, "a file", "check the disk and the folder settings")
    if not isinstance(exc, JobError):
        if _is_gpu_failure(exc):
            log.error("job %s: GPU failure (%s); asking for a fresh worker", job_id, type(exc).__name__)
            exc = GpuError(
                "The GPU failed during synthesis (out of memory or a device error); "
                "the worker will restart, retry the job."
            )
        else:
            log.exception("job %s: unexpected %s", job_id, type(exc).__name__, exc_info=exc)
            exc = JobError(f"Internal error ({type(exc).__name__}); the job was not completed.")
    else:
        log.warning("job %s failed: %s: %s", job_id, type(exc).__name__, exc.message)
    return exc


def to_runpod_result(exc: BaseException, job_id: str) -> dict:
    """Turn any exception into RunPod's failed-job shape: {"error": str, "refresh_worker"?: True}."""
    exc = as_job_error(exc, job_id)
    result = {"error": exc.message}
    if exc.refresh_worker:
        result["refresh_worker"] = True
    return result
