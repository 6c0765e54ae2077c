"""Credentials, presigned URLs and payloads never reach the logs or the error strings."""

import base64
import json
import logging

import pytest
from conftest import BUCKET, REF_TEXT, REF_WAV, run_py, subprocess_env

from runpod_handler import Worker, configure_logging
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # jobs, in this process and in a worker process

ACCESS_KEY = "AKIAWORKERTESTKEY0001"
SECRET_KEY = "s3cr3t/Worker+Test/Key/0123456789abcdefgh"


def test_a_job_logs_no_secret_even_at_debug(s3, caplog, monkeypatch):
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.test/job")  # as on the platform
    monkeypatch.setenv("RUNPOD_LOG_LEVEL", "")  # configure_logging sets it; restored after the test
    monkeypatch.delenv("RUNPOD_LOG_LEVEL")
    configure_logging("DEBUG")
    s3.put_object(Bucket=BUCKET, Key="voices/ivy.wav", Body=REF_WAV.read_bytes())
    worker = Worker(get_settings().model_copy(update={
        "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY}))
    voice = base64.b64encode(REF_WAV.read_bytes()).decode()
    with caplog.at_level(logging.DEBUG):
        by_name = worker({"id": "secret-1", "input": {"text": "Hi.", "voice_name": "ivy", "ref_text": REF_TEXT,
                                                      "nfe_step": 4}})
        inline = worker({"id": "secret-2", "input": {"text": "Hi.", "voice_base64": voice, "ref_text": REF_TEXT,
                                                     "nfe_step": 4, "return_base64": True}})
        failed = worker({"id": "secret-3", "input": {"text": "Hi.", "voice_url": "https://127.0.0.1/v.wav?token=TOPSECRET",
                                                     "ref_text": REF_TEXT}})
    assert "X-Amz-Signature" in by_name["audio_url"] and inline["audio_base64"]
    logged = caplog.text
    assert any(r.name.startswith("f5worker") and r.levelno == logging.INFO for r in caplog.records)  # logs do flow
    for secret in (ACCESS_KEY, SECRET_KEY, "X-Amz-Signature", by_name["audio_url"].split("?")[1][:40],
                   voice[1000:1100], inline["audio_base64"][1000:1100], "TOPSECRET"):
        assert secret not in logged
    assert "TOPSECRET" not in failed["error"]


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_the_runpod_sdk_does_not_log_results_in_local_runs(s3, log_level):
    s3.put_object(Bucket=BUCKET, Key="voices/jay.wav", Body=REF_WAV.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="voices/jay.txt", Body=REF_TEXT.encode())
    env = subprocess_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, LOG_LEVEL=log_level,
                         RUNPOD_LOG_LEVEL=None)
    job = {"id": "local-secret", "input": {"text": "Hello.", "voice_name": "jay", "nfe_step": 4}}
    result = run_py(["runpod_handler.py", "--test_input", json.dumps(job)], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "job local-secret" in output  # our own summary is there
    for secret in (ACCESS_KEY, SECRET_KEY, "X-Amz-Signature", "Signature="):
        assert secret not in output
