"""The handler end to end: voices in from S3 (moto over real HTTP), URLs and base64; speech out
to S3 or inline; errors as one clear string; the job directory always removed."""

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import BUCKET, SHORT_REF_TEXT, SHORT_REF_WAV, job_dirs
from static_server import StaticServer

import loaded_model
from errors import InvalidInput
from runpod_handler import Worker
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

TEXT = "Hello there. This is a short test of the worker."
#: The short voice (2.4 s of the example's 5.3 s) in every job here: none is about the voice itself.
REF_TEXT = SHORT_REF_TEXT


@pytest.fixture
def ref_wav_bytes() -> bytes:
    return SHORT_REF_WAV.read_bytes()


def job(**fields):
    base = {"text": TEXT, "nfe_step": 4, "seed": 3}
    base.update(fields)
    return {"id": "job-" + str(abs(hash(str(sorted(fields.items())))) % 10**8), "input": base}


@pytest.fixture
def worker(s3):
    return Worker(get_settings())


@pytest.fixture
def inline_worker():
    return Worker(get_settings().model_copy(update={"s3_bucket": None}))


def s3_audio(s3, key):
    data = s3.get_object(Bucket=BUCKET, Key=key)
    body = data["Body"].read()
    if key.endswith(".pcm"):  # headerless 16-bit little-endian mono at the model's rate
        return data, (np.frombuffer(body, "<i2").astype(np.float32) / 32768, 24_000)
    return data, sf.read(io.BytesIO(body), dtype="float32")


def assert_clean():
    assert job_dirs() == []


def test_voice_by_name_with_sidecar_transcript(worker, s3, ref_wav_bytes):
    s3.put_object(Bucket=BUCKET, Key="voices/alice.wav", Body=ref_wav_bytes)
    s3.put_object(Bucket=BUCKET, Key="voices/alice.txt", Body=REF_TEXT.encode())
    out = worker(job(voice_name="alice.wav"))
    assert "error" not in out, out
    assert out["ref_text"] == REF_TEXT and out["ref_text_source"] == "sidecar"
    assert out["s3_key"] == f"output/{job(voice_name='alice.wav')['id']}.wav"
    assert BUCKET in out["audio_url"] and "Signature" in out["audio_url"]
    obj, (audio, rate) = s3_audio(s3, out["s3_key"])
    assert obj["ContentType"] == "audio/wav"
    assert rate == out["sample_rate"] == 24_000
    assert len(audio) / rate == pytest.approx(out["duration_s"], abs=0.01)
    assert set(out["timings"]) >= {"download", "synthesis", "encode", "upload", "total"}
    assert out["rtf"] > 0 and out["model"] == "tiny" and out["seed"] == 3
    assert "audio_base64" not in out
    assert_clean()


def test_voice_by_name_without_extension_finds_the_file(worker, s3, ref_wav_bytes):
    s3.put_object(Bucket=BUCKET, Key="voices/bob.flac", Body=_to_flac(ref_wav_bytes))
    out = worker(job(voice_name="bob", ref_text=REF_TEXT))
    assert "error" not in out, out
    assert out["ref_text_source"] == "request"
    assert_clean()


def test_request_transcript_wins_over_sidecar(worker, s3, ref_wav_bytes):
    s3.put_object(Bucket=BUCKET, Key="voices/carol.wav", Body=ref_wav_bytes)
    s3.put_object(Bucket=BUCKET, Key="voices/carol.txt", Body=b"Something else entirely.")
    out = worker(job(voice_name="carol", ref_text=REF_TEXT))
    assert out["ref_text"] == REF_TEXT and out["ref_text_source"] == "request"


def test_unknown_voice_is_a_clear_error(worker, s3):
    out = worker(job(voice_name="nobody"))
    assert out == {"error": "No voice named 'nobody' under 'voices/' in the bucket."}
    assert_clean()


CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg",
                 "opus": "audio/ogg; codecs=opus", "pcm": "audio/pcm"}


@pytest.mark.parametrize("fmt", list(CONTENT_TYPES))
def test_every_output_format_decodes_to_the_reported_duration(worker, s3, ref_wav_bytes, fmt):
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, output_format=fmt))
    assert "error" not in out, out
    assert out["s3_key"].endswith(f".{fmt}") and out["format"] == fmt
    obj, (audio, rate) = s3_audio(s3, out["s3_key"])
    assert obj["ContentType"] == CONTENT_TYPES[fmt]
    assert len(audio) / rate == pytest.approx(out["duration_s"], abs=0.08)
    assert_clean()


