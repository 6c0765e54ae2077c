"""What each model is: the published checkpoints and where they are on the hub, the model's
definition (the CFM of its architecture, f5-tts's configs) and the published checkpoint formats.
Loading (`loaded_model`), the fp16 copy (`fp16_copy`) and the test model (`random_weights`) need
them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import lean_imports
from errors import ModelLoadError

VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_FILES = ("config.yaml", "pytorch_model.bin")

#: Published checkpoints: model name -> (hub repo, file in the repo). CC-BY-NC weights.
HUB_CHECKPOINTS = {
    "F5TTS_v1_Base": ("SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors"),
    "F5TTS_Base": ("SWivid/F5-TTS", "F5TTS_Base/model_1200000.safetensors"),
    "E2TTS_Base": ("SWivid/E2-TTS", "E2TTS_Base/model_1200000.safetensors"),
}

#: The tiny test model: the real DiT class at a size that runs a full sample() on a CPU in
#: well under a second.
TINY_ARCH = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32, conv_layers=1, text_mask_padding=True)

#: Mel settings shared by every supported model and Vocos (24 kHz, 100 mels, hop 256).
SAMPLE_RATE = 24_000
HOP_LENGTH = 256
MEL_KWARGS = dict(
    n_fft=1024, hop_length=HOP_LENGTH, win_length=1024, n_mel_channels=100, target_sample_rate=SAMPLE_RATE,
    mel_spec_type="vocos",
)


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's files are, once resolved on local disk."""

    name: str
    backbone: str
    arch: dict = field(hash=False)
    checkpoint: Path
    vocab: Path
    vocoder_dir: Path
    #: Where its fp16 copy is (or would be) kept; None for a model that has none.
    fp16_copy: Path | None = None


def f5_package_dir() -> Path:
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The f5-tts package is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def model_config(name: str) -> tuple[str, dict]:
    """(backbone class name, architecture kwargs) for a model name, from f5-tts's own configs."""
    if name == "tiny":
        return "DiT", dict(TINY_ARCH)
    import yaml

    path = f5_package_dir() / "configs" / f"{name}.yaml"
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)["model"]
    if cfg["mel_spec"]["mel_spec_type"] != "vocos":
        raise ModelLoadError(f"{name} needs the {cfg['mel_spec']['mel_spec_type']} vocoder; only vocos is supported.")
    return cfg["backbone"], dict(cfg["arch"])


def build_cfm(files: ModelFiles):
    """The CFM model of `files`' architecture, with untrained weights."""
    f5 = lean_imports.import_f5_model()
    from f5_tts.model.utils import get_tokenizer

    vocab_char_map, vocab_size = get_tokenizer(str(files.vocab), "custom")
    backbone = getattr(f5, files.backbone)
    return f5.CFM(
        transformer=backbone(**files.arch, text_num_embeds=vocab_size, mel_dim=MEL_KWARGS["n_mel_channels"]),
        mel_spec_kwargs=MEL_KWARGS,
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=vocab_char_map,
    )


def read_checkpoint(path: Path, device: str = "cpu") -> dict:
    """The CFM state dict of a checkpoint in either published format: `.safetensors` with
    `ema_model.`-prefixed keys, or `.pt` with an `ema_model_state_dict` (or `model_state_dict`)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device=device)
        else:
            raw = torch.load(str(path), map_location=device, weights_only=True)
            raw = raw.get("ema_model_state_dict") or raw.get("model_state_dict") or raw
    except Exception as exc:
        raise ModelLoadError(
            f"The checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt: run `python model_cache.py prefetch` to repair it."
        ) from exc
    skip = {"initted", "step", "mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"}
    state = {}
    for key, value in raw.items():
        key = key.removeprefix("ema_model.")
        if key not in skip:
            state[key] = value
    return state
