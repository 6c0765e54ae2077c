"""A reference transcript when the caller gives none: Whisper (a tiny random one built by the
tests, real transformers classes) loaded lazily from the volume's hub cache."""

import base64
import json

import pytest
from conftest import ASR_REPO, BUCKET, REF_TEXT, job_dirs, run_py
from fake_hub import FakeHub
from test_model_cache import hub_files, prefetch_env
from test_transcripts import job

import asr
import checkpoints
import hub_cache
from runpod_handler import Worker
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model


def test_language_passes_through_to_whisper(ref_wav_bytes, monkeypatch):
    seen = {}
    transcriber = asr.get_transcriber(get_settings())
    real = transcriber.model.generate

    def spy(features, **kwargs):
        seen.update(kwargs)
        return real(features, **kwargs)

    monkeypatch.setattr(transcriber.model, "generate", spy)
    other = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    out = other(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), language="german"))
    assert "error" not in out, out
    assert seen["language"] == "german" and seen["task"] == "transcribe"


@pytest.fixture
def no_whisper_yet(monkeypatch):
    """The process's Whisper as if never loaded (restored after the test)."""
    monkeypatch.setattr(asr, "_loaded", {})
    monkeypatch.setattr(asr, "_failed", {})


@pytest.mark.parametrize("broken", ["not on the volume", "unloadable"])
def test_without_whisper_only_jobs_without_a_transcript_fail(s3, ref_wav_bytes, no_whisper_yet, tmp_path, broken,
                                                             monkeypatch):
    from fake_hub import place_folder_in_hub_cache

    repo = "test/whisper-missing"
    if broken == "unloadable":
        repo = "test/whisper-broken"
        folder = tmp_path / "broken"
        folder.mkdir()
        (folder / "config.json").write_text("{not json")
        place_folder_in_hub_cache(STORE.hub_dir, repo, folder)
    settings = get_settings().model_copy(update={"asr_model": repo, "allow_model_download": False})
    worker = Worker(settings)
    s3.put_object(Bucket=BUCKET, Key="voices/jo.wav", Body=ref_wav_bytes)
    out = worker(job(voice_name="jo"))
    why = "it is not on the volume and ALLOW_MODEL_DOWNLOAD is false" if broken == "not on the volume" else \
        "its copy on the volume could not be loaded"
    assert out == {"error": f"The voice has no transcript and speech recognition ({repo}) is unavailable on this "
                            f"worker ({why}): send ref_text, or store the transcript as voices/jo.txt."}
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode()))
    assert out["error"].endswith("unavailable on this worker (" + why + "): send ref_text.")
    assert "refresh_worker" not in out
    assert "error" not in worker(job(voice_name="jo", ref_text=REF_TEXT))  # the worker goes on serving
    assert job_dirs() == []


def test_bad_language_is_a_clear_error(ref_wav_bytes):
    other = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    voice = base64.b64encode(ref_wav_bytes).decode()
    assert other(job(voice_base64=voice, language="klingon"))["error"] == \
        "language 'klingon' is not supported by the ASR model."
    assert other(job(voice_base64=voice, language="en; rm -rf /"))["error"].startswith("Invalid input: language")


def test_asr_is_not_on_the_synthesis_path():
    """A job with a transcript neither imports transformers nor loads Whisper."""
    code = (
        "import sys, json, base64, runpod_handler, model_cache, asr\n"
        "w = runpod_handler.Worker(runpod_handler.get_settings().model_copy(update={'s3_bucket': None}))\n"
        f"voice = base64.b64encode(open({str(checkpoints.f5_package_dir() / 'infer/examples/basic/basic_ref_en.wav')!r}, 'rb').read()).decode()\n"
        f"out = w({{'id': 'x', 'input': {{'text': 'Hi there.', 'voice_base64': voice, 'ref_text': {REF_TEXT!r}, 'nfe_step': 4}}}})\n"
        "print(json.dumps({'ok': 'error' not in out, 'transformers': 'transformers' in sys.modules,"
        " 'asr_loaded': bool(asr._loaded)}))"
    )
    result = run_py(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": True, "transformers": False, "asr_loaded": False}


def asr_hub_files() -> dict:
    folder = hub_cache.hub_snapshot(STORE.hub_dir, ASR_REPO, download=False)
    return {(ASR_REPO, str(p.relative_to(folder))): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_prefetch_includes_the_asr_model_unless_told_not_to(tmp_path):
    files = {**hub_files(), **asr_hub_files()}
    with FakeHub(files) as hub:
        skipped = run_py(["model_cache.py", "prefetch"], env=prefetch_env(tmp_path / "a", hub))
        assert skipped.returncode == 0, skipped.stderr
        assert not list((tmp_path / "a").glob("hub/models--test--whisper-tiny"))

        fetched = run_py(["model_cache.py", "prefetch"], env=prefetch_env(tmp_path / "b", hub, prefetch_asr=True))
        assert fetched.returncode == 0, fetched.stderr
        snapshot = next((tmp_path / "b").glob("hub/models--test--whisper-tiny/snapshots/*"))
        assert {p.name for p in snapshot.iterdir()} >= {"config.json", "model.safetensors", "vocab.json"}

        hub.requests.clear()
        again = run_py(["model_cache.py", "prefetch"], env=prefetch_env(tmp_path / "b", hub, prefetch_asr=True))
        assert again.returncode == 0 and hub.requests == []
        assert f"ok       {ASR_REPO} (ASR, for references without a transcript, and for verify)" in again.stdout


def test_prefetch_and_status_include_a_verify_asr_model_of_its_own(tmp_path):
    verify_repo = "test/whisper-for-verify"
    files = {**hub_files(), **asr_hub_files(), **{(verify_repo, name): data for (_, name), data in
                                                   asr_hub_files().items()}}
    with FakeHub(files) as hub:
        env = {**prefetch_env(tmp_path / "m", hub, prefetch_asr=True), "VERIFY_ASR_MODEL": verify_repo}
        fetched = run_py(["model_cache.py", "prefetch"], env=env)
        assert fetched.returncode == 0, fetched.stderr
        assert f"ok       {ASR_REPO} (ASR, for references without a transcript)  " in fetched.stdout
        assert f"ok       {verify_repo} (ASR, for verify)  " in fetched.stdout
        assert next((tmp_path / "m").glob("hub/models--test--whisper-for-verify/snapshots/*/model.safetensors"))
        status = run_py(["model_cache.py", "status"], env=env)
        assert [line.split()[:3] for line in status.stdout.splitlines() if line.startswith("ASR")] == [
            ["ASR", "ok", str(next((tmp_path / "m").glob("hub/models--test--whisper-tiny/snapshots/*")))],
            ["ASR", "verify", "ok"]]