def test_pcm_is_the_wav_files_samples_without_its_header(inline_worker, ref_wav_bytes):
    voice = base64.b64encode(ref_wav_bytes).decode()
    wav = base64.b64decode(inline_worker(job(voice_base64=voice, ref_text=REF_TEXT))["audio_base64"])
    pcm = base64.b64decode(inline_worker(job(voice_base64=voice, ref_text=REF_TEXT, output_format="pcm"))["audio_base64"])
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 24_000 and len(pcm) == 2 * len(samples)
    assert np.array_equal(np.frombuffer(pcm, "<i2"), samples)


def test_inline_audio_without_s3_and_local_copy(inline_worker, ref_wav_bytes):
    out = inline_worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT))
    assert "error" not in out, out
    assert "s3_key" not in out and "audio_url" not in out
    audio, rate = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert len(audio) / rate == pytest.approx(out["duration_s"], abs=0.01)
    assert Path(out["local_path"]).read_bytes() == base64.b64decode(out["audio_base64"])
    assert_clean()


@pytest.fixture
def synthesis_runs(monkeypatch):
    import synthesis

    runs, real = [], synthesis.pieces
    monkeypatch.setattr(synthesis, "pieces", lambda *a, **k: runs.append(1) or real(*a, **k))
    return runs


@pytest.mark.parametrize("fmt, before", [("wav", True), ("pcm", True), ("flac", True), ("mp3", False), ("opus", False)])
def test_inline_audio_over_the_limit_is_an_error_not_a_loss(ref_wav_bytes, synthesis_runs, fmt, before):
    """WAV's and PCM's sizes follow from the plan, and FLAC's cannot go under a quarter of WAV's:
    those are refused before any synthesis. MP3's and Opus's are known once encoded."""
    small = Worker(get_settings().model_copy(update={"s3_bucket": None, "max_inline_bytes": 10_000}))
    out = small(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, output_format=fmt,
                    text="A sentence long enough to make more than ten kilobytes of audio in any format at all."))
    assert out["error"].startswith("The audio would be at least" if before else "The audio is ")
    # an answer already in a compressed format is not told to ask for one
    smaller = "" if fmt in ("mp3", "opus") else ", ask for output_format mp3 or opus"
    assert out["error"].endswith("that can be returned inline (RunPod refuses large payloads): configure S3_BUCKET"
                                 f"{smaller}, or send a shorter text.")
    assert synthesis_runs == ([] if before else [1])
    assert_clean()


def test_the_planned_size_is_a_floor_of_the_real_one(ref_wav_bytes, synthesis_runs):
    """Jobs just under the limit are not refused by the estimate."""
    probe = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))
    voice = base64.b64encode(ref_wav_bytes).decode()
    out = probe(job(voice_base64=voice, ref_text=REF_TEXT))
    size = len(base64.b64decode(out["audio_base64"]))
    fits = Worker(get_settings().model_copy(update={"s3_bucket": None, "max_inline_bytes": size,
                                                          "write_local_output": False}))
    assert "error" not in fits(job(voice_base64=voice, ref_text=REF_TEXT))
    tight = Worker(get_settings().model_copy(update={"s3_bucket": None, "max_inline_bytes": size - 1}))
    assert tight(job(voice_base64=voice, ref_text=REF_TEXT))["error"].startswith("The audio is ")


def test_oversize_inline_with_s3_fails_before_uploading(s3, ref_wav_bytes, synthesis_runs):
    small = Worker(get_settings().model_copy(update={"max_inline_bytes": 10_000}))
    out = small(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, return_base64=True))
    assert "drop return_base64 to get an S3 URL, ask for output_format mp3 or opus" in out["error"]
    assert "S3_BUCKET" not in out["error"] and synthesis_runs == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="output/")
    out = small(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT))
    assert "error" not in out and out["s3_key"]  # the same job as a URL


def test_return_base64_with_s3_gives_both(worker, ref_wav_bytes):
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, return_base64=True))
    assert out["s3_key"] and base64.b64decode(out["audio_base64"])[:4] == b"RIFF"


@pytest.fixture
def voice_server(ref_wav_bytes):
    with StaticServer({
        "/voice.wav": (200, {"Content-Type": "audio/wav"}, ref_wav_bytes),
        "/moved": (302, {"Location": "/voice.wav"}, b""),
    }) as server:
        yield server


def test_voice_by_url(s3, voice_server):
    relaxed = Worker(get_settings().model_copy(update={"allow_http_urls": True, "allow_private_urls": True}))
    out = relaxed(job(voice_url=voice_server.url + "/voice.wav", ref_text=REF_TEXT))
    assert "error" not in out, out
    out = relaxed(job(voice_url=voice_server.url + "/moved", ref_text=REF_TEXT))
    assert "error" not in out, out
    assert_clean()


