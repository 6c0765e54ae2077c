"""The fp16 copy of a checkpoint: half the bytes to read at every cold start. Written beside a
manifest that records the source it was made from, its size and its sha256."""

from __future__ import annotations

import os
from pathlib import Path

from atomic import write_atomic
from checkpoints import ModelFiles, read_checkpoint
from errors import ModelLoadError
from hub_cache import sha256_of


def fp16_artifact(files: ModelFiles) -> Path:
    """Where `files`' fp16 copy is kept (resolution decides: see ModelStore.fp16_copy)."""
    if files.fp16_copy is None:
        raise ValueError(f"{files.name} has no place for an fp16 copy")
    return files.fp16_copy


def _source_identity(path: Path) -> dict:
    """What the fp16 copy was made from. Hub blobs are named by their sha256, so the resolved
    name identifies the content; size and mtime cover custom checkpoints."""
    real = Path(os.path.realpath(path))
    stat = real.stat()
    return {"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_fp16_artifact(files: ModelFiles) -> Path:
    """Write `<models>/f5-tts/<model>/model_fp16.safetensors`: the checkpoint's weights cast to
    fp16 (what the GPU runs anyway), checked tensor by tensor against the original. The
    manifest beside it, written last, records the source it belongs to."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    state = read_checkpoint(files.checkpoint)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    target = fp16_artifact(files)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write_verified(tmp):
        save_file(half, str(tmp))
        back = load_file(str(tmp))
        if back.keys() != half.keys() or not all(torch.equal(back[k], half[k]) for k in half):
            raise ModelLoadError(f"The fp16 copy of {files.checkpoint} did not read back equal; not kept.")

    write_atomic(target, write_verified)
    manifest = {"source": _source_identity(files.checkpoint), "size": target.stat().st_size,
                "sha256": sha256_of(target), "format": 2}
    write_atomic(target.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(manifest)))
    return target


def fp16_manifest(files: ModelFiles) -> dict | None:
    """The fp16 copy's manifest when the copy exists whole (its recorded size) and was made from
    the checkpoint now in place; None otherwise. No torch needed: asked before it is imported."""
    import json

    if files.fp16_copy is None:
        return None
    target = fp16_artifact(files)
    try:
        manifest = json.loads(target.with_suffix(".json").read_text())
        if manifest["source"] == _source_identity(files.checkpoint) and manifest["size"] == target.stat().st_size:
            return manifest
    except (OSError, ValueError, KeyError):
        pass
    return None


def fp16_copy_is_current(files: ModelFiles) -> bool:
    return fp16_manifest(files) is not None


def fp16_copy_is_intact(files: ModelFiles) -> bool:
    """Current, and its content is what was written (the manifest's sha256): a copy of the
    right size can still hold flipped bits or zeroed blocks, which load as wrong or NaN weights.
    Reads the whole copy: `prefetch` and `status` ask; a worker's load checks while it reads ahead."""
    manifest = fp16_manifest(files)
    return manifest is not None and manifest.get("sha256") == sha256_of(fp16_artifact(files))
