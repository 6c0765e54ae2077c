"""RunPod's model cache (the endpoint's Model field): a read-only store in the hub's layout, read
before the volume, with the network off (HF_ENDPOINT is a closed port in the tests)."""

import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import STORE, link_grammars, safetensors_bytes, tiny_checkpoint_state, vocos_files
from fake_hub import place_in_hub_cache

import checkpoints
import loaded_model
import model_cache
import runpod_cache
from config import ConfigError, Settings, get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")

REPO, NAME = checkpoints.HUB_CHECKPOINTS["F5TTS_v1_Base"]


def tree(folder: Path) -> dict:
    """Every entry under `folder` with what would show a write: its kind, size, mode and mtime."""
    return {str(p.relative_to(folder)): (p.is_symlink(), p.lstat().st_size, p.lstat().st_mode, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def set_read_only(folder: Path, read_only: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o555 if path.is_dir() else 0o444) if read_only else (0o755 if path.is_dir() else 0o644))


def writable(folder: Path) -> bool:
    """Whether the test user can write into `folder` despite its mode (root can)."""
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def runpod_hub(tmp_path):
    """RunPod's cache with the checkpoint and Vocos in the hub's layout, made read-only; yields a
    function that builds the settings of a worker with it and a volume of its own."""
    cache = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    place_in_hub_cache(cache, REPO, NAME, safetensors_bytes(tiny_checkpoint_state()))
    for filename, data in vocos_files().items():
        place_in_hub_cache(cache, checkpoints.VOCOS_REPO, filename, data)
    set_read_only(cache, True)
    runpod_cache._verdicts.clear()

    def settings(**update):
        return get_settings().model_copy(update={
            "f5_model": "F5TTS_v1_Base", "models_dir": tmp_path / "models", "runpod_model_cache": cache,
            "prefetch_asr": False, "f5_vocab_file": STORE.tiny_dir / "vocab.txt", "compile": False, **update})

    yield cache, settings
    set_read_only(cache, False)
    runpod_cache._verdicts.clear()


@pytest.fixture
def tiny_sized(monkeypatch):
    """The published checkpoint's name with the tiny architecture (what the fake stores hold)."""
    monkeypatch.setattr(model_cache, "model_config", lambda name: ("DiT", dict(checkpoints.TINY_ARCH)))


def test_the_worker_loads_from_runpods_cache_and_writes_nothing_there(runpod_hub, tiny_sized, caplog):
    cache, settings = runpod_hub
    before = tree(cache)
    with caplog.at_level(logging.INFO, logger="f5worker.loaded_model"):
        model = loaded_model.load_model(settings(allow_model_download=False))
    assert runpod_cache.holds(cache, model.loaded_from) and runpod_cache.holds(cache, model.files.vocoder_dir)
    assert f"checkpoint from RunPod model cache ({model.files.checkpoint})" in caplog.text
    assert tree(cache) == before
    assert not list((settings().models_dir / "hub").glob("models--*"))  # nothing copied onto the volume


def test_a_write_into_the_fake_cache_would_not_pass_unseen(runpod_hub):
    """What makes a write by the worker in the tests above fail or show: the cache refuses it, as
    RunPod's does; where modes do not keep writes out (root), the tree they compare sees each kind
    of write the hub's client makes (a lock file, a blob rewritten in place, a new snapshot entry)."""
    cache, _ = runpod_hub
    repo = cache / f"models--{REPO.replace('/', '--')}"
    if not writable(cache):
        assert not writable(repo)
        return
    blob = next(p for p in (repo / "blobs").iterdir() if p.is_file())
    for write in (lambda: (cache / ".locks").mkdir(),
                  lambda: blob.write_bytes(blob.read_bytes()),
                  lambda: (repo / "snapshots" / "new").mkdir()):
        os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns - 10**9))  # an older mtime to move from
        before = tree(cache)
        write()
        assert tree(cache) != before