def test_url_guards_hold_by_default(worker, voice_server):
    out = worker(job(voice_url=voice_server.url + "/voice.wav", ref_text=REF_TEXT))
    assert out["error"] == "voice_url must be an https URL."
    https_only = Worker(get_settings().model_copy(update={"allow_http_urls": True}))
    out = https_only(job(voice_url=voice_server.url + "/voice.wav", ref_text=REF_TEXT))
    assert "private, loopback" in out["error"]
    assert_clean()


def test_bad_input_then_a_good_job_succeeds(worker, ref_wav_bytes):
    for bad in ({"text": ""}, {"text": "hi", "voice_name": "../etc/passwd", "ref_text": "x"},
                {"text": "hi", "voice_base64": "!!notbase64!!", "ref_text": "x"},
                {"text": "hi", "voice_base64": base64.b64encode(b"not audio at all" * 50).decode(), "ref_text": "x"}):
        out = worker({"id": "bad", "input": bad})
        assert isinstance(out["error"], str) and out["error"], bad
        assert "Traceback" not in out["error"]
        assert_clean()
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT))
    assert "error" not in out


def test_job_directory_is_removed_when_synthesis_fails(worker, ref_wav_bytes, monkeypatch):
    seen = []

    def boom(*args, **kwargs):
        seen.extend(p.name for d in job_dirs() for p in d.iterdir())
        raise RuntimeError("simulated failure")

    monkeypatch.setattr("synthesis.pieces", boom)
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT))
    assert out["error"].startswith("Internal error (RuntimeError)")
    assert seen == ["voice"]  # the staged voice was in the job directory during the job...
    assert_clean()  # ...which is gone after


@pytest.mark.parametrize("failure", [
    "oom",
    "CUDA error: an illegal memory access was encountered",
    "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx`",
])
def test_gpu_failure_asks_for_a_fresh_worker_and_never_reports_success(worker, ref_wav_bytes, monkeypatch, failure):
    import torch

    def fail(*args, **kwargs):
        if failure == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        raise RuntimeError(failure)

    monkeypatch.setattr("synthesis.pieces", fail)
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT))
    assert out == {"error": "The GPU failed during synthesis (out of memory or a device error); the worker will "
                            "restart, retry the job.", "refresh_worker": True}
    assert_clean()


def _to_flac(wav_bytes: bytes) -> bytes:
    audio, rate = sf.read(io.BytesIO(wav_bytes))
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="FLAC")
    return buf.getvalue()


def test_an_e2_tts_model_serves_jobs_end_to_end(tiny_e2_model, monkeypatch, ref_wav_bytes):
    """E2TTS_Base and E2TTS_Small are UNetTs: a tiny one of the real class, loaded as published
    weights are, serves a job of several chunks in batches."""
    monkeypatch.setattr(loaded_model, "_model", tiny_e2_model)
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))
    text = "Seven words in every one of these. " * 12
    out = worker({"id": "e2", "input": {"text": text, "ref_text": REF_TEXT, "nfe_step": 4, "seed": 5,
                                        "voice_base64": base64.b64encode(ref_wav_bytes).decode()}})
    assert "error" not in out, out
    assert out["model"] == "tiny-e2" and out["chunks"] > 1 and out["batches"] < out["chunks"]
    audio, rate = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])), dtype="float32")
    assert len(audio) / rate == pytest.approx(out["duration_s"], abs=0.01) and audio.std() > 0
    assert_clean()


def test_e2_tts_blocks_are_not_compiled(tiny_e2_model):
    """COMPILE compiles DiT blocks; UNetT's layers run eagerly (with CUDA graphs on a GPU)."""
    model = loaded_model.load_files(tiny_e2_model.files, "cpu", compile_blocks=True)
    assert model.compile_done.is_set() and model.compile_thread is None


LONG = " ".join(f"Sentence number {n} of a text long enough to need several chunks and batches." for n in range(12))


def test_a_job_of_several_batches_reports_its_progress(ref_wav_bytes, monkeypatch):
    """On RunPod the handler tells `/status` how the job moves: after each batch but the last."""
    import runpod

    import runpod_handler

    updates = []
    monkeypatch.setattr(runpod.serverless, "progress_update", lambda job, update: updates.append((job["id"], update)))
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.ai/v2/x/job-take")  # as on RunPod
    monkeypatch.setattr(runpod_handler, "_worker", None)
    changed = get_settings().model_copy(update={"s3_bucket": None, "max_batch_frames": 2400})
    monkeypatch.setattr(runpod_handler, "get_settings", lambda: changed)
    long_job = job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, text=LONG)
    out = runpod_handler.handler(long_job)
    assert "error" not in out, out
    assert out["batches"] >= 3 and len(updates) == out["batches"] - 1
    assert {job_id for job_id, _ in updates} == {long_job["id"]}
    done = [u["chunks_done"] for _, u in updates]
    made = [u["audio_s"] for _, u in updates]
    assert done == sorted(done) and done[0] >= 1 and done[-1] < out["chunks"]
    assert made == sorted(made) and 0 < made[-1] < out["duration_s"] + 1
    assert all(u["chunks"] == out["chunks"] for _, u in updates)


