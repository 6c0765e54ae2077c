"""Infrastructure faults on real file systems: a full scratch disk (while the voice is written,
from base64 or a URL, and while the audio is encoded), a full output folder, a read-only volume
without its folders, a models folder that cannot be created, a missing vocabulary, and job
directories left by a killed worker.

The full and read-only file systems are small tmpfs mounts in a user namespace of the test's
own (`unshare`), so nothing on the host is touched. Each case runs jobs in one child process."""

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import BUCKET, REF_TEXT, REF_WAV, STORE, job_dirs, subprocess_env
from config import get_settings
from static_server import StaticServer

import model_cache
import scratch
from errors import WorkerSetupError
from runpod_handler import Worker

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model


def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="this machine does not let an unprivileged process mount a tmpfs in a user "
                                   "namespace (unshare --user --mount), which these cases need for a real full disk")

CHILD = """
import json, sys
import runpod_handler
worker = runpod_handler.Worker(runpod_handler.get_settings())
print("RESULT " + json.dumps([worker(job) for job in json.load(sys.stdin)]))
"""


def run_jobs(jobs: list, mounts: dict, tmp_path, **env) -> list:
    """`jobs` through a fresh worker in a child process that sees a tmpfs at each of `mounts`
    (path -> (size, read_only)). Returns the results."""
    script = []
    for path, (size, read_only) in mounts.items():
        os.makedirs(path, exist_ok=True)
        script.append(f"mount -t tmpfs -o size={size} tmpfs {path}")
        if read_only:
            script.append(f"mount -o remount,ro {path}")
    script.append('exec "$0" -c "$1"')
    child = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", " && ".join(script), sys.executable, CHILD],
        input=json.dumps(jobs), env=subprocess_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(next(line for line in child.stdout.splitlines() if line.startswith("RESULT "))[7:])


VOICE = base64.b64encode(REF_WAV.read_bytes()).decode()  # 256 KB of WAV


def job(job_id, **fields):
    return {"id": job_id, "input": {"text": "Hello there, this is a test of a full disk.", "ref_text": REF_TEXT,
                                    "nfe_step": 4, **fields}}


@needs_namespaces
def test_a_full_scratch_disk_fails_the_job_with_the_cause_and_asks_for_a_fresh_worker(tmp_path):
    scratch = tmp_path / "scratch"
    with StaticServer({"/voice.wav": (200, {}, REF_WAV.read_bytes())}) as server:
        voice_fits = run_jobs([job("b64", voice_base64=VOICE), job("url", voice_url=server.url + "/voice.wav")],
                              {scratch: ("64k", False)}, tmp_path, JOB_TMP_DIR=scratch, MIN_FREE_DISK_MB=0,
                              S3_BUCKET="", ALLOW_HTTP_URLS="true", ALLOW_PRIVATE_URLS="true",
                              WRITE_LOCAL_OUTPUT="false")
    for out in voice_fits:
        assert out["error"].startswith("The disk is full: the voice could not be written to ")
        assert out["error"].endswith("/voice (JOB_TMP_DIR).") and out["refresh_worker"] is True

    # room for the voice (256 KB) but not for the audio
    [out] = run_jobs([job("encode", voice_base64=VOICE, text="A longer sentence to speak. " * 8)],
                     {scratch: ("300k", False)}, tmp_path, JOB_TMP_DIR=scratch, MIN_FREE_DISK_MB=0, S3_BUCKET="",
                     WRITE_LOCAL_OUTPUT="false")
    assert out["error"].startswith("The disk is full: the audio could not be written to ")
    assert out["error"].endswith("/encode.wav (JOB_TMP_DIR).") and out["refresh_worker"] is True


@needs_namespaces
@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_a_full_disk_never_delivers_a_truncated_file(tmp_path, fmt):
    """libsndfile's MP3 and Ogg encoders ignore failed writes and leave a truncated file."""
    scratch = tmp_path / "scratch"
    [out] = run_jobs([job("lossy", voice_base64=VOICE, text="A longer sentence to speak. " * 8, output_format=fmt)],
                     {scratch: ("272k", False)}, tmp_path, JOB_TMP_DIR=scratch, MIN_FREE_DISK_MB=0, S3_BUCKET="",
                     WRITE_LOCAL_OUTPUT="false")
    assert out["error"].startswith("The disk is full: the audio could not be written")


