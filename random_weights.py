"""The tiny random-weight test model, and random weights of any architecture in the published
formats: the whole worker runs offline on them (their speech is noise)."""

from __future__ import annotations

import shutil
from pathlib import Path

from atomic import write_atomic
from checkpoints import HOP_LENGTH, SAMPLE_RATE, TINY_ARCH, ModelFiles, build_cfm, f5_package_dir

#: The tiny test model's Vocos (its DiT, TINY_ARCH, is in `checkpoints`: resolution names it too).
TINY_VOCOS = dict(dim=64, intermediate_dim=128, num_layers=2)


def make_test_model(target: Path, seed: int = 0) -> Path:
    """Write a tiny F5-TTS (real DiT/CFM classes) and Vocos with random weights, in the
    published formats, so the whole worker runs offline. Its speech is noise."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f5_package_dir() / "infer" / "examples" / "vocab.txt", target / "vocab.txt")
    files = ModelFiles("tiny", "DiT", dict(TINY_ARCH), target / "model.safetensors", target / "vocab.txt", target / "vocos")
    write_random_model(files, TINY_VOCOS, seed)
    return target


#: Vocos as published (charactr/vocos-mel-24khz).
VOCOS_ARCH = dict(dim=512, intermediate_dim=1536, num_layers=8)


def write_random_model(files: ModelFiles, vocos_arch: dict, seed: int = 0) -> None:
    """Random weights for `files`' architecture and a Vocos of `vocos_arch`, in the published
    formats (checkpoint with `ema_model.` keys, Vocos config.yaml + pytorch_model.bin). For the
    real architectures the compute per step is that of the published weights."""
    import torch
    import yaml
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    cfm = build_cfm(files)
    with torch.no_grad():
        # DiT.initialize_weights zeroes the output projection and AdaLN layers: the output would
        # not depend on the weights at all, and a test could not tell the model ran.
        for param in cfm.transformer.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    # As published: every key `ema_model.<CFM key>`, nothing else (stock's loader rejects others).
    state = {f"ema_model.{k}": v.contiguous() for k, v in cfm.state_dict().items()}
    files.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(files.checkpoint, lambda tmp: save_file(state, str(tmp)))

    vocos_cfg = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": SAMPLE_RATE, "n_fft": 1024, "hop_length": HOP_LENGTH, "n_mels": 100,
                          "padding": "center"},
        },
        "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": {"input_channels": 100, **vocos_arch}},
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": vocos_arch["dim"], "n_fft": 1024, "hop_length": HOP_LENGTH, "padding": "same"},
        },
    }
    files.vocoder_dir.mkdir(parents=True, exist_ok=True)
    (files.vocoder_dir / "config.yaml").write_text(yaml.safe_dump(vocos_cfg), encoding="utf-8")
    from vocos import Vocos

    vocoder = Vocos.from_hparams(str(files.vocoder_dir / "config.yaml"))
    write_atomic(files.vocoder_dir / "pytorch_model.bin", lambda tmp: torch.save(vocoder.state_dict(), str(tmp)))
