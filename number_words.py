"""num2words run where it can be stopped: one helper process per worker process.

Some of num2words' converters never return for some numbers (Amharic's loops forever on 9852152),
and a Python thread cannot be stopped from outside, so no converter runs in the worker itself.
The worker starts one long-lived child process (this file run as a script) on the first text that
has a number to read in a num2words language; a text without digits never starts it. Each request,
one JSON line on the child's stdin, carries all the numbers of one text in one language; the answer,
one JSON line on its stdout, is awaited with a deadline. Past the deadline the child is killed, the
job fails in one sentence (LimitExceeded), and the next text that needs numbers read starts a fresh
child. A number a converter raises on comes back as None: the caller leaves it as written.

The child never outlives the worker: it exits at the end of its stdin, a thread of its own ends it
when its parent is gone, and the worker kills it at exit. Its address space is capped, so a converter
that grabs memory raises MemoryError there (that number is left as written) instead of waking the
kernel's OOM killer on a GPU worker.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time

from errors import LimitExceeded, WorkerSetupError, preview

log = logging.getLogger("f5worker.number_words")

#: Seconds a request may take, plus SECONDS_PER_NUMBER for each number in it. A kept language reads
#: a number in 0.1 to 0.5 ms, one of 15 digits in about 1.3 ms (German, a loaded 2-core CPU;
#: benchmarks/number_languages.py), so only a converter that does not finish reaches the deadline.
REQUEST_SECONDS = 5.0
SECONDS_PER_NUMBER = 0.01
#: Seconds the child may take to start and import num2words (about 0.1 s; a loaded machine is slower).
START_SECONDS = 60.0
#: The child's address space, in bytes: Python and num2words use about 30 MB of memory.
MEMORY_LIMIT = 1 << 30
#: How often the child looks whether its parent is still there.
PARENT_CHECK_SECONDS = 1.0


class NumberReader:
    """The helper process and the lock that keeps two threads' requests off the pipe at once."""

    def __init__(self, request_seconds: float = REQUEST_SECONDS, per_number: float = SECONDS_PER_NUMBER):
        self.request_seconds, self.per_number = request_seconds, per_number
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self.starts = 0  # children started, for tests and the benchmark

    def words(self, lang: str, numbers: list[str]) -> list[str | None]:
        """Each number ("-12", "3.25": ASCII digits, a point, a leading minus) in `lang`'s words,
        or None where the converter raised."""
        said, errors = self.ask(lang, numbers)
        for index, error in errors:
            log.info("num2words could not read %s in %r (%s): left as written", preview(numbers[index]), lang, error)
        return said

    def ask(self, lang: str, numbers: list[str]) -> tuple[list[str | None], list[tuple[int, str]]]:
        """The words, and (index, exception's name) for each number the converter raised on."""
        if not numbers:
            return [], []
        request = (json.dumps({"lang": lang, "numbers": numbers}, ensure_ascii=False) + "\n").encode()
        seconds = self.request_seconds + self.per_number * len(numbers)
        with self._lock:
            child = self._running()
            try:
                _send(child, request)
                reply = json.loads(_line(child, time.monotonic() + seconds))
                said, errors = reply["words"], [tuple(e) for e in reply["errors"]]
                if len(said) != len(numbers):
                    raise ValueError(f"{len(said)} answers to {len(numbers)} numbers")
            except TimeoutError:
                self._stop()
                log.error("num2words gave no answer within %.1f s for %d numbers in %r: its process was killed",
                          seconds, len(numbers), lang)
                raise LimitExceeded(
                    f"Reading the numbers in '{preview(lang)}' took more than {seconds:.0f} s and was stopped (a "
                    "number num2words cannot finish); send the text with its numbers as words, or with normalize: "
                    "false.") from None
            except Exception as exc:  # noqa: BLE001 - it died, or answered what it never writes
                self._stop()
                log.error("num2words' helper process failed: %s: %s", type(exc).__name__, exc)
                raise WorkerSetupError(f"The number reader (num2words' helper process) stopped while reading the "
                                       f"numbers in '{preview(lang)}' ({type(exc).__name__}); see the worker's log. "
                                       "Retry the job, or send normalize: false.") from None
            except BaseException:  # a signal's exception mid-request: its answer would be read as the next one's
                self._stop()
                raise
        return said, errors

    def close(self) -> None:
        """Kill the child, even with a request in flight (that request then fails): at exit, a worker
        must not wait out a deadline."""
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        if self._lock.acquire(timeout=10):
            try:
                self._stop()
            finally:
                self._lock.release()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def _running(self) -> subprocess.Popen:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self._stop()  # exited since the last request: reap it and start another
        started = time.perf_counter()
        try:
            child = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise WorkerSetupError(f"The number reader (num2words' helper process) could not start: "
                                   f"{type(exc).__name__}: {exc}.") from None
        self._child = child
        try:
            json.loads(_line(child, time.monotonic() + START_SECONDS))["ready"]
        except Exception as exc:  # noqa: BLE001 - it could not import num2words, or never said so
            self._stop()
            raise WorkerSetupError("The number reader (num2words' helper process) did not start "
                                   f"({type(exc).__name__}); see the worker's log. Send normalize: false.") from None
        except BaseException:
            self._stop()
            raise
        self.starts += 1
        log.info("started num2words' helper process (pid %d) in %.2f s", child.pid, time.perf_counter() - started)
        return child

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.kill()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # not even SIGKILL (a process stuck in the kernel): leave it
            log.error("num2words' helper process %d did not end when killed", child.pid)
        for pipe in (child.stdin, child.stdout):
            pipe.close()


