"""The storage architecture: caches on the volume, local-first resolution, downloads through
huggingface_hub against a local hub stand-in, the fp16 copy, and the prefetch/status commands."""

import json
from pathlib import Path

import pytest
import torch
from conftest import (corrupt_in_place, link_grammars, run_py, safetensors_bytes, subprocess_env,
                      tiny_checkpoint_state, vocos_files)
from fake_hub import COMMIT, FakeHub

import loaded_model
import checkpoints
import fp16_copy
import hub_cache
import model_cache
import text_normalization
from errors import ModelLoadError
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # the tiny model's files, and the grammars prefetch links


@pytest.mark.parametrize("first_import", ["runpod_handler", "loaded_model", "synthesis"])
def test_cache_variables_are_set_before_libraries_read_them(tmp_path, first_import):
    """A fresh process that imports the handler (or a module that loads or runs the model, as
    tools and tests do) sees every cache under <models>."""
    code = (
        # the handler is an entry point: importing it configures; the others are configured first, as tools and tests do
        ("" if first_import == "runpod_handler" else
         "import cache_env, config; cache_env.configure(config.get_settings())\n") +
        f"import json, {first_import}, huggingface_hub.constants as c, torch.hub, os\n"
        "print(json.dumps({'hub': c.HF_HUB_CACHE, 'home': c.HF_HOME, 'torch': torch.hub.get_dir(),"
        " 'env': {k: os.environ[k] for k in ('TRANSFORMERS_CACHE', 'TORCHINDUCTOR_CACHE_DIR', 'TRITON_CACHE_DIR')}}))"
    )
    env = subprocess_env(RUNPOD_VOLUME=tmp_path, MODELS_DIR=None, HF_HOME="/somewhere/else", HF_HUB_CACHE=None)
    result = run_py(["-c", code], env=env)
    assert result.returncode == 0, result.stderr
    assert "imported before model_cache" not in result.stderr  # torch reads some of them lazily
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    models = tmp_path / "models"
    assert seen["hub"] == str(models / "hub")
    assert seen["home"] == str(models)
    assert seen["torch"] == str(models / "torch" / "hub")
    assert seen["env"] == {
        "TRANSFORMERS_CACHE": str(models / "transformers"),
        "TORCHINDUCTOR_CACHE_DIR": str(models / "torch" / "inductor"),
        "TRITON_CACHE_DIR": str(models / "torch" / "triton"),
    }


def test_layout_is_created(tmp_path):
    model_cache.ModelStore(tmp_path).ensure_layout()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(model_cache.LAYOUT)


