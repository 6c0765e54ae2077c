"""Many jobs in one process: scratch space and memory stay flat.

SOAK_JOBS (default 500) sets the number of jobs; e.g. `SOAK_JOBS=5000 make test` for a longer
run. Every job runs the whole path (decode, clip, batched synthesis, encode, inline delivery)
with the tiny model."""

import base64
import gc
import os
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import SHORT_REF_TEXT, SHORT_REF_WAV, TEST_ENV

import loaded_model
from runpod_handler import Worker
from config import get_settings

JOBS = int(os.environ.get("SOAK_JOBS", "500"))
WARMUP_JOBS = 30
MAX_RSS_GROWTH = 50 * 2**20
TEXTS = ["Short one.", "Longer, with a pause. And a second one."]

pytestmark = pytest.mark.usefixtures("tiny_model")


def listing(path: Path) -> set:
    return {p.name for p in path.iterdir()} if path.exists() else set()


def test_many_jobs_leave_tmp_as_it_was_and_memory_flat(private_tmp):  # "/tmp": its own, only this test writes
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))
    voice = base64.b64encode(SHORT_REF_WAV.read_bytes()).decode()  # fewer frames in every job

    def run(i):
        job = {"text": TEXTS[i % 2], "voice_base64": voice, "ref_text": SHORT_REF_TEXT, "nfe_step": 4, "seed": i,
               "output_format": ["wav", "flac", "mp3", "ogg"][i % 4]}
        if i % 10 == 9:
            job["ref_text"] = None  # a transcript from (tiny) Whisper, cached by content after the first
        if i % 25 == 24:
            job["speed"] = 50  # a failing job now and then
        out = worker({"id": f"soak-{i}", "input": job})
        assert ("error" in out) == (i % 25 == 24), out.get("error")

    # f5-tts's own unbounded caches live in utils_infer, which the worker never imports (another
    # test in this process may have, to compare with stock f5-tts: then the jobs must not grow them).
    stock = sys.modules.get("f5_tts.infer.utils_infer")
    stock_caches = (len(stock._ref_audio_cache), len(stock._ref_text_cache)) if stock else None
    for i in range(WARMUP_JOBS):
        run(i)
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tmp_before, jobs_before = listing(Path(tempfile.gettempdir())), listing(Path(TEST_ENV["JOB_TMP_DIR"]))

    for i in range(WARMUP_JOBS, WARMUP_JOBS + JOBS):
        run(i)
    gc.collect()

    growth = process.memory_info().rss - rss_before
    assert growth < MAX_RSS_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MB over {JOBS} jobs"
    assert listing(Path(TEST_ENV["JOB_TMP_DIR"])) == jobs_before == set()
    assert listing(Path(tempfile.gettempdir())) == tmp_before
    if stock is None:
        assert "f5_tts.infer.utils_infer" not in sys.modules
    else:
        assert (len(stock._ref_audio_cache), len(stock._ref_text_cache)) == stock_caches
    assert len(worker.engine.transcripts.cache) <= worker.engine.transcripts.cache.size
    assert loaded_model.get_model(get_settings()).cfm.transformer.text_cond is None  # the DiT's per-call cache is cleared
