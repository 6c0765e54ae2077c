"""COMPILE=true: compiling waits for a first synthesis, requests are served while the blocks
compile in the background, the compiled blocks give the same audio as eager, and their code is
cached on the volume for the next worker; bench.py's warm run on such a volume matches stock.
(One file: its tests share the one cold compile of the session fixture in one test process.)"""

import json
import shutil
from pathlib import Path

from compiled_volume import run_worker
from conftest import run_py, subprocess_env


def test_compiled_model_matches_eager_and_its_cache_serves_the_next_worker(first_compiled_worker):
    env, first = first_compiled_worker  # a first worker on a fresh volume (conftest): a cold compile
    assert first["waited_for_first_synthesis"]  # compiling would have slowed the first request
    assert first["served_while_compiling"] and first["diff_during"] < 1e-6  # the eager blocks, meanwhile
    assert first["uses_compiled"] and first["same_length"] and first["diff"] < 1e-4
    # One graph per input form the sampler uses (one row; rows with a padding mask), shared by
    # every DiT block; a text of another length compiles nothing new.
    assert first["graphs"] == first["graphs_after"] == 2
    cache = Path(env["MODELS_DIR"]) / "torch" / "inductor"
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))

    cold = first["caches"]["inductor"]
    assert cold.get("fxgraph_cache_miss") == first["graphs"] and not cold.get("fxgraph_cache_hit"), first["caches"]

    second = run_worker(env)  # a new worker on the same volume: inductor's generated code comes
    assert second["diff"] < 1e-4  # from the cache; dynamo still traces
    # Counted, not timed (two processes' wall clocks on a busy machine say little): every graph's
    # code came from the volume's cache, none was generated again.
    warm = second["caches"]
    assert warm["inductor"].get("fxgraph_cache_hit") == first["graphs"] and not warm["inductor"].get(
        "fxgraph_cache_miss"), (warm, first["compile_s"], second["compile_s"])
    assert warm["aot_autograd"].get("autograd_cache_hit", 0) >= first["graphs"], warm


def test_bench_runs_on_a_cpu_and_matches_stock(tmp_path, first_compiled_worker):
    out = tmp_path / "bench.json"
    # COMPILE=true, as on a GPU: the bench gives the compile its first synthesis, waits for it
    # and times the compiled blocks. On a volume a worker compiled on before (the cold compile is
    # test_compile's to check): dynamo traces again, inductor's code comes from the cache. The
    # package compiled ahead of time is off: building it is test_compiled_blocks's to check.
    shutil.copytree(first_compiled_worker[0]["MODELS_DIR"], tmp_path / "models")
    env = subprocess_env(MODELS_DIR=None, COMPILE="true", AOT_COMPILE="false")
    result = run_py(["bench.py", "--arch", "tiny", "--device", "cpu", "--runs", "1", "--nfe", "4", "--cases", "one",
                     "--models-dir", str(tmp_path / "models"), "--json", str(out)], env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "speed-up" in result.stdout and "RTF" in result.stdout
    row = json.loads(out.read_text())["rows"][0]
    ours = row["ours"]["ours"]
    assert row["case"] == "one" and ours["audio_s"] > 1 and ours["audio_s"] == row["stock_audio_s"]
    assert ours["rel_diff"] < 1e-4  # stock f5-tts's samples for the same seed (fp32 on a CPU, compiled)
    assert row["stock_s"] > 0 and ours["s"] > 0 and ours["speedup"] == row["stock_s"] / ours["s"]
    assert ours["first_call_s"] > ours["s"]  # the eager first synthesis and the compile came first
