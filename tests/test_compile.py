"""COMPILE=true: compiling waits for a first synthesis, requests are served while the blocks
compile in the background, the compiled blocks give the same audio as eager, and their code is
cached on the volume for the next worker."""

import json

from conftest import REF_TEXT, REF_WAV, run_py, subprocess_env

SCRIPT = f"""
import json, sys, time, soundfile as sf, numpy as np
import loaded_model, model_cache, synthesis
audio, rate = sf.read({str(REF_WAV)!r}, dtype="float32")
params = synthesis.SynthesisParams(nfe_step=4, seed=3)
eager = loaded_model.load_model(model_cache.SETTINGS.model_copy(update={{"compile": False}}))
reference = synthesis.synthesize(eager, audio, {REF_TEXT!r}, "A first text to speak.", params, 24000).audio
started = time.perf_counter()
model = loaded_model.get_model()  # its compile thread waits for a first synthesis
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
    "compile_s": compile_s, "waited_for_first_synthesis": waited, "served_while_compiling": compiling and compiling_after, "diff_during": diff(during),
    "diff": diff(first), "same_length": len(first) == len(reference),
    "uses_compiled": model.blocks[0] is not model.cfm.transformer.transformer_blocks[0],
    "graphs": graphs, "graphs_after": torch._dynamo.utils.counters["stats"]["unique_graphs"]}}))
"""


def run(env):
    result = run_py(["-c", SCRIPT], env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])


def test_compiled_model_matches_eager_and_its_cache_serves_the_next_worker(tmp_path):
    env = subprocess_env(MODELS_DIR=tmp_path / "models", COMPILE="true")
    assert run_py(["model_cache.py", "make-test-model"], env=env).returncode == 0

    first = run(env)
    assert first["waited_for_first_synthesis"]  # compiling would have slowed the first request
    assert first["served_while_compiling"] and first["diff_during"] < 1e-6  # the eager blocks, meanwhile
    assert first["uses_compiled"] and first["same_length"] and first["diff"] < 1e-4
    # One graph per input form the sampler uses (one row; rows with a padding mask), shared by
    # every DiT block; a text of another length compiles nothing new.
    assert first["graphs"] == first["graphs_after"] == 2
    cache = tmp_path / "models" / "torch" / "inductor"
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))

    second = run(env)  # a new worker on the same volume: inductor's generated code comes from the
    assert second["diff"] < 1e-4  # cache; dynamo still traces
    assert second["compile_s"] < 0.75 * first["compile_s"], (first["compile_s"], second["compile_s"])
