"""Per-job scratch space under JOB_TMP_DIR: a directory of each job's own (the staged voice, the
encoded result), removed when the job ends whatever happens, and the sweep that removes what a
killed worker left behind."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import proc_stat
from errors import DiskSpaceError, os_error

log = logging.getLogger("f5worker.scratch")

#: A job directory's name: the job id (no dots in it), the worker process (its id and start
#: time: a restarted container reuses process ids), a random part.
JOB_DIR = re.compile(r"f5job-[A-Za-z0-9_-]+\.(?P<process>\d+-\d+)\.[^.]*")
#: Job directories older than this are left from a dead worker whatever their name says.
STALE_AFTER_SECONDS = 24 * 3600


@contextmanager
def job_directory(root: Path, job_id: str, min_free_mb: int):
    """A scratch directory of this job's own, removed when the job ends, whatever happens (but
    a kill: `sweep_job_directories` removes those the next worker finds)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        free_mb = shutil.disk_usage(root).free / 2**20
        if free_mb < min_free_mb:
            raise DiskSpaceError(
                f"Only {free_mb:.0f} MB free in {root}; the job needs {min_free_mb} MB of scratch space (JOB_TMP_DIR).")
        path = Path(tempfile.mkdtemp(prefix=f"f5job-{job_id}.{process_identity(os.getpid())}.", dir=root))
    except OSError as exc:
        raise os_error(exc, "the job's scratch directory", "JOB_TMP_DIR", root) from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_job_directories(root: Path) -> int:
    """Remove the job directories a killed worker left (a caller's recording among them): those
    of a process that is gone, or older than a day. A live worker's are kept."""
    swept = 0
    for path in root.glob("f5job-*") if root.is_dir() else ():
        match = JOB_DIR.fullmatch(path.name)
        try:
            old = time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS
        except OSError:
            continue
        if old or (match is not None and process_identity(int(match["process"].split("-")[0])) != match["process"]):
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
    if swept:
        log.warning("removed %d job directories left in %s by a worker that stopped mid-job", swept, root)
    return swept


def process_identity(pid: int) -> str:
    """'<pid>-<start time in clock ticks>' of a running process; '' when there is none."""
    try:
        return f"{pid}-{proc_stat.start_ticks(pid)}"
    except (OSError, ValueError, IndexError):
        return ""