def test_the_store_is_built_from_the_settings(tmp_path):
    import dataclasses

    store = model_cache.ModelStore.from_settings(get_settings().model_copy(update={"models_dir": tmp_path}))
    assert (store.models_dir, store.hub_dir, store.artifacts_dir, store.checkpoints_dir, store.tiny_dir) == \
        (tmp_path, tmp_path / "hub", tmp_path / "f5-tts", tmp_path / "checkpoints", tmp_path / "f5-tts" / "tiny")
    assert store.fp16_copy("F5TTS_v1_Base") == tmp_path / "f5-tts" / "F5TTS_v1_Base" / "model_fp16.safetensors"
    assert store.custom_path(Path("mine/model.pt")) == tmp_path / "checkpoints" / "mine" / "model.pt"
    assert store.custom_path(Path("/elsewhere/model.pt")) == Path("/elsewhere/model.pt")
    assert store == model_cache.ModelStore(str(tmp_path), get_settings().runpod_model_cache, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.hub_dir = tmp_path


# --- real-format checkpoints, found where a real F5TTS_v1_Base would be ---------------------


def test_published_checkpoint_is_found_on_the_volume_without_network(v1_base_in_hub_cache):
    # HF_ENDPOINT points at a closed port: any request would raise.
    settings = get_settings().model_copy(update={"f5_model": "F5TTS_v1_Base"})
    files = model_cache.resolve_model_files(settings)
    assert files.checkpoint == v1_base_in_hub_cache
    vocos_snapshot = STORE.hub_dir / "models--charactr--vocos-mel-24khz" / "snapshots" / COMMIT
    assert files.vocoder_dir == vocos_snapshot
    assert files.arch["depth"] == 22  # the real architecture from f5-tts's config

    # The tiny weights stored there load through the same reader into the real classes.
    tiny = checkpoints.ModelFiles("tiny", "DiT", dict(checkpoints.TINY_ARCH), files.checkpoint, files.vocab,
                                  files.vocoder_dir)
    cfm = checkpoints.build_cfm(tiny)
    cfm.load_state_dict(checkpoints.read_checkpoint(files.checkpoint))
    loaded_model.load_vocoder(files.vocoder_dir, "cpu")


def test_missing_model_with_downloads_off_says_what_to_run():
    settings = get_settings().model_copy(update={"f5_model": "E2TTS_Base", "allow_model_download": False})
    with pytest.raises(ModelLoadError, match="prefetch"):
        model_cache.resolve_model_files(settings)


def test_pt_checkpoint_format_loads(tmp_path):
    state = tiny_checkpoint_state()
    state.update(initted=torch.tensor(True), step=torch.tensor(1250000))  # as ema_pytorch saves them
    path = tmp_path / "model.pt"
    torch.save({"ema_model_state_dict": state}, path)
    cfm = checkpoints.build_cfm(checkpoints.ModelFiles("tiny", "DiT", dict(checkpoints.TINY_ARCH), path,
                                                       STORE.tiny_dir / "vocab.txt", tmp_path))
    cfm.load_state_dict(checkpoints.read_checkpoint(path))
    reference = checkpoints.read_checkpoint(STORE.tiny_dir / "model.safetensors")
    for key, value in cfm.state_dict().items():
        if key in reference:
            assert torch.equal(value, reference[key])


def test_truncated_checkpoint_is_reported_with_its_path(tmp_path):
    data = (STORE.tiny_dir / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as err:
        checkpoints.read_checkpoint(path)
    assert str(path) in err.value.message and "prefetch" in err.value.message


# --- the download path, against a local stand-in for the hub ------------------------------


def hub_files() -> dict:
    repo, name = checkpoints.HUB_CHECKPOINTS["F5TTS_v1_Base"]
    files = {(repo, name): safetensors_bytes(tiny_checkpoint_state())}
    files.update({(checkpoints.VOCOS_REPO, n): data for n, data in vocos_files().items()})
    return files


def prefetch_env(models: Path, hub: FakeHub, prefetch_asr: bool = False):
    if not text_normalization.grammar_root(models).exists():
        link_grammars(models)
    return subprocess_env(MODELS_DIR=models, F5_MODEL="F5TTS_v1_Base", HF_ENDPOINT=hub.url,
                          PREFETCH_ASR=str(prefetch_asr).lower())


def test_prefetch_downloads_into_the_volume_once_and_is_idempotent(tmp_path):
    models = tmp_path / "models"
    with FakeHub(hub_files()) as hub:
        first = run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub))
        assert first.returncode == 0, first.stderr
        assert len(hub.downloads()) == 3  # checkpoint, vocos config, vocos weights
        blobs = sorted(p.name for p in models.glob("hub/models--*/blobs/*"))
        assert len(blobs) == 3 and not any(b.endswith(".incomplete") for b in blobs)

        hub.requests.clear()
        second = run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub))
        assert second.returncode == 0, second.stderr
        assert hub.requests == []  # local first: not even a metadata request

        status = run_py(["model_cache.py", "status"], env=prefetch_env(models, hub))
        assert status.returncode == 0 and "checkpoint  ok" in status.stdout, status.stdout


def test_prefetch_repairs_a_corrupt_checkpoint(tmp_path):
    models = tmp_path / "models"
    with FakeHub(hub_files()) as hub:
        assert run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub)).returncode == 0
        blob = max(models.glob("hub/models--SWivid--F5-TTS/blobs/*"), key=lambda p: p.stat().st_size)
        good = blob.read_bytes()
        blob.write_bytes(good[: len(good) // 3])  # a torn write on the volume

        # the worker notices at load (the read-ahead checks the blob's sha256), naming the file
        load = run_py(["-c", "import cache_env, config; s = config.get_settings(); cache_env.configure(s)\n"
                             "import loaded_model; loaded_model.get_model(s)"], env=prefetch_env(models, hub))
        assert load.returncode != 0 and "is corrupt (its sha256 does not match)" in load.stderr
        assert "model_1250000.safetensors" in load.stderr

        repair = run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub))
        assert repair.returncode == 0, repair.stderr
        assert "CORRUPT" in repair.stdout
        assert blob.read_bytes() == good


