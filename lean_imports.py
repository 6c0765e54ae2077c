"""Import f5-tts's inference code without the libraries it imports but synthesis never runs.

Measured on an H100 host (docs/benchmarks.md), importing `f5_tts.model.cfm` takes 13 s, of
which 4 s is torch and most of the rest is not used by inference at all:
- `f5_tts/model/__init__.py` imports the trainer (wandb, accelerate, datasets);
- `x_transformers` (6 s: einx -> sympy and torch._dynamo) provides two small rotary-embedding
  helpers to the DiT, and RMSNorm to E2-TTS's UNetT;
- `librosa.filters` (1.8 s, scipy.signal) gives the mel filters of the BigVGAN front end only;
- `torchdiffeq` gives `odeint`, which `sampler.py` replaces;
- `pypinyin` (its phrase dictionary: 0.4-0.6 s) is needed only for Chinese text.

`import_f5_model()` imports f5-tts's modules with stand-ins in `sys.modules` for exactly those
imports and removes the stand-ins afterwards, so anything imported later gets the real library.
The rotary helpers and RMSNorm below are line-for-line the x_transformers code f5-tts calls
(tests compare them on random inputs); the others load the real library on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from contextlib import contextmanager

from errors import ModelLoadError


def _lazy_function(module: str, name: str):
    """A function that imports `module` on its first call and forwards to `module.name`."""

    def forward(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = f"{module}.{name}, imported on first use."
    return forward


class _LazyNamespace:
    """Stands for `module.name` (a class used for its attributes, like an enum); imports
    `module` when an attribute is first read."""

    def __init__(self, module: str, name: str):
        self._module, self._name = module, name

    def __getattr__(self, attr):
        return getattr(getattr(importlib.import_module(self._module), self._name), attr)


def _rotary_module() -> types.ModuleType:
    """`x_transformers.x_transformers`' RotaryEmbedding, apply_rotary_pos_emb and RMSNorm, as
    f5-tts uses them."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RotaryEmbedding(nn.Module):
        def __init__(self, dim, use_xpos=False, scale_base=512, interpolation_factor=1.0, base=10000,
                     base_rescale_factor=1.0):
            if use_xpos:  # f5-tts never asks for it; the real class has it
                raise NotImplementedError("use_xpos: import x_transformers itself")
            super().__init__()
            base *= base_rescale_factor ** (dim / (dim - 2))
            # The same buffers as x_transformers (inv_freq is in the published checkpoints).
            self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))
            assert interpolation_factor >= 1.0
            self.interpolation_factor = interpolation_factor
            self.register_buffer("scale", None)

        def forward_from_seq_len(self, seq_len):
            return self.forward(torch.arange(seq_len, device=self.inv_freq.device))

        def forward(self, t, offset=0):
            with torch.autocast(t.device.type, enabled=False):
                if t.ndim == 1:
                    t = t[None]
                freqs = torch.einsum("b i , j -> b i j", t.type_as(self.inv_freq), self.inv_freq)
                freqs = freqs / self.interpolation_factor
                return torch.stack((freqs, freqs), dim=-1).flatten(-2), 1.0

    def rotate_half(x):
        x1, x2 = x.unflatten(-1, (-1, 2)).unbind(dim=-1)
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def apply_rotary_pos_emb(t, freqs, scale=1):
        with torch.autocast(t.device.type, enabled=False):
            rot_dim, seq_len, orig_dtype = freqs.shape[-1], t.shape[-2], t.dtype
            freqs = freqs[:, -seq_len:, :]
            scale = scale[:, -seq_len:, :] if torch.is_tensor(scale) else scale
            if t.ndim == 4 and freqs.ndim == 3:
                freqs = freqs[:, None]
                if torch.is_tensor(scale):
                    scale = scale[:, None]
            t, t_unrotated = t[..., :rot_dim], t[..., rot_dim:]
            t = (t * freqs.cos() * scale) + (rotate_half(t) * freqs.sin() * scale)
            return torch.cat((t, t_unrotated), dim=-1).type(orig_dtype)

    class RMSNorm(nn.Module):
        def __init__(self, dim, unit_offset=False):
            super().__init__()
            self.unit_offset = unit_offset
            self.scale = dim**0.5
            self.g = nn.Parameter(torch.zeros(dim))  # named as in the published E2-TTS checkpoints
            nn.init.constant_(self.g, 1.0 - float(unit_offset))

        def forward(self, x):
            gamma = self.g + float(self.unit_offset)
            return F.normalize(x, dim=-1) * self.scale * gamma

    module = types.ModuleType("x_transformers.x_transformers", "f5-tts's rotary helpers and RMSNorm (lean_imports)")
    module.RotaryEmbedding, module.apply_rotary_pos_emb, module.rotate_half, module.RMSNorm = (
        RotaryEmbedding, apply_rotary_pos_emb, rotate_half, RMSNorm)
    return module


def _stand_ins() -> dict[str, types.ModuleType]:
    rotary = _rotary_module()
    package = types.ModuleType("x_transformers")
    package.x_transformers, package.RMSNorm = rotary, rotary.RMSNorm
    filters = types.ModuleType("librosa.filters")
    filters.mel = _lazy_function("librosa.filters", "mel")
    diffeq = types.ModuleType("torchdiffeq")
    diffeq.odeint = _lazy_function("torchdiffeq", "odeint")
    pinyin = types.ModuleType("pypinyin")
    pinyin.lazy_pinyin, pinyin.Style = _lazy_function("pypinyin", "lazy_pinyin"), _LazyNamespace("pypinyin", "Style")
    return {"x_transformers": package, "x_transformers.x_transformers": rotary, "librosa.filters": filters,
            "torchdiffeq": diffeq, "pypinyin": pinyin}


@contextmanager
def _standing_in(modules: dict[str, types.ModuleType]):
    """`modules` in sys.modules for the duration, where the real ones are not imported yet."""
    placed = [name for name in modules if name not in sys.modules]
    for name in placed:
        sys.modules[name] = modules[name]
    try:
        yield
    finally:
        for name in placed:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]


def _register_model_package() -> None:
    """`f5_tts.model` without running its __init__ (which imports the trainer); its names
    (CFM, DiT, ..., Trainer) resolve on first access."""
    spec = importlib.util.find_spec("f5_tts.model")
    if spec is None:
        raise ModelLoadError("The f5-tts package is not installed.")
    package = importlib.util.module_from_spec(spec)
    lazy = {
        "CFM": "f5_tts.model.cfm",
        "DiT": "f5_tts.model.backbones.dit",
        "MMDiT": "f5_tts.model.backbones.mmdit",
        "UNetT": "f5_tts.model.backbones.unett",
        "Trainer": "f5_tts.model.trainer",
    }

    def __getattr__(attr):
        if attr in lazy:
            return getattr(importlib.import_module(lazy[attr]), attr)
        raise AttributeError(f"module 'f5_tts.model' has no attribute {attr!r}")

    package.__getattr__ = __getattr__
    sys.modules["f5_tts.model"] = package


def import_f5_model():
    """f5-tts's `f5_tts.model` package, with CFM, DiT, UNetT and their modules imported lean."""
    if "f5_tts.model" not in sys.modules:
        _register_model_package()
    if "f5_tts.model.cfm" not in sys.modules:
        with _standing_in(_stand_ins()):
            for name in ("f5_tts.model.utils", "f5_tts.model.modules", "f5_tts.model.backbones.dit",
                         "f5_tts.model.backbones.unett", "f5_tts.model.cfm"):
                importlib.import_module(name)
    return sys.modules["f5_tts.model"]
