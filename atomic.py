"""Writing a file on the shared volume so that no reader ever sees it half-written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def temp_name(path: Path) -> Path:
    """A temporary name beside `path`, of this process's own: renamed over `path` when whole."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` writes the file under a temporary name in the same folder, which is then
    renamed over `path`: readers on the shared volume never see a half-written file. Readable by
    all, as the hub's own files are (safetensors creates its file 0600). The temporary file is
    removed whatever happens."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
