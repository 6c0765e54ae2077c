"""RunPod's model cache: the Hugging Face repository named in an endpoint's Model field, placed
by RunPod on the host before the worker starts, in the hub's own cache layout
(`models--<org>--<name>/refs/main`, `snapshots/<hash>/...`, `blobs/<sha256>`), at
RUNPOD_MODEL_CACHE (default `<RUNPOD_VOLUME>/huggingface-cache/hub`).

It belongs to RunPod and is read-only to this worker: these lookups only read (no lock, no
download, no repair, no `.incomplete` file: huggingface_hub is not involved). A file is served
from there only when its content matches the sha256 its blob is named by; one that does not is
logged once and passed over, and the caller falls back to the volume or a download.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from hub_cache import hub_digest, sha256_of

log = logging.getLogger("f5worker.model_cache")

#: How `status`, `prefetch` and the start-up log name this store.
STORE_NAME = "RunPod model cache"

#: (real path, size, mtime) -> whether its content matches its blob name: each file is hashed once per process.
_verdicts: dict[tuple[str, int, int], bool] = {}
_lock = threading.Lock()


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"


def revisions(cache_dir: Path, repo_id: str) -> list[Path]:
    """The repository's snapshot folders, the one `refs/main` names first, then every other."""
    snapshots = repo_folder(cache_dir, repo_id) / "snapshots"
    try:
        main = (repo_folder(cache_dir, repo_id) / "refs" / "main").read_text().strip()
    except (OSError, UnicodeDecodeError):
        main = ""
    try:
        others = sorted(p.name for p in snapshots.iterdir() if p.is_dir() and p.name != main)
    except OSError:
        return []
    return [snapshots / name for name in ([main] if main and (snapshots / main).is_dir() else []) + others]


def cached_file(cache_dir: Path | None, repo_id: str, filename: str, check: bool = True) -> Path | None:
    """`repo_id`/`filename` in RunPod's cache, intact; None when it is not there (or not intact).
    `check` False: not hashed now (the caller checks it as it reads it, and calls `intact` on a
    mismatch); one already found corrupt is passed over all the same."""
    if cache_dir is None:
        return None
    for snapshot in revisions(cache_dir, repo_id):
        path = snapshot / filename
        if path.is_file() and (intact(path) if check else verdict(path) is not False):
            return path
    return None


def cached_snapshot(cache_dir: Path | None, repo_id: str, patterns: tuple[str, ...]) -> Path | None:
    """A snapshot folder of a whole model repository (Whisper) in RunPod's cache: one with a
    config.json and its weights (*.safetensors), every file of `patterns` intact."""
    if cache_dir is None:
        return None
    for snapshot in revisions(cache_dir, repo_id):
        files = sorted({p for pattern in patterns for p in snapshot.rglob(pattern) if p.is_file()})
        if (snapshot / "config.json").is_file() and any(p.suffix == ".safetensors" for p in files) \
                and all(intact(p) for p in files):
            return snapshot
    return None


def intact(path: Path) -> bool:
    """Whether a file of the cache is what its blob name says (hashed once per process; a small
    git file, named by no sha256, only has to be there); a mismatch is logged once."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return False
    key = (real, stat.st_size, stat.st_mtime_ns)
    with _lock:  # one hash of a file, however many threads ask
        if key not in _verdicts:
            digest = hub_digest(Path(real))
            try:
                _verdicts[key] = sha256_of(Path(real)) == digest if digest else stat.st_size > 0
            except OSError:
                _verdicts[key] = False
            if not _verdicts[key]:
                log.warning("%s in RunPod's model cache does not match its sha256 (%s): using the volume or a "
                            "download instead, and leaving the cache as it is", path, real)
        return _verdicts[key]


def verdict(path: Path) -> bool | None:
    """What hashing `path` found in this process; None when it has not been hashed."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return None
    return _verdicts.get((real, stat.st_size, stat.st_mtime_ns))


def checked(path: Path) -> bool:
    """Whether `path` was hashed and found intact in this process (the loader need not hash it again)."""
    return verdict(path) is True


def holds(cache_dir: Path | None, path: Path) -> bool:
    """Whether `path` lies in RunPod's cache."""
    if cache_dir is None:
        return False
    try:
        Path(path).absolute().relative_to(Path(cache_dir).absolute())
        return True
    except ValueError:
        return False
