"""Files of the Hugging Face hub in a local cache folder (<models>/hub): local first, downloaded
only when missing (under huggingface_hub's lock, through a temporary name), checked against their
sha256 (LFS blobs are named by it)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from errors import ModelLoadError

log = logging.getLogger("f5worker.model_cache")


def hub_file(hub_dir: Path, repo_id: str, filename: str, *, download: bool, downloads_allowed: bool = True,
             force: bool = False) -> Path:
    """The local path of a hub file in `hub_dir` (<models>/hub), downloading it only when it is
    missing; `downloads_allowed` is ALLOW_MODEL_DOWNLOAD, named in the error when `download` is off.

    A file already in the cache is found without any network call, so a cold start does not
    depend on the hub being up. huggingface_hub downloads to `<blob>.incomplete` under a file
    lock and renames when complete, so workers starting together on an empty volume wait for
    one download instead of writing the same file at once.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not force:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, local_files_only=True))
        except LocalEntryNotFoundError:
            if not download:
                why = " and ALLOW_MODEL_DOWNLOAD=false keeps the worker from downloading it" \
                    if not downloads_allowed else ""
                raise ModelLoadError(
                    f"{repo_id}/{filename} is not in {hub_dir}{why}; run `python model_cache.py prefetch`."
                ) from None
    log.info("downloading %s/%s into %s", repo_id, filename, hub_dir)
    try:
        path = Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, force_download=force))
        # The lock above may not hold across hosts on a network volume: check what landed (LFS
        # blobs are named by their sha256) and fetch once more if it is not what the hub sent.
        if not verify_hub_file(path):
            log.warning("%s/%s arrived corrupt; downloading it again", repo_id, filename)
            path = Path(hf_hub_download(repo_id, filename, cache_dir=hub_dir, force_download=True))
    except LocalEntryNotFoundError as exc:  # what the hub's client raises when it cannot reach the hub
        raise ModelLoadError(unreachable(f"{repo_id}/{filename}", exc)) from exc
    except Exception as exc:  # auth, a missing file, disk: all mean the model is not available
        raise ModelLoadError(f"Could not download {repo_id}/{filename}: {type(exc).__name__}: {exc}") from exc
    if not verify_hub_file(path):
        raise ModelLoadError(f"{repo_id}/{filename} is corrupt after two downloads ({os.path.realpath(path)}).")
    return path


def unreachable(what: str, exc: Exception) -> str:
    """One sentence for a download that found no hub (offline, DNS, a firewall), saying what to do."""
    cause = exc.__cause__ or exc.__context__
    why = f" ({type(cause).__name__})" if cause is not None else ""
    return (f"Could not download {what}: the Hugging Face hub could not be reached{why}. Run `python model_cache.py "
            f"prefetch` where it can be, or set F5_MODEL=tiny to run offline with the random-weight test model.")


#: What a transformers model repository needs locally (weights as safetensors only).
SNAPSHOT_PATTERNS = ("*.json", "*.safetensors", "*.txt")


def hub_snapshot(hub_dir: Path, repo_id: str, *, download: bool) -> Path:
    """The local folder of a whole model repository in `hub_dir`, local first like
    `hub_file`; downloads only what is missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_dir, allow_patterns=list(SNAPSHOT_PATTERNS),
                                      local_files_only=True))
    except LocalEntryNotFoundError:
        if not download:
            raise ModelLoadError(
                f"{repo_id} is not in {hub_dir} and downloads are off (ALLOW_MODEL_DOWNLOAD=false); "
                "run `python model_cache.py prefetch`."
            ) from None
    log.info("downloading %s into %s", repo_id, hub_dir)
    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_dir, allow_patterns=list(SNAPSHOT_PATTERNS)))
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(unreachable(repo_id, exc)) from exc
    except Exception as exc:
        raise ModelLoadError(f"Could not download {repo_id}: {type(exc).__name__}: {exc}") from exc


def verify_hub_file(path: Path) -> bool:
    """True when a cached hub file is intact. LFS blobs are named by their sha256, so the
    content can be checked against the name; small git files (configs) only need to exist."""
    blob = Path(os.path.realpath(path))
    if not blob.is_file():
        return False
    digest = hub_digest(blob)
    return sha256_of(blob) == digest if digest else blob.stat().st_size > 0


def hub_digest(path: Path) -> str | None:
    """The sha256 a hub file must have: LFS blobs are named by it. None for small git files."""
    name = os.path.basename(os.path.realpath(path))
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        for block in iter(lambda: fh.read(16 << 20), b""):
            digest.update(block)  # hashlib lets other threads run meanwhile
    return digest.hexdigest()
