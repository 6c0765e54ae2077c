"""The worker as RunPod runs it: the SDK's local API over HTTP, and `--test_input`."""

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest
import requests
from conftest import BUCKET, REF_TEXT, REF_WAV, ROOT, SHORT_REF_TEXT, SHORT_REF_WAV, free_port, run_py, subprocess_env

pytestmark = pytest.mark.usefixtures("tiny_model")  # the worker's processes run on the session's models dir


def serve_api(env):
    """`runpod_handler.py --rp_serve_api` on a free port: its URL while it runs."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "runpod_handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
         "--rp_api_port", str(port), "--rp_log_level", "ERROR"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(url + "/docs", timeout=2)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the RunPod API server did not start: " + proc.stderr.read()[-3000:])
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def api(s3_server):
    yield from serve_api(subprocess_env())


@pytest.fixture
def ref_wav_bytes() -> bytes:
    """The short voice for these jobs: what they check is the worker as RunPod runs it, not the voice."""
    return SHORT_REF_WAV.read_bytes()


def test_runsync_good_and_bad_jobs_over_http(api, s3_server, ref_wav_bytes):
    voice = base64.b64encode(ref_wav_bytes).decode()
    good = {"input": {"text": "Hello over HTTP.", "voice_base64": voice, "ref_text": SHORT_REF_TEXT, "nfe_step": 4}}
    bad = {"input": {"text": "Hello", "voice_name": "../../secret", "ref_text": SHORT_REF_TEXT}}

    response = requests.post(api + "/runsync", json=bad, timeout=120).json()
    assert response["status"] == "FAILED"
    assert response["error"].startswith("Invalid input: voice_name: must be a plain file name")

    response = requests.post(api + "/runsync", json=good, timeout=120).json()
    assert response["status"] == "COMPLETED", response
    key = response["output"]["s3_key"]
    assert key == f"output/{response['id']}.wav"
    assert s3_server.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 1000

    response = requests.post(api + "/runsync", json={"input": {"text": 5}}, timeout=60).json()
    assert response["status"] == "FAILED" and "text" in response["error"]


def test_a_streaming_worker_over_http_returns_every_piece_and_the_result(ref_wav_bytes, tmp_path):
    """The SDK's local API runs a generator handler whole: /runsync and /stream answer with all
    the pieces at once (on RunPod /stream gives each as it is made)."""
    voice = base64.b64encode(ref_wav_bytes).decode()
    text = "Hello over a stream. " + "This sentence makes the text long enough for a few pieces. " * 3
    job = {"input": {"text": text, "voice_base64": voice, "ref_text": SHORT_REF_TEXT, "nfe_step": 4,
                     "stream_format": "pcm"}}
    env = subprocess_env(STREAM="true", S3_BUCKET=None, OUTPUT_DIR=tmp_path)
    for url in serve_api(env):
        response = requests.post(url + "/runsync", json=job, timeout=120).json()
        assert response["status"] == "COMPLETED", response
        *pieces, done = response["output"]
        firsts = [p["index"] for p in pieces if p["part"] == 0]  # a chunk over PART_SECONDS comes in parts
        assert len(pieces) >= 2 and firsts == list(range(done["chunks"]))
        assert {p["type"] for p in pieces} == {"audio"} and done["type"] == "done"
        samples = sum(len(base64.b64decode(p["audio_base64"])) for p in pieces) // 2  # 16-bit
        assert samples / 24_000 == pytest.approx(done["duration_s"], abs=5e-4)

        job_id = requests.post(url + "/run", json=job, timeout=30).json()["id"]
        streamed = requests.post(f"{url}/stream/{job_id}", timeout=120).json()
        assert streamed["status"] == "COMPLETED" and [s["output"]["type"] for s in streamed["stream"]][-1] == "done"

        bad = requests.post(url + "/runsync", json={"input": {**job["input"], "remove_silence": True}}, timeout=60).json()
        [error] = bad["output"]  # the local API reports an error item as it was yielded; RunPod fails the job
        assert error["error"].startswith("Invalid input: remove_silence: not available on a streaming worker")


def test_a_streamed_job_from_the_command_line_prints_its_pieces(s3_server, ref_wav_bytes):
    s3_server.put_object(Bucket=BUCKET, Key="voices/cli-voice.wav", Body=ref_wav_bytes)
    s3_server.put_object(Bucket=BUCKET, Key="voices/cli-voice.txt", Body=SHORT_REF_TEXT.encode())
    job = {"id": "cli-stream", "input": {"text": "Hello from the command line, in pieces. And a second sentence.",
                                        "voice_name": "cli-voice", "nfe_step": 4}}
    result = run_py(["runpod_handler.py", "--test_input", json.dumps(job)], env=subprocess_env(STREAM="true"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("piece 0: ") for line in lines) and any(line.startswith("piece 1: ") for line in lines)
    assert any(line.startswith("job done: ") and "first audio" in line for line in lines)
    assert s3_server.head_object(Bucket=BUCKET, Key="output/cli-stream.wav")["ContentType"] == "audio/wav"


def test_test_input_cli_exits_0_and_leaves_the_output_in_s3(s3_server, ref_wav_bytes):
    # A named voice keeps the command line short; the transcript comes from its sidecar.
    s3_server.put_object(Bucket=BUCKET, Key="voices/cli-voice.wav", Body=ref_wav_bytes)
    s3_server.put_object(Bucket=BUCKET, Key="voices/cli-voice.txt", Body=SHORT_REF_TEXT.encode())
    job = {"id": "cli-job-1", "input": {"text": "Hello from the command line.", "voice_name": "cli-voice",
                                       "nfe_step": 4}}
    result = run_py(["runpod_handler.py", "--test_input", json.dumps(job)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert s3_server.head_object(Bucket=BUCKET, Key="output/cli-job-1.wav")["ContentType"] == "audio/wav"


def test_test_input_cli_exits_1_on_a_bad_job(s3_server):
    result = run_py(["runpod_handler.py", "--test_input", json.dumps({"input": {"text": "hi"}})])
    assert result.returncode == 1
    assert "job failed: Invalid input: give exactly one of voice_name, voice_url, voice_base64" in result.stdout


def test_repository_test_input_runs_without_s3(tmp_path):
    """The README's main command: the handler on test_input.json, no bucket, audio inline and on disk."""
    env = subprocess_env(S3_BUCKET=None, S3_ENDPOINT_URL=None, OUTPUT_DIR=tmp_path / "out", RUNPOD_DEBUG_LEVEL="ERROR")
    job = json.loads((ROOT / "test_input.json").read_text())
    assert "voice_base64" in job["input"]  # self-contained: no network needed
    result = run_py(["runpod_handler.py"], env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    written = list((tmp_path / "out").glob("*.wav"))
    assert [p.name for p in written] == ["local_test.wav"] and written[0].stat().st_size > 10_000
    [line] = [line for line in result.stdout.splitlines() if line.startswith("job done: ")]
    assert " s of audio, 1 chunk(s) in 1 batch(es); synthesis " in line and line.endswith(f"audio: {written[0]}")
    assert len(result.stdout) < 2000  # a summary, not the base64


FAKE_SDK = """
import base64, json, sys, threading, time
loaded_model = sys.modules["loaded_model"]
deadline = time.time() + 60
while loaded_model._model is None and time.time() < deadline:  # importing the real SDK takes seconds
    time.sleep(0.02)
print("LOADED_WHILE_THE_SDK_IMPORTED", loaded_model._model is not None)

class serverless:
    @staticmethod
    def start(config):
        # On RunPod the first job comes long after the warm-up; in a one-job local run the process
        # exits with the job, whether or not the warm-up (waiting for the model's lock) ran.
        [load] = [thread for thread in threading.enumerate() if thread.name == "load"] or [None]
        if load is not None:
            load.join(120)
        print("LOAD_THREAD_DONE", load is None or not load.is_alive(), flush=True)
        worker = sys.modules["__main__"]._worker
        print("WORKER_BUILT_BEFORE_THE_FIRST_JOB", worker is not None)
        print("GRAMMAR_LOADED_BEFORE_THE_FIRST_JOB", worker is not None and "en" in worker.engine.grammars._loaded)
        print("S3_CLIENT_BUILT_BEFORE_THE_FIRST_JOB", worker is not None and "storage" in vars(worker.engine))
        # "F5-TTS" reaches the English grammar, as a text's first number or symbol does
        job = {"id": "fake-sdk", "input": {"text": "Hello from F5-TTS.", "ref_text": %r, "nfe_step": 4,
                                          "voice_base64": base64.b64encode(open(%r, "rb").read()).decode()}}
        before = set(sys.modules)
        result = config["handler"](job)
        print("IMPORTED_BY_THE_FIRST_JOB " + json.dumps(sorted(set(sys.modules) - before)))
        print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def worker_on_a_fake_sdk(tmp_path_factory, s3_server):
    """`runpod_handler.py` with the default WARMUP (on), the bucket, and an SDK of our own: one
    process that the tests below read (its result, its log)."""
    folder = tmp_path_factory.mktemp("fake-sdk")
    (folder / "runpod").mkdir()
    (folder / "runpod" / "__init__.py").write_text(FAKE_SDK % (REF_TEXT, str(REF_WAV)))
    env = subprocess_env(WARMUP=None, WRITE_LOCAL_OUTPUT="false", LOG_LEVEL="INFO",
                         PYTHONPATH=f"{folder}{os.pathsep}{ROOT}")
    result = run_py(["runpod_handler.py"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_worker_loads_the_model_while_the_sdk_starts_and_the_job_uses_that_load(worker_on_a_fake_sdk):
    result = worker_on_a_fake_sdk
    assert "LOADED_WHILE_THE_SDK_IMPORTED True" in result.stdout
    output = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert "error" not in output and output["duration_s"] > 0.5
    log = result.stderr
    assert log.count("loaded tiny from") == 1  # the job waited for the load at start, no second one
    assert re.search(r"ready [0-9.]+ s after the process started", log)


def test_the_default_warm_up_runs_once_after_the_load_at_start(worker_on_a_fake_sdk):
    result = worker_on_a_fake_sdk
    assert "LOAD_THREAD_DONE True" in result.stdout  # the SDK waited for it, as RunPod's first job would
    log = result.stdout + result.stderr
    assert log.count("warm-up done") == 1 and "warm-up failed" not in log
    assert log.count("loaded tiny from") == 1
    assert log.index("loaded tiny from") < log.index("warm-up done")
    assert '"error"' not in next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))


def test_a_fresh_worker_s_first_job_does_no_first_time_work(worker_on_a_fake_sdk):
    """What a first job paid and later jobs did not is paid at start: the worker is built, the
    grammar loaded (once, by the warm-up), the S3 client made, and the job imports nothing but
    the codec of its first request's host name (10 ms, beside a round trip to the bucket)."""
    result = worker_on_a_fake_sdk
    assert "WORKER_BUILT_BEFORE_THE_FIRST_JOB True" in result.stdout
    assert "GRAMMAR_LOADED_BEFORE_THE_FIRST_JOB True" in result.stdout
    assert "S3_CLIENT_BUILT_BEFORE_THE_FIRST_JOB True" in result.stdout
    assert result.stderr.count("loaded the en text normalisation grammar") == 1
    imported = next(line for line in result.stdout.splitlines() if line.startswith("IMPORTED_BY_THE_FIRST_JOB "))
    assert set(json.loads(imported.split(" ", 1)[1])) <= {"encodings.idna", "stringprep"}


EXITING_SDK = """
import sys, threading, time, torch

class serverless:
    @staticmethod
    def start(config):
        def busy():  # stands for the load at start, a compile or a warm-up, inside torch's C++ code
            a = torch.randn(1500, 1500)
            while True:
                a @ a
        threading.Thread(target=busy, daemon=True).start()
        time.sleep(0.5)
        print("the local job failed", flush=True)
        sys.exit(1)  # as the SDK does after a failed local job
"""


def test_exit_after_a_local_job_keeps_its_status_while_threads_run_torch(tmp_path):
    """Interpreter finalization would abort the process (status 134) by unwinding the busy thread."""
    (tmp_path / "runpod").mkdir()
    (tmp_path / "runpod" / "__init__.py").write_text(EXITING_SDK)
    env = subprocess_env(S3_BUCKET=None, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    result = run_py(["runpod_handler.py"], env=env)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "the local job failed" in result.stdout and "terminate called" not in result.stderr


def test_the_sdk_is_imported_without_its_probe_of_the_cpu():
    """py-cpuinfo's probe (a second Python that busies a core for a second) is left out of the
    SDK's import: the library is never imported then, the SDK still has the CPU's name, and a
    later import gets the real library."""
    script = ("import sys, runpod_handler\n"
              "runpod = runpod_handler.import_sdk()\n"
              "from runpod.serverless.utils import rp_debugger\n"
              "print('PROBED', 'cpuinfo' in sys.modules)\n"
              "print('NAME', rp_debugger.PROCESSOR == runpod_handler.cpu_name()['brand_raw'])\n"
              "import cpuinfo\n"
              "print('REAL', hasattr(cpuinfo, 'get_cpu_info_json'))\n")
    result = run_py(["-c", script], env=subprocess_env(S3_BUCKET=None))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["PROBED", "False", "NAME", "True", "REAL", "True"]
