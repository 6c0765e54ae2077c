"""A COMPILE=true worker on a volume: what it saw while its DiT blocks compiled in the background.

A cold compile of the blocks is a minute or two on two cores, the slowest thing the suite does.
The session does it once (conftest's `first_compiled_worker`): test_compile checks what that first
worker saw and starts a second one on its volume; the bench starts from the inductor cache it left.
"""

from __future__ import annotations

import json

from conftest import REF_TEXT, REF_WAV, run_py

#: One worker's life: an eager reference, the model with its compile thread, a first synthesis
#: while compiling (on the eager blocks), then two of other lengths on the compiled ones.
SCRIPT = f"""
import json, sys, time, soundfile as sf, numpy as np
import cache_env, config
settings = config.get_settings()
cache_env.configure(settings)  # as every entry point does, before torch is imported
import loaded_model, synthesis
audio, rate = sf.read({str(REF_WAV)!r}, dtype="float32")
params = synthesis.SynthesisParams(nfe_step=4, seed=3)
eager = loaded_model.load_model(settings.model_copy(update={{"compile": False}}))
reference = synthesis.synthesize(eager, audio, {REF_TEXT!r}, "A first text to speak.", params, 24000).audio
started = time.perf_counter()
model = loaded_model.get_model(settings)  # its compile thread waits for a first synthesis
model.compile_thread.join(1.0)
waited = model.compile_thread.is_alive() and not model.served.is_set() and "torch._dynamo" not in sys.modules
compiling = not model.compile_done.is_set()
during = synthesis.synthesize(model, audio, {REF_TEXT!r}, "A first text to speak.", params, 24000).audio
compiling_after = not model.compile_done.is_set()
model.compile_done.wait()
compile_s = time.perf_counter() - started
import torch._dynamo
graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
first = synthesis.synthesize(model, audio, {REF_TEXT!r}, "A first text to speak.", params, 24000).audio
other = synthesis.synthesize(model, audio, {REF_TEXT!r}, "A text of another length, to speak as well.", params, 24000).audio
diff = lambda a: float(np.linalg.norm(a - reference) / np.linalg.norm(reference))
print("RESULT " + json.dumps({{
    "compile_s": compile_s, "waited_for_first_synthesis": waited, "served_while_compiling": compiling and compiling_after,
    "diff_during": diff(during), "diff": diff(first), "same_length": len(first) == len(reference),
    "uses_compiled": model.blocks[0] is not model.cfm.transformer.transformer_blocks[0],
    "graphs": graphs, "graphs_after": torch._dynamo.utils.counters["stats"]["unique_graphs"],
    "caches": {{name: dict(torch._dynamo.utils.counters[name]) for name in ("inductor", "aot_autograd")}}}}))
"""


def run_worker(env: dict) -> dict:
    """SCRIPT in a fresh process with `env` (its MODELS_DIR is the volume): what the worker saw."""
    result = run_py(["-c", SCRIPT], env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