@needs_namespaces
def test_a_failed_local_copy_leaves_nothing_in_s3(s3, tmp_path, ref_wav_bytes):
    s3.put_object(Bucket=BUCKET, Key="voices/kim.wav", Body=ref_wav_bytes)
    output = tmp_path / "output"
    [out] = run_jobs([job("local-full", voice_name="kim")], {output: ("4k", False)}, tmp_path, OUTPUT_DIR=output,
                     WRITE_LOCAL_OUTPUT="true")
    assert out["error"] == f"The disk is full: the local copy of the result could not be written to {output} " \
                           "(OUTPUT_DIR)."
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="output/")
    assert list(output.iterdir()) == []


@needs_namespaces
def test_a_read_only_volume_without_its_folders_is_named(tmp_path):
    volume = tmp_path / "volume"
    [out, again] = run_jobs([job("ro", voice_base64=VOICE)] * 2, {volume: ("1m", True)}, tmp_path,
                            MODELS_DIR=volume / "models", S3_BUCKET="", WRITE_LOCAL_OUTPUT="false")
    assert out == again == {"error": f"The models folder could not be written: {volume}/models/hub is read-only or "
                                     "not writable (MODELS_DIR)."}


def test_a_models_folder_that_cannot_be_created_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WorkerSetupError) as err:
        model_cache.ModelStore(blocker / "models").ensure_layout()
    assert err.value.message == f"The models folder could not be written to {blocker}/models/hub (MODELS_DIR): " \
                                "Not a directory."
    assert not err.value.refresh_worker


def test_a_missing_vocabulary_is_named(tmp_path, monkeypatch):
    tiny = model_cache.ModelStore(tmp_path / "models").tiny_dir
    shutil.copytree(STORE.tiny_dir, tiny)
    (tiny / "vocab.txt").unlink()
    with pytest.raises(WorkerSetupError, match=f"The vocabulary file {tiny}/vocab.txt is missing: reinstall f5-tts, "
                                               "or set F5_VOCAB_FILE."):
        model_cache.resolve_model_files(get_settings().model_copy(update={"models_dir": tmp_path / "models"}))


def test_job_directories_of_a_killed_worker_are_swept_at_start(tmp_path):
    """A worker killed mid-job leaves `<JOB_TMP_DIR>/f5job-*/voice*`, a caller's recording: the
    next worker removes it. A live worker's directories are kept, whoever runs them."""
    root = tmp_path / "jobs"
    root.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = root / f"f5job-killed.{gone.pid}-1234.abc"
    reused = root / f"f5job-reused.{os.getpid()}-1.abc"  # our id, another start time: a restarted container
    live = root / f"f5job-live.{scratch.process_identity(os.getppid())}.abc"
    mine = root / f"f5job-mine.{scratch.process_identity(os.getpid())}.abc"
    ancient, unnamed = root / "f5job-ancient-legacy", root / "f5job-fresh-legacy"
    for path in (dead, reused, live, mine, ancient, unnamed):
        path.mkdir()
        (path / "voice.wav").write_bytes(b"a caller's recording")
    day_ago = time.time() - scratch.STALE_AFTER_SECONDS - 60
    os.utime(ancient, (day_ago, day_ago))
    Worker(get_settings().model_copy(update={"job_tmp_dir": root}))
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, mine.name, unnamed.name])


def test_job_directories_name_their_worker(monkeypatch):
    import voices

    seen, real = [], voices.from_base64
    monkeypatch.setattr(voices, "from_base64", lambda data, settings, job_dir: seen.append(job_dir.name) or
                        real(data, settings, job_dir))
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))
    assert "error" not in worker(job("named", voice_base64=VOICE))
    assert scratch.JOB_DIR.fullmatch(seen[0])["process"] == scratch.process_identity(os.getpid())
    assert seen[0].startswith("f5job-named.") and job_dirs() == []


@pytest.mark.parametrize("code, expected, refresh", [
    (28, "The disk is full: a file could not be written to /data/x.bin (check the disk and the folder settings).",
     True),
    (30, "A file could not be written: /data/x.bin is read-only or not writable (check the disk and the folder "
         "settings).", False),
])
def test_an_unanticipated_write_failure_still_names_its_cause(code, expected, refresh):
    """A full or read-only disk met where no site expected one is not an 'Internal error (OSError)'."""
    from errors import to_runpod_result

    result = to_runpod_result(OSError(code, os.strerror(code), "/data/x.bin"), "job")
    assert result == ({"error": expected, "refresh_worker": True} if refresh else {"error": expected})
