"""COMPILE=true: compiling waits for a first synthesis, requests are served while the blocks
compile in the background, the compiled blocks give the same audio as eager, and their code is
cached on the volume for the next worker."""

from pathlib import Path

from compiled_volume import run_worker


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
