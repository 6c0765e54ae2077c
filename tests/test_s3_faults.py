"""S3 faults between the worker and the store, injected by a proxy in front of moto."""

import io

import pytest
import soundfile as sf
from conftest import BUCKET, REF_TEXT, S3_PORT, job_dirs
from fault_proxy import FaultProxy

import checkpoints
from runpod_handler import Worker
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model


@pytest.fixture
def proxy(s3):
    s3.put_object(Bucket=BUCKET, Key="voices/gail.wav", Body=checkpoints.f5_package_dir().joinpath(
        "infer/examples/basic/basic_ref_en.wav").read_bytes())
    s3.put_object(Bucket=BUCKET, Key="voices/gail.txt", Body=REF_TEXT.encode())
    with FaultProxy(S3_PORT, slow_seconds=2.5) as p:
        yield p


def worker_through(proxy: FaultProxy) -> Worker:
    return Worker(get_settings().model_copy(update={
        "s3_endpoint_url": proxy.url, "s3_max_attempts": 4, "s3_read_timeout": 1.0, "s3_connect_timeout": 1.0,
    }))


def job(job_id):
    return {"id": job_id, "input": {"text": "Through a faulty network.", "voice_name": "gail", "nfe_step": 4}}


def outputs(s3):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="output/").get("Contents", [])]


def test_transient_faults_are_retried_and_the_job_succeeds(proxy, s3):
    # one fault of each kind, on the first requests of the job (lookups, downloads, the upload)
    proxy.plan = ["503", "ok", "throttle", "ok", "drop", "ok", "slow", "ok", "500"]
    out = worker_through(proxy)(job("flaky-1"))
    assert "error" not in out, out
    assert sorted(proxy.faults_hit()) == sorted(["503", "throttle", "drop", "slow", "500"])
    audio, rate = sf.read(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out["s3_key"])["Body"].read()))
    assert len(audio) / rate == pytest.approx(out["duration_s"], abs=0.01)
    assert job_dirs() == []


def test_a_persistent_upload_fault_is_a_clear_error_and_leaves_nothing(proxy, s3):
    proxy.always = {"PUT": "500"}
    out = worker_through(proxy)(job("broken-upload"))
    assert out == {"error": "S3 upload of 'output/broken-upload.wav' failed (InternalError)."}
    assert [(m, p, f) for m, p, f in proxy.seen if m == "PUT"] == [("PUT", "/voices-test/output/broken-upload.wav", "500")] * 4
    assert outputs(s3) == []
    assert job_dirs() == []


def test_an_upload_whose_connection_drops_every_time_leaves_no_partial_object(proxy, s3):
    proxy.always = {"PUT": "drop"}
    out = worker_through(proxy)(job("dropped-upload"))
    assert out["error"].startswith("S3 upload of 'output/dropped-upload.wav' failed")
    assert outputs(s3) == []
    assert job_dirs() == []


def test_a_store_that_stays_slow_is_a_clear_error(proxy, s3):
    proxy.always = {"GET": "slow", "HEAD": "slow"}
    out = worker_through(proxy)(job("slow-store"))
    assert out["error"].startswith("S3 lookup of 'voices/gail' failed")
    assert job_dirs() == []


def test_throttling_on_every_download_is_reported_as_such(proxy, s3):
    proxy.always = {"GET": "throttle"}
    out = worker_through(proxy)(job("throttled"))
    assert out == {"error": "S3 download of 'voices/gail.wav' failed (SlowDown)."}