def test_a_failing_progress_update_never_fails_the_job(ref_wav_bytes):
    def broken(job, update):
        raise ConnectionError("the progress endpoint is down")

    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "max_batch_frames": 2400}),
                    progress=broken)
    out = worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT, text=LONG))
    assert "error" not in out and out["batches"] >= 2, out
    assert_clean()


def test_a_failing_progress_update_logs_the_checked_job_id_and_a_bounded_reason(caplog):
    """The job's id as RunPod sent it is not checked: the log names the job by the id it runs under."""
    def broken(job, update):
        raise ConnectionError("down " + "x" * 100_000)

    hostile = {"id": "i" * 1_000_000, "input": {}}
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None}), progress=broken)
    with caplog.at_level("WARNING", logger="f5worker.handler"):
        worker.report_progress(hostile, "f00d", chunks_done=1)
    [record] = [r for r in caplog.records if "progress update failed" in r.getMessage()]
    assert record.getMessage().startswith("job f00d: progress update failed: ConnectionError: down x")
    assert len(record.getMessage()) < 200


def test_the_summary_line_shows_the_seed_and_the_subtitle_file():
    from runpod_handler import summary

    output = {"duration_s": 2.0, "chunks": 1, "batches": 1, "seed": 1234, "local_path": "/x/output/local_test.wav",
              "captions_local_path": "/x/output/local_test.vtt", "timings": {"synthesis": 0.5, "total": 1.0}}
    line = summary(output)
    assert "seed 1234" in line and "audio: /x/output/local_test.wav" in line
    assert line.endswith("captions: /x/output/local_test.vtt")
    assert "captions" not in summary({k: v for k, v in output.items() if k != "captions_local_path"})


@pytest.mark.parametrize("raw, where", [
    ({"text": "١٢٣ ٪", "voice_base64": "UklGRg=="}, "text has"),
    ({"voices": {"a": {"voice_base64": "UklGRg=="}}, "segments": [{"voice": "a", "text": "Hi."},
                                                                  {"voice": "a", "text": "١٢٣ ٪"}]},
     "segments.1.text has"),
    ({"voices": {"a": {"voice_base64": "UklGRg=="}}, "text": "[a] Hi. [a] ١٢٣ ٪"}, "text: segment 2 has"),
])
def test_text_that_normalises_to_nothing_is_one_sentence(monkeypatch, raw, where):
    """Whatever the normaliser makes of a text, a line left with nothing to speak is refused before
    any work, naming where it is (a dialogue's segment no longer vanishes from the audio)."""
    import text_normalization
    from job_schema import parse_job_input
    from engine import Engine, script_of

    monkeypatch.setattr(text_normalization, "normalize_all",
                        lambda texts, reading: [t if t.isascii() else " %" for t in texts])
    s = get_settings()
    parsed = parse_job_input(raw, s)
    with pytest.raises(InvalidInput) as raised:
        Engine(s).spoken(parsed, script_of(parsed))
    assert raised.value.message == (f"Invalid input: {where} nothing left to speak once its numbers and symbols are "
                                    "read; send words, or normalize: false.")


def test_the_queue_door_starts_a_job_s_clock_before_it_looks_up_the_worker(monkeypatch):
    """Whatever the handler does before the engine's run (finding the worker, building one were
    there none) is in the job's timings: the arrival is stamped first."""
    import runpod_handler

    seen = {}

    class Recording:
        def __call__(self, job, arrived=None):
            seen["arrived"] = arrived
            return {}

        def stream(self, job, arrived=None):
            seen["arrived"] = arrived
            yield {"type": "done"}

    def worker():
        seen["looked_up"] = time.perf_counter()
        return Recording()

    monkeypatch.setattr(runpod_handler, "worker", worker)
    for call in (runpod_handler.handler, lambda job: list(runpod_handler.stream_handler(job))):
        seen.clear()
        call({"id": "clock"})
        assert seen["arrived"] <= seen["looked_up"]


def test_a_job_s_timings_count_from_its_arrival(inline_worker, ref_wav_bytes):
    out = inline_worker(job(voice_base64=base64.b64encode(ref_wav_bytes).decode(), ref_text=REF_TEXT),
                        arrived=time.perf_counter() - 10)
    assert "error" not in out, out
    assert out["timings"]["total"] >= 10
