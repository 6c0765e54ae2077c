"""The model of this process: loaded once, from the fp16 copy only when it is current and
intact, with its weights read ahead while the libraries import."""

import threading
from pathlib import Path

import pytest
import torch
from conftest import corrupt_in_place

import loaded_model
import fp16_copy
import hub_cache
import model_cache
from errors import ModelLoadError
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model


def test_custom_checkpoint_of_the_wrong_architecture_is_a_clear_error(v1_base_in_hub_cache):
    settings = get_settings().model_copy(update={
        "f5_model": "F5TTS_v1_Small", "f5_ckpt_file": STORE.tiny_dir / "model.safetensors"})
    files = model_cache.resolve_model_files(settings)
    assert files.checkpoint == STORE.tiny_dir / "model.safetensors"
    with pytest.raises(ModelLoadError, match="does not fit F5TTS_v1_Small"):
        loaded_model.load_model(settings)


def test_get_model_from_many_threads_loads_once(monkeypatch):
    calls = []
    real = loaded_model.load_model

    def counting(settings):
        calls.append(threading.get_ident())
        return real(settings)

    monkeypatch.setattr(loaded_model, "_model", None)
    monkeypatch.setattr(loaded_model, "load_model", counting)
    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait()
        results.append(loaded_model.get_model(get_settings()))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert results[0].load_seconds > 0 and results[0].device == "cpu"
    assert loaded_model.get_model(get_settings()) is results[0]


def test_fp16_copy_is_loaded_in_fp16_only_and_ignored_when_stale(copied_tiny, monkeypatch):
    assert loaded_model.checkpoint_to_load(copied_tiny, torch.float16) == copied_tiny.checkpoint  # none yet
    artifact = fp16_copy.write_fp16_artifact(copied_tiny)
    assert loaded_model.checkpoint_to_load(copied_tiny, torch.float16) == artifact
    assert loaded_model.checkpoint_to_load(copied_tiny, torch.float32) == copied_tiny.checkpoint

    # the worker's load takes it when it runs in fp16
    monkeypatch.setattr(model_cache, "resolve_model_files", lambda settings: copied_tiny)
    monkeypatch.setattr(loaded_model, "inference_dtype", lambda device: torch.float16)
    loaded = loaded_model.load_model(get_settings())
    assert loaded.loaded_from == artifact and loaded.dtype == torch.float16

    # a new checkpoint in the same place makes the copy stale
    import os
    import time

    time.sleep(0.01)
    data = copied_tiny.checkpoint.read_bytes()
    copied_tiny.checkpoint.write_bytes(data)
    os.utime(copied_tiny.checkpoint, ns=(time.time_ns(), time.time_ns()))
    assert loaded_model.checkpoint_to_load(copied_tiny, torch.float16) == copied_tiny.checkpoint

    # a torn copy (manifest says another size) is ignored too
    fp16_copy.write_fp16_artifact(copied_tiny)
    artifact.write_bytes(artifact.read_bytes()[:100])
    assert loaded_model.checkpoint_to_load(copied_tiny, torch.float16) == copied_tiny.checkpoint


def test_a_corrupt_fp16_copy_of_the_right_size_is_never_loaded(copied_tiny, monkeypatch, caplog):
    artifact = fp16_copy.write_fp16_artifact(copied_tiny)
    assert fp16_copy.fp16_copy_is_intact(copied_tiny)
    corrupt_in_place(artifact)
    assert fp16_copy.fp16_copy_is_current(copied_tiny)  # size and source still match...
    assert not fp16_copy.fp16_copy_is_intact(copied_tiny)  # ...the digest does not

    monkeypatch.setattr(model_cache, "resolve_model_files", lambda settings: copied_tiny)
    monkeypatch.setattr(loaded_model, "inference_dtype", lambda device: torch.float16)
    loaded = loaded_model.load_model(get_settings().model_copy(update={"device": "auto"}))
    assert loaded.loaded_from == copied_tiny.checkpoint  # the checkpoint instead
    assert "does not match its sha256" in caplog.text
    assert all(torch.isfinite(p).all() for p in loaded.cfm.parameters())

    fp16_copy.write_fp16_artifact(copied_tiny)
    loaded = loaded_model.load_model(get_settings().model_copy(update={"device": "auto"}))
    assert loaded.loaded_from == artifact


def test_load_reads_the_weights_ahead_while_importing(monkeypatch):
    seen = []
    real = loaded_model.read_ahead
    monkeypatch.setattr(loaded_model, "read_ahead", lambda files: seen.append(files) or real(files))
    loaded_model.load_model(get_settings())
    assert seen == [{STORE.tiny_dir / "model.safetensors": None,
                     STORE.tiny_dir / "vocos" / "pytorch_model.bin": None}]
    weights = STORE.tiny_dir / "model.safetensors"
    reader = real({weights: hub_cache.sha256_of(weights), Path("/nonexistent/file"): "0" * 64,
                   STORE.tiny_dir / "vocab.txt": "0" * 64})
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert reader.intact(weights) is True and reader.intact(STORE.tiny_dir / "vocab.txt") is False
    assert reader.intact(Path("/nonexistent/file")) is None


def test_a_failed_load_is_not_tried_again_for_the_next_job(monkeypatch):
    """The load at start fails (offline: half a minute of hub retries): the job that follows gets
    the same sentence at once, and the worker asks to be replaced, instead of a second try."""
    calls = []

    def failing(settings):
        calls.append(1)
        raise ModelLoadError("Could not download the model.")

    monkeypatch.setattr(loaded_model, "_model", None)
    monkeypatch.setattr(loaded_model, "_failure", None)
    monkeypatch.setattr(loaded_model, "load_model", failing)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="Could not download the model.") as raised:
            loaded_model.get_model(get_settings())
        assert raised.value.refresh_worker
    assert len(calls) == 1


def test_an_unreachable_hub_is_one_sentence_that_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, local_files_only=False, **kwargs):
        try:
            raise ConnectionError("[Errno 111] Connection refused")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we "
                                          "cannot find the requested files in the local cache. Please check your "
                                          "connection and try again or make sure your Internet connection is on.") \
                from cause

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for fetch in (lambda: hub_cache.hub_file(STORE.hub_dir, "SWivid/F5-TTS", "F5TTS_v1_Base/model.safetensors",
                                               download=True),
                  lambda: hub_cache.hub_snapshot(STORE.hub_dir, "openai/whisper-large-v3-turbo", download=True)):
        with pytest.raises(ModelLoadError) as raised:
            fetch()
        message = raised.value.message
        assert "the Hugging Face hub could not be reached (ConnectionError)" in message
        assert "`python model_cache.py prefetch`" in message and "F5_MODEL=tiny" in message
        assert "Internet connection" not in message and message.count(". ") <= 2


def test_the_warm_up_does_not_let_a_background_compile_begin_a_jobs_synthesis_does():
    """A compile waits for a first synthesis (it takes the CPU and the GIL); the warm-up's is not
    one, or the compile would start just as the first jobs come."""
    import numpy as np

    import engine
    import synthesis

    model = loaded_model.load_model(get_settings().model_copy(update={"compile": False}))
    engine.synthesize_once(model, get_settings().max_batch_frames)
    assert not model.served.is_set()
    tone = (0.3 * np.sin(np.arange(model.sample_rate) / 5.0)).astype(np.float32)
    synthesis.synthesize(model, tone, "Hi there.", "Hello.", synthesis.SynthesisParams(nfe_step=2), 24_000)
    assert model.served.is_set()