def test_workers_starting_together_on_an_empty_volume_share_one_download(tmp_path):
    models = tmp_path / "models"
    # Each process resolves (downloading what is missing) exactly as the worker does, then loads
    # the weights, which are tiny-sized, into the tiny architecture.
    code = (
        "import cache_env, config; s = config.get_settings(); cache_env.configure(s)\n"
        "import checkpoints as c, loaded_model, model_cache\n"
        "f = model_cache.resolve_model_files(s)\n"
        "t = c.ModelFiles('tiny', 'DiT', dict(c.TINY_ARCH), f.checkpoint, f.vocab, f.vocoder_dir)\n"
        "c.build_cfm(t).load_state_dict(c.read_checkpoint(f.checkpoint))\n"
        "loaded_model.load_vocoder(f.vocoder_dir, 'cpu')\n"
        "print('loaded', f.checkpoint)"
    )
    import subprocess
    import sys

    with FakeHub(hub_files()) as hub:
        env = prefetch_env(models, hub)
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(Path(__file__).parent.parent),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=240) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        assert all("loaded" in o[0] for o in outs)
        blobs = list(models.glob("hub/models--*/blobs/*"))
        assert len(blobs) == 3 and not any(".incomplete" in b.name for b in blobs)
        for blob in blobs:
            assert hub_cache.verify_hub_file(blob)


# --- the tiny test model -------------------------------------------------------------------


def test_make_test_model_cli_says_the_speech_is_noise(tmp_path):
    result = run_py(["model_cache.py", "make-test-model"], env=subprocess_env(MODELS_DIR=tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert "noise" in result.stdout
    assert (tmp_path / "m" / "f5-tts" / "tiny" / "model.safetensors").is_file()
    assert (tmp_path / "m" / "f5-tts" / "tiny" / "vocos" / "config.yaml").is_file()


def test_tiny_model_output_depends_on_its_weights():
    """The re-randomised output layers matter: zeroing them changes the prediction."""
    model = loaded_model.get_model(get_settings())
    dit = model.cfm.transformer
    x = torch.randn(1, 50, 100)
    text = torch.randint(0, 100, (1, 20))
    with torch.inference_mode():
        out = dit(x=x, cond=torch.zeros_like(x), text=text, time=torch.tensor(0.5))
    assert out.abs().mean() > 1e-3


# --- the fp16 copy --------------------------------------------------------------------------


def test_fp16_copy_holds_the_same_weights_in_half_the_bytes(copied_tiny):
    artifact = fp16_copy.write_fp16_artifact(copied_tiny)
    original = checkpoints.read_checkpoint(copied_tiny.checkpoint)
    half = checkpoints.read_checkpoint(artifact)
    assert half.keys() == original.keys()
    for key, value in original.items():
        assert half[key].dtype == (torch.float16 if value.is_floating_point() else value.dtype)
        assert torch.equal(half[key], value.half() if value.is_floating_point() else value)
    assert artifact.stat().st_size < 0.6 * copied_tiny.checkpoint.stat().st_size


def test_status_and_prefetch_find_a_corrupt_fp16_copy(tmp_path):
    models = tmp_path / "models"
    with FakeHub(hub_files()) as hub:
        env = prefetch_env(models, hub)
        assert run_py(["model_cache.py", "prefetch"], env=env).returncode == 0
        artifact = models / "f5-tts" / "F5TTS_v1_Base" / "model_fp16.safetensors"
        assert "fp16 copy   ok" in run_py(["model_cache.py", "status"], env=env).stdout
        corrupt_in_place(artifact)
        status = run_py(["model_cache.py", "status"], env=env)
        assert status.returncode == 1 and "fp16 copy   CORRUPT" in status.stdout, status.stdout
        repair = run_py(["model_cache.py", "prefetch"], env=env)
        assert repair.returncode == 0 and f"CORRUPT  {artifact}" in repair.stdout, repair.stdout
        again = run_py(["model_cache.py", "status"], env=env)
        assert again.returncode == 0 and "fp16 copy   ok" in again.stdout


def test_status_shows_every_line_and_blames_no_setting_that_is_not_set(tmp_path):
    """Nothing downloaded yet, ALLOW_MODEL_DOWNLOAD unset: each file gets its own line."""
    env = subprocess_env(MODELS_DIR=tmp_path / "models", F5_MODEL="F5TTS_v1_Base", ALLOW_MODEL_DOWNLOAD=None)
    status = run_py(["model_cache.py", "status"], env=env)
    assert status.returncode == 1
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert "MISSING" in lines["checkpoint"] and "run `python model_cache.py prefetch`" in lines["checkpoint"]
    assert "MISSING" in lines["vocoder"] and "ok" in lines["vocab"] and "MISSING" in lines["ASR"]
    assert "ALLOW_MODEL_DOWNLOAD" not in status.stdout
    off = run_py(["model_cache.py", "status"], env={**env, "ALLOW_MODEL_DOWNLOAD": "false"})
    assert "ALLOW_MODEL_DOWNLOAD=false keeps the worker from downloading it" in off.stdout


def test_prefetch_with_the_hub_down_prints_each_hub_warning_once(tmp_path):
    """huggingface_hub prints through a handler of its own and, through ours, once more."""
    from http.server import BaseHTTPRequestHandler

    from static_server import BackgroundServer

    class Down(BaseHTTPRequestHandler):  # a hub answering 503, asking for retries at once
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    with BackgroundServer(Down) as hub:
        env = subprocess_env(MODELS_DIR=tmp_path / "models", F5_MODEL="F5TTS_v1_Base", PREFETCH_ASR="false",
                             HF_ENDPOINT=hub.url)
        result = run_py(["model_cache.py", "prefetch"], env=env, timeout=120)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and sum(line.startswith("error: Could not download ") for line in lines) == 1
    assert sum("HTTP Error 503 thrown while requesting" in line for line in lines) == 6  # the first try, 5 retries
    assert not any(line.startswith("WARNING huggingface_hub") for line in lines)


def test_prefetch_writes_the_fp16_copy_once(tmp_path):
    models = tmp_path / "models"
    with FakeHub(hub_files()) as hub:
        first = run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub))
        assert first.returncode == 0, first.stderr
        assert "writing the fp16 copy" in first.stdout
        artifact = models / "f5-tts" / "F5TTS_v1_Base" / "model_fp16.safetensors"
        stamp = artifact.stat().st_mtime_ns
        second = run_py(["model_cache.py", "prefetch"], env=prefetch_env(models, hub))
        assert second.returncode == 0 and "writing the fp16 copy" not in second.stdout
        assert artifact.stat().st_mtime_ns == stamp


