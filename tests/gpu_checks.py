"""Checks that need a CUDA GPU (CI has none), on random F5TTS_v1_Base and E2TTS_Base weights:
- a replayed CUDA graph gives exactly what eager steps give;
- ours (fp32 time grid) is closer than stock CFM.sample to the same model run in fp32;
- compiling waits for a first request, which runs on the eager blocks, and the compiled blocks
  then give the eager audio within fp16 rounding.

    python bench.py --cases one --runs 1    # writes the random weights into /tmp/f5-bench-models
    python tests/gpu_checks.py              # prints the figures, fails on a broken check
"""
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MODELS_DIR", "/tmp/f5-bench-models")
os.environ.update(ALLOW_MODEL_DOWNLOAD="false", PREFETCH_ASR="false", F5_MODEL="F5TTS_v1_Base")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cache_env
from config import get_settings

cache_env.configure(get_settings())  # before torch is imported
import numpy as np
import soundfile as sf
import torch

import lean_imports
import loaded_model
import checkpoints
import sampler
import synthesis

lean_imports.import_f5_model()
from f5_tts.model.utils import convert_char_to_pinyin
OUT = os.environ.get("OUT", "/tmp")
res = {}
rel = lambda a, c: float((a - c).norm() / c.norm())
eager = loaded_model.load_model(get_settings().model_copy(update={"compile": False}))
g = torch.Generator().manual_seed(1)
ref = (torch.randn(2, 24000 * 5, generator=g) * 0.1).cuda()
texts = convert_char_to_pinyin(["Some call me nature, others call me mother nature. " + "The quick brown fox jumps over the lazy dog. " * 3,
                                "Some call me nature, others call me mother nature. " + "Hello there, how are you today? " * 3])
dur = torch.tensor([1500, 1300]).cuda()
cfm32 = copy.deepcopy(eager.cfm).float()
with torch.inference_mode():
    for b in (1, 2):
        stock = eager.cfm.sample(cond=ref[:b], text=texts[:b], duration=dur[:b], steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)[0].float()
        full = cfm32.sample(cond=ref[:b], text=texts[:b], duration=dur[:b], steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)[0]
        e, _ = sampler.sample(eager.cfm, ref[:b], texts[:b], dur[:b], seed=3, cuda_graph=False)
        gr, _ = sampler.sample(eager.cfm, ref[:b], texts[:b], dur[:b], seed=3, cuda_graph=True)
        res[f"rows={b}"] = {"graphed vs eager": rel(gr, e), "ours vs stock": rel(gr, stock), "ours vs fp32": rel(gr, full),
                            "stock vs fp32": rel(stock, full), "finite": bool(torch.isfinite(gr).all())}
        print(b, res[f"rows={b}"], flush=True)
del cfm32
# E2-TTS: E2TTS_Base's UNetT at its real size, random weights, fp16 on the GPU
e2_files = checkpoints.ModelFiles("E2TTS_Base", *checkpoints.model_config("E2TTS_Base"), eager.files.checkpoint,
                                  eager.files.vocab, eager.files.vocoder_dir)
with torch.device("cuda"):
    e2 = checkpoints.build_cfm(e2_files)
with torch.no_grad():
    for param in e2.parameters():
        if not param.any():
            param.normal_(0.0, 0.05)
e2_32 = copy.deepcopy(e2)
e2 = e2.half().eval()
with torch.inference_mode():
    for b in (1, 2):
        stock = e2.sample(cond=ref[:b], text=texts[:b], duration=dur[:b], steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)[0].float()
        full = e2_32.sample(cond=ref[:b], text=texts[:b], duration=dur[:b], steps=32, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)[0]
        e, _ = sampler.sample(e2, ref[:b], texts[:b], dur[:b], seed=3, cuda_graph=False)
        gr, _ = sampler.sample(e2, ref[:b], texts[:b], dur[:b], seed=3, cuda_graph=True)
        res[f"E2TTS_Base rows={b}"] = {"graphed vs eager": rel(gr, e), "ours vs stock": rel(gr, stock),
                                       "ours vs fp32": rel(gr, full), "stock vs fp32": rel(stock, full),
                                       "finite": bool(torch.isfinite(gr).all())}
        print("E2", b, res[f"E2TTS_Base rows={b}"], flush=True)
    step = lambda: sampler.sample(e2, ref[:1], texts[:1], dur[:1], seed=3, cuda_graph=True)
    step(); torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    res["E2TTS_Base one row, 32 steps, s"] = (time.perf_counter() - t0) / 3
del e2, e2_32
# background compile: a first request on the eager blocks, then the compiled blocks
audio, rate = sf.read(checkpoints.f5_package_dir() / "infer/examples/basic/basic_ref_en.wav", dtype="float32")
params = synthesis.SynthesisParams(nfe_step=32, seed=3)
text = "The quick brown fox jumps over the lazy dog while the evening sun sets slowly behind the hills."
base = synthesis.synthesize(eager, audio, "Some call me nature, others call me mother nature.", text, params, 24000).audio
t0 = time.perf_counter()
model = loaded_model.load_model(get_settings().model_copy(update={"compile": True}))
loaded = time.perf_counter() - t0
busy = not model.compile_done.is_set() and not model.served.is_set()  # waiting for a first request
t1 = time.perf_counter()
during = synthesis.synthesize(model, audio, "Some call me nature, others call me mother nature.", text, params, 24000).audio
during_s = time.perf_counter() - t1
busy_after = not model.compile_done.is_set()
model.compile_done.wait()
compile_s = time.perf_counter() - t0
after = synthesis.synthesize(model, audio, "Some call me nature, others call me mother nature.", text, params, 24000).audio
d = lambda a: float(np.linalg.norm(a - base) / np.linalg.norm(base))
res["background compile"] = {"load_s": loaded, "first_request_s": during_s, "compiled_after_first_request": busy and busy_after,
                             "during vs eager": d(during), "compiled vs eager": d(after), "compile_s": compile_s,
                             "uses_compiled": model.blocks[0] is not model.cfm.transformer.transformer_blocks[0]}
print(json.dumps(res, indent=1))
json.dump(res, open(f"{OUT}/gpu_checks.json", "w"), indent=1)
for rows in ("rows=1", "rows=2", "E2TTS_Base rows=1", "E2TTS_Base rows=2"):
    r = res[rows]
    assert r["finite"] and r["graphed vs eager"] == 0.0, r
    assert r["ours vs fp32"] < r["stock vs fp32"], r
bg = res["background compile"]
assert bg["compiled_after_first_request"] and bg["during vs eager"] < 1e-6 and bg["uses_compiled"], bg
assert bg["compiled vs eager"] < 1e-2, bg
print("all GPU checks passed")
