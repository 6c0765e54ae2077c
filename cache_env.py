"""The environment that points every library's downloads and caches (huggingface_hub,
transformers, torch, torch.compile) at the models directory on the volume.

Those libraries read these variables once, at their own import: each entry point (the handler,
`model_cache.py`'s commands, `bench.py`, the tests) calls `configure` before anything imports
torch, huggingface_hub, transformers or f5_tts. Importing this module changes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger("f5worker.model_cache")

#: The libraries that fix their cache paths when they are imported.
READ_AT_IMPORT = ("huggingface_hub", "transformers", "torch", "f5_tts")


def cache_environment(models_dir: Path) -> dict[str, str]:
    """The environment that sends every library's downloads and caches into `models_dir`."""
    m = Path(models_dir)
    return {
        "HF_HOME": str(m),
        "HF_HUB_CACHE": str(m / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(m / "hub"),  # older name, still read by some libraries
        "TRANSFORMERS_CACHE": str(m / "transformers"),
        "TORCH_HOME": str(m / "torch"),
        "TORCHINDUCTOR_CACHE_DIR": str(m / "torch" / "inductor"),
        "TRITON_CACHE_DIR": str(m / "torch" / "triton"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def configure(settings: Settings) -> None:
    """Point this process's caches at `settings.models_dir`. Call it at an entry point, before
    torch, huggingface_hub, transformers or f5_tts is imported. A second call with the same
    settings (a test session that imports the handler) changes nothing and warns of nothing."""
    env = cache_environment(settings.models_dir)
    already = [name for name in READ_AT_IMPORT if name in sys.modules]
    if already and any(os.environ.get(name) != value for name, value in env.items()):
        # Their cache paths were fixed when they were imported; ours would be ignored.
        log.warning("%s imported before model_cache: their caches may not be on the volume", ", ".join(already))
    os.environ.update(env)