def _send(child: subprocess.Popen, data: bytes) -> None:
    view, fd = memoryview(data), child.stdin.fileno()
    while view:  # a write to a pipe may take only part of a large request
        view = view[os.write(fd, view):]


def _line(child: subprocess.Popen, deadline: float) -> bytes:
    """One line from the child's stdout by `deadline` (time.monotonic()): TimeoutError past it,
    EOFError if the child closed its end first."""
    fd, data = child.stdout.fileno(), bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not data.endswith(b"\n"):  # the child writes nothing but whole answers, one at a time
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


_reader = NumberReader()
atexit.register(_reader.close)


def words(lang: str, numbers: list[str]) -> list[str | None]:
    """The worker's reader: see NumberReader.words."""
    return _reader.words(lang, numbers)


def reader() -> NumberReader:
    return _reader


# --------------------------------------------------------------------------------------
# The child's side
# --------------------------------------------------------------------------------------


def said(number: str, lang: str) -> tuple[str | None, str | None]:
    """(words, None), or (None, the exception's name) where the converter raised."""
    from decimal import Decimal

    from num2words import num2words

    try:
        value = Decimal(number) if "." in number else int(number)
        out = num2words(value, lang=lang)
    except Exception as exc:  # noqa: BLE001 - any converter's failure leaves its number as written
        return None, type(exc).__name__
    return (out, None) if isinstance(out, str) and out.strip() else (None, "no words")


def serve(parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the worker's terminal is the worker's to handle
    _cap_memory()
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a converter that prints must not write into the answers
    sys.stdout = sys.stderr
    import num2words  # noqa: F401 - before "ready": the first request should not pay for it

    answers.write(b'{"ready": true}\n')
    answers.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        out, errors = [], []
        for index, number in enumerate(request["numbers"]):
            spoken, error = said(number, request["lang"])
            out.append(spoken)
            if error:
                errors.append((index, error))
        answers.write((json.dumps({"words": out, "errors": errors}, ensure_ascii=False) + "\n").encode())
        answers.flush()


def _cap_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):  # not on this system: the deadline still holds
        pass


def _exit_without(parent: int) -> None:
    """End the child once its parent is gone, even while a converter loops (the loop gives up the
    interpreter lock every few milliseconds)."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