def test_a_file_missing_or_corrupt_there_comes_from_the_volume(runpod_hub, tiny_sized, caplog):
    cache, settings = runpod_hub
    volume_hub = settings().models_dir / "hub"
    on_volume = place_in_hub_cache(volume_hub, REPO, NAME, safetensors_bytes(tiny_checkpoint_state()))
    for filename, data in vocos_files().items():
        place_in_hub_cache(volume_hub, checkpoints.VOCOS_REPO, filename, data)
    # bits gone bad in RunPod's copy of the checkpoint (its blob no longer matches its name), and
    # Vocos's config missing there
    set_read_only(cache, False)
    blob = Path(os.path.realpath(runpod_cache.cached_file(cache, REPO, NAME)))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    shutil.rmtree(runpod_cache.repo_folder(cache, checkpoints.VOCOS_REPO) / "snapshots")
    runpod_cache._verdicts.clear()
    set_read_only(cache, True)
    before = tree(cache)
    with caplog.at_level(logging.WARNING, logger="f5worker.model_cache"):
        # the loader finds it as it reads it ahead, and loads the volume's instead
        model = loaded_model.load_model(settings(allow_model_download=False))
        assert model.loaded_from == on_volume and not runpod_cache.holds(cache, model.files.vocoder_dir)
        files = model_cache.resolve_model_files(settings(allow_model_download=False))
        assert files.checkpoint == on_volume
    assert caplog.text.count("does not match its sha256") == 1  # logged once, not at every look
    assert tree(cache) == before and blob.read_bytes() == bytes(data)  # never repaired


def test_prefetch_and_status_say_which_store_holds_each_file(runpod_hub, capsys):
    cache, settings = runpod_hub
    s = settings()
    link_grammars(s.models_dir)
    before = tree(cache)
    assert model_cache.prefetch(s) == 0  # the network is off: only what RunPod's cache lacks would be fetched
    out = capsys.readouterr().out
    assert f"ok       {REPO}/{NAME}" in out and "(RunPod model cache)" in out
    assert tree(cache) == before
    assert model_cache.status(s) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["checkpoint"].endswith("(RunPod model cache)") and lines["vocoder"].endswith("(RunPod model cache)")
    assert "present, read first, never written" in lines["RunPod"]


def test_runpods_mount_folder_alone_is_no_network_volume(tmp_path):
    """Without a network volume RunPod still makes /runpod-volume to mount its cache in."""
    (tmp_path / "huggingface-cache" / "hub").mkdir(parents=True)
    s = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)})
    assert not s.on_volume and s.runpod_model_cache == tmp_path / "huggingface-cache" / "hub"
    with pytest.raises(ConfigError, match="REQUIRE_VOLUME"):
        Settings.from_env({"RUNPOD_VOLUME": str(tmp_path), "REQUIRE_VOLUME": "true"})
    (tmp_path / "models").mkdir()  # a volume holds more than RunPod's cache
    assert Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)}).on_volume
    assert Settings.from_env({"RUNPOD_MODEL_CACHE": str(tmp_path / "x")}).runpod_model_cache == tmp_path / "x"



def test_whisper_is_not_downloaded_onto_a_disk_too_small_for_it(monkeypatch):
    """Without a network volume the models folder is on the container disk: Whisper (1.6 GB) is
    downloaded only where it fits beside the jobs' scratch space; else such a job fails alone."""
    from types import SimpleNamespace

    import asr
    from errors import TranscriptUnavailable

    monkeypatch.setattr(asr, "_loaded", {})
    monkeypatch.setattr(asr, "_failed", {})
    monkeypatch.setattr(asr.shutil, "disk_usage", lambda path: SimpleNamespace(free=900 * 2**20))
    settings = get_settings().model_copy(update={"asr_model": "test/whisper-not-here", "allow_model_download": True})
    with pytest.raises(TranscriptUnavailable) as err:
        asr.get_transcriber(settings)
    assert "has 900 MB free, too little to download it" in err.value.message and "send ref_text" in err.value.message
