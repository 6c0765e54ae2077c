"""bench.py runs, compares stock and ours on the same inputs, and finds the same audio (its warm,
compiled run is in test_compile.py, beside the cold compile whose volume it reuses)."""

import json

import pytest
from conftest import link_grammars, run_py, subprocess_env


@pytest.mark.usefixtures("grammars_on_volume")  # the compiled grammars that link_grammars links
def test_bench_cold_starts_stock_and_the_worker_itself(tmp_path):
    out = tmp_path / "cold.json"
    link_grammars(tmp_path / "models")  # its first jobs' text reaches the English grammar
    result = run_py(["bench.py", "--cold", "--arch", "tiny", "--device", "cpu", "--nfe", "4", "--first-jobs", "3",
                     "--models-dir", str(tmp_path / "models"), "--json", str(out)], env=subprocess_env(MODELS_DIR=None),
                    timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert results["bare import torch"]["torch"] > 0
    # Ours is `python runpod_handler.py` on a test_input.json job; its model load logs the phases.
    ours = results["ours"]
    assert 0 < ours["ready"] < ours["first_audio"], ours
    assert "loaded tiny from" in ours["load_log"][0] and "after the process started" in ours["load_log"][0]
    # A fresh worker's first jobs, timed from the handler's call: the job's own timings count from there too.
    jobs = json.loads(out.read_text())["first_jobs"]
    assert len(jobs) == 3 and not any(job["error"] for job in jobs), jobs
    for job in jobs:
        assert 0 < job["timings"]["first_audio"] <= job["to_first_audio"] + 0.001 <= job["to_result"] + 0.001
    assert "a fresh worker's first jobs" in result.stdout and "of steady" in result.stdout
    stock = results["stock"]  # stock imports all of f5-tts: it needs requirements-bench.txt, CI lacks it
    if "error" in stock:
        assert "requirements-bench.txt" in stock["error"] and "stock" in result.stdout, stock
    else:
        assert 0 < stock["ready"] < stock["first_audio"] and "ours vs stock" in result.stdout, stock


def test_bench_resample_compares_torchaudio_and_soxr(tmp_path):
    """Ordinary rates here (the awkward ones take torchaudio 9 GB and 17 s each: see
    docs/benchmarks.md for that run)."""
    out = tmp_path / "resample.json"
    result = run_py(["bench.py", "--resample", "--rates", "44100,48000", "--json", str(out)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["rate"] for r in rows] == [44100, 48000]
    for row in rows:
        for lib in ("torchaudio", "soxr"):
            assert row[lib]["error"] is None and row[lib]["s"] > 0, row
    assert "torchaudio" in result.stdout and "time ratio" in result.stdout


def tiny_bench(tmp_path, mode: str, cases: str):
    """`bench.py <mode>` on the tiny model, one run at NFE 4, of `cases`: its output and its rows."""
    out = tmp_path / "bench.json"
    result = run_py(["bench.py", mode, "--arch", "tiny", "--device", "cpu", "--runs", "1", "--nfe", "4",
                     "--cases", cases, "--models-dir", str(tmp_path / "models"), "--json", str(out)],
                    env=subprocess_env(MODELS_DIR=None), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(out.read_text())["rows"]


def test_bench_stream_times_first_audio_for_stock_and_ours(tmp_path):
    from benchmarks.streaming import stall

    assert stall([(1.0, 2.0), (2.5, 1.0), (5.0, 1.0)]) == 1.0  # plays 1-3 s, then 3-4 s; waits 4-5 s
    result, [row] = tiny_bench(tmp_path, "--stream", "two")
    who = row["who"]
    assert set(who) == {"stock stream", "ours whole", "ours stream", "stream, no bridge"}
    assert who["ours whole"]["pieces"] == 1 and who["ours stream"]["pieces"] == 2 and who["stock stream"]["pieces"] > 2
    for t in who.values():
        assert 0 < t["first"] <= t["total"] and t["stall"] >= 0 and t["audio_s"] > 5, t
    assert "vs stock" in result.stdout


def test_bench_dialogue_batches_four_speakers_against_one_segment_at_a_time(tmp_path):
    from benchmarks.dialogue import SCRIPT, SPEAKERS

    assert len(SPEAKERS) == 4 and 1900 <= len(" ".join(t for _, t in SCRIPT)) <= 2100
    assert {voice for voice, _ in SCRIPT} == {0, 1, 2, 3}
    out = tmp_path / "dialogue.json"
    # Two sampling steps: the rows and their bookkeeping are the point here, and every way of making
    # the dialogue samples its segments (with references of 5 to 10 s) twice.
    result = run_py(["bench.py", "--dialogue", "--arch", "tiny", "--device", "cpu", "--runs", "1", "--nfe", "2",
                     "--segments", "4", "--models-dir", str(tmp_path / "models"), "--json", str(out)],
                    env=subprocess_env(MODELS_DIR=None), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert list(rows) == ["stock, one segment at a time", "ours, one segment at a time",
                          "ours, batched across speakers", "ours, one voice (same text)"]
    assert data["segments"] == 4 and data["batches"] < data["chunks"]
    # the same segments, whichever way they are made: as much audio (stock sizes chunks by the same rule)
    assert rows["stock, one segment at a time"]["audio_s"] == rows["ours, one segment at a time"]["audio_s"] \
        == rows["ours, batched across speakers"]["audio_s"] > 10
    assert all(r["s"] > 0 for r in rows.values()) and "vs one voice" in result.stdout


@pytest.mark.usefixtures("grammars_on_volume")
def test_bench_normalize_reports_load_and_per_text_times(tmp_path):
    from conftest import link_grammars

    from benchmarks.normalization import NUMBERED_TEXT

    assert sum(ch.isdigit() for ch in NUMBERED_TEXT) > 40
    link_grammars(tmp_path / "models")  # compiled once per session already: loaded, not compiled again
    out = tmp_path / "normalize.json"
    result = run_py(["bench.py", "--normalize", "--runs", "1", "--models-dir", str(tmp_path / "models"),
                     "--json", str(out)], env=subprocess_env(MODELS_DIR=None, MAX_NORMALIZE_CHARS=200))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["compile_s"] == {} and set(data["load_s"]) == {"en", "zh"}
    texts = data["texts"]
    assert texts["long text (bench.py's, no digits)"]["grammar_chars"] == 0
    numbered = texts["long text, a number in every sentence"]
    assert 0 < numbered["grammar_chars"] < numbered["chars"] < numbered["spoken_chars"]
    assert 150 <= data["at_limit"]["grammar_chars"] <= 260 and "load en grammar" in result.stdout


def test_bench_verify_times_the_job_unverified_heard_and_resampled(tmp_path):
    result, [row] = tiny_bench(tmp_path, "--verify", "one")
    assert row["plain"]["samplings"] == row["heard"]["samplings"] == row["plain"]["chunks"] == 1
    assert row["plain"]["verify_s"] == 0 and row["heard"]["verify_asr_s"] > 0
    assert row["retried"]["samplings"] == 3  # random weights are heard wrong: every attempt made
    assert row["heard"]["overhead"] == row["heard"]["synthesis_s"] / row["plain"]["synthesis_s"] - 1
    assert 0 < row["first_audio_s"]["plain"] < row["first_audio_s"]["heard"]  # the first piece is heard first
    assert "verify's cost" in result.stdout and "one streamed: first audio" in result.stdout