def test_a_download_that_lands_corrupt_is_fetched_again(tmp_path):
    models = tmp_path / "models"
    with FakeHub(hub_files()) as hub:
        hub.corrupt_gets = 1
        result = run_py(["model_cache.py", "prefetch", "--no-verify"], env=prefetch_env(models, hub))
        assert result.returncode == 0, result.stderr
        assert "arrived corrupt" in result.stderr
        assert len(hub.downloads()) == 4  # three files, one of them twice
        for blob in models.glob("hub/models--*/blobs/*"):
            assert hub_cache.verify_hub_file(blob)


def test_prefetch_and_status_say_the_same_of_the_asr_model(capsys):
    """`status` promises only what `prefetch` does: with the tiny test model or PREFETCH_ASR=false
    prefetch leaves the ASR model out, and both say so."""
    missing = {"asr_model": "test/no-such-whisper", "f5_model": "F5TTS_v1_Base"}
    for update, skipped in (({"f5_model": "tiny"}, "F5_MODEL=tiny"), ({"prefetch_asr": False}, "PREFETCH_ASR=false"),
                            ({"prefetch_asr": True}, None)):
        settings = get_settings().model_copy(update={**missing, **update})
        reason = model_cache.asr_prefetch_skipped(settings)
        assert (reason is None) if skipped is None else (skipped in reason)
        model_cache.status(settings)
        asr = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ASR")]
        assert len(asr) == 1 and "MISSING" in asr[0]
        assert ("prefetch downloads it" in asr[0]) if skipped is None else (f"prefetch skips it: {reason}" in asr[0])


def test_tiny_prefetch_says_it_leaves_the_asr_model_out(tmp_path):
    env = subprocess_env(MODELS_DIR=tmp_path / "models", F5_MODEL="tiny")
    link_grammars(tmp_path / "models")
    result = run_py(["model_cache.py", "prefetch"], env=env)
    assert result.returncode == 0, result.stderr
    assert "ASR model not prefetched (F5_MODEL=tiny is the offline test model): the first job without ref_text " \
           "downloads" in result.stdout
    tiny = tmp_path / "models" / "f5-tts" / "tiny"
    # every file of the test model readable by all, as a volume's files must be for any worker
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in tiny.rglob("*") if p.is_file()} == \
        {name: "0o644" for name in ("vocab.txt", "model.safetensors", "config.yaml", "pytorch_model.bin")}
