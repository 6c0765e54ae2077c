"""sampler.py computes what CFM.sample computes; lean_imports' stand-ins are exact and leave
the real libraries to everyone else."""

import json

import pytest
import torch
from conftest import run_py, subprocess_env

import lean_imports
import loaded_model
import checkpoints
import sampler
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model


@pytest.fixture(scope="module")
def model():
    return loaded_model.get_model(get_settings())


@pytest.mark.parametrize("backbone", ["DiT", "UNetT"])
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("cfg_strength", [2.0, 0.0])
def test_sampler_matches_cfm_sample_for_the_same_seed(model, tiny_e2_model, backbone, rows, cfg_strength):
    """For F5-TTS's DiT and E2-TTS's UNetT alike."""
    from f5_tts.model.utils import convert_char_to_pinyin

    model = model if backbone == "DiT" else tiny_e2_model
    assert type(model.cfm.transformer).__name__ == backbone

    generator = torch.Generator().manual_seed(rows)
    ref = 0.1 * torch.randn(rows, 24_000 * 3, generator=generator)
    texts = convert_char_to_pinyin(["Some call me nature. Hello world there.", "Some call me nature. Hi."][:rows])
    duration = torch.tensor([600, 520][:rows])
    kwargs = dict(steps=8, cfg_strength=cfg_strength, sway_sampling_coef=-1.0, seed=3)
    with torch.inference_mode():
        stock, _ = model.cfm.sample(cond=ref, text=texts, duration=duration, **kwargs)
        ours, _ = sampler.sample(model.cfm, ref, texts, duration, **kwargs)
    assert ours.shape == stock.shape and ours.dtype == torch.float32
    # fp32 on a CPU: only the order of a few float operations differs (measured 3e-8 to 6e-8).
    assert float((ours - stock).norm() / stock.norm()) < 1e-6


def test_e2_tts_configs_build_the_network_the_sampler_walks():
    """E2TTS_Base and E2TTS_Small, at their real sizes (on the meta device: no memory), are
    UNetTs whose layers the sampler takes apart; F5-TTS's are DiTs with a text position table."""
    for name in ("E2TTS_Base", "E2TTS_Small", "F5TTS_v1_Base"):
        backbone, arch = checkpoints.model_config(name)
        files = checkpoints.ModelFiles(name, backbone, arch, STORE.tiny_dir / "model.safetensors",
                                       STORE.tiny_dir / "vocab.txt", STORE.tiny_dir / "vocos")
        with torch.device("meta"):
            net = checkpoints.build_cfm(files).transformer
        assert sampler.is_unet(net) == (backbone == "UNetT") == name.startswith("E2")
        assert len(sampler.blocks_of(net)) == arch["depth"]
        if sampler.is_unet(net):
            assert all(len(layer) == 5 for layer in sampler.blocks_of(net))
            assert sampler.max_frames(net) == sampler.MAX_FRAMES
        else:
            assert sampler.max_frames(net) == 8192  # f5-tts 1.1.22's text position table


def test_time_grid_is_float32_and_ends_at_one():
    grid = sampler.time_grid(32, -1.0, "cpu")
    assert grid.dtype == torch.float32 and len(grid) == 33
    assert grid[0] == 0 and abs(float(grid[-1]) - 1) < 1e-6 and bool((grid[1:] > grid[:-1]).all())


def test_rotary_stand_ins_are_x_transformers_own():
    from x_transformers.x_transformers import RMSNorm, RotaryEmbedding, apply_rotary_pos_emb

    ours = lean_imports._rotary_module()
    real_rope, our_rope = RotaryEmbedding(64), ours.RotaryEmbedding(64)
    assert real_rope.state_dict().keys() == our_rope.state_dict().keys()
    assert torch.equal(real_rope.inv_freq, our_rope.inv_freq)
    freqs, scale = real_rope.forward_from_seq_len(300)
    our_freqs, our_scale = our_rope.forward_from_seq_len(300)
    assert torch.equal(freqs, our_freqs) and scale == our_scale
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.randn(2, 4, 300, 64, generator=generator).to(dtype)
        assert torch.equal(apply_rotary_pos_emb(q, freqs, scale), ours.apply_rotary_pos_emb(q, our_freqs, our_scale))
        # fewer rotary dimensions than the head: the rest passes through
        assert torch.equal(apply_rotary_pos_emb(q, freqs[..., :32]), ours.apply_rotary_pos_emb(q, our_freqs[..., :32]))
    for unit_offset in (False, True):
        real_norm, our_norm = RMSNorm(64, unit_offset), ours.RMSNorm(64, unit_offset)
        with torch.no_grad():
            for norm in (real_norm, our_norm):
                norm.g.copy_(torch.linspace(-1, 2, 64))
        assert real_norm.state_dict().keys() == our_norm.state_dict().keys()
        x = torch.randn(3, 50, 64, generator=generator)
        assert torch.equal(real_norm(x), our_norm(x))


LEAN = """
import json, sys
import lean_imports
lean_imports.import_f5_model()
from f5_tts.model import CFM, DiT
from f5_tts.model import modules
heavy = [m for m in ("x_transformers", "einx", "sympy", "librosa.filters", "torchdiffeq", "pypinyin", "wandb",
                     "datasets", "f5_tts.model.trainer") if m in sys.modules]
import x_transformers.x_transformers as xt, librosa.filters, torchdiffeq
from f5_tts.model.utils import convert_char_to_pinyin
print("RESULT " + json.dumps({
    "heavy": heavy,
    "real_later": hasattr(xt, "TransformerWrapper") and hasattr(librosa.filters, "chroma") and hasattr(torchdiffeq, "odeint_adjoint"),
    "twin_used": modules.apply_rotary_pos_emb is not xt.apply_rotary_pos_emb,
    "pinyin": convert_char_to_pinyin(["ni 你好"])[0],
    "mel": list(modules.librosa_mel_fn(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=8000).shape),
}))
"""


def test_f5_tts_imports_without_the_libraries_synthesis_never_uses():
    result = run_py(["-c", LEAN], env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert out["heavy"] == []
    assert out["real_later"] and out["twin_used"]  # the stand-ins were removed once f5-tts was imported
    assert "hao3" in out["pinyin"] and out["mel"] == [100, 513]  # both load on first use and work
