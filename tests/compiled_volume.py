"""A COMPILE=true worker on a volume: what it saw while its DiT blocks compiled in the background
(torch.compile: `run_worker`), or while it built or loaded them compiled ahead of time
(`start_aot_worker`, `aot_result`).

A cold compile of the blocks is a minute or two on two cores, the slowest thing the suite does.
The session does it once (conftest's `first_compiled_worker`): test_compile checks what that first
worker saw and starts a second one on its volume; the bench starts from the inductor cache it left.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REF_TEXT, REF_WAV, ROOT, run_py

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
    """SCRIPT in a fresh process with `env` (its MODELS_DIR is the volume): what the worker saw.
    The torch.compile path (AOT_COMPILE=false): what a worker falls back to."""
    result = run_py(["-c", SCRIPT], env={**env, "AOT_COMPILE": "false"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])


#: A worker with AOT_COMPILE on (the default): where its blocks came from, what it logged about
#: them, whether dynamo was ever imported (it traces for torch.compile and torch.export alike),
#: and its audio before and after against eager, for two text lengths (two row lengths).
AOT_SCRIPT = f"""
import json, logging, sys, soundfile as sf, numpy as np
import cache_env, config
settings = config.get_settings()
cache_env.configure(settings)
import compiled_blocks, loaded_model, synthesis
logs = []
handler = logging.Handler()
handler.emit = lambda record: logs.append(record.levelname + " " + record.getMessage())
logging.getLogger("f5worker").addHandler(handler)
logging.getLogger("f5worker").setLevel(logging.INFO)
audio, rate = sf.read({str(REF_WAV)!r}, dtype="float32")
params = synthesis.SynthesisParams(nfe_step=4, seed=3)
texts = ["A first text to speak.", "A text of another length, to speak as well."]
eager = loaded_model.load_model(settings.model_copy(update={{"compile": False}}))
references = [synthesis.synthesize(eager, audio, {REF_TEXT!r}, text, params, 24000).audio for text in texts]
model = loaded_model.get_model(settings)
at_load = model.compile_done.is_set() and isinstance(model.blocks[0], compiled_blocks.CompiledBlock)
during = synthesis.synthesize(model, audio, {REF_TEXT!r}, texts[0], params, 24000).audio
model.compile_done.wait()
after = [synthesis.synthesize(model, audio, {REF_TEXT!r}, text, params, 24000).audio for text in texts]
diff = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b)) if len(a) == len(b) else float("inf")
print("RESULT " + json.dumps({{
    "compiled_at_load": at_load, "uses_compiled": isinstance(model.blocks[0], compiled_blocks.CompiledBlock),
    "blocks": len(model.blocks), "dynamo": "torch._dynamo" in sys.modules, "logs": logs,
    "diff_during": diff(during, references[0]), "diffs": [diff(a, r) for a, r in zip(after, references)]}}))
"""


def start_aot_worker(env: dict) -> subprocess.Popen:
    """AOT_SCRIPT started in a fresh process with `env`: several can run at once on one volume."""
    return subprocess.Popen([sys.executable, "-c", AOT_SCRIPT], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def aot_result(worker: subprocess.Popen) -> dict:
    """What a worker of `start_aot_worker` saw, once it has finished."""
    stdout, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr[-3000:]
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
