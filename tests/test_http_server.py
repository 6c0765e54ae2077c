"""The HTTP door end to end: one uvicorn server on 127.0.0.1 for the module (the tiny model,
moto's S3), spoken to by the official `openai` client; and a second one over an engine that only
pretends, for the limits (auth, 429, a client that goes away)."""

import asyncio
import base64
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import uvicorn
from conftest import BUCKET, ROOT, SHORT_REF_TEXT, SHORT_REF_WAV, free_port, subprocess_env

import http_server
import loaded_model
from config import get_settings
from engine import StreamPart
from errors import StorageError
from job_schema import parse_job_input
from runpod_handler import Worker

pytestmark = pytest.mark.usefixtures("tiny_model")

TEXT = "Hello there, this is a test."
FAST = {"nfe_step": 4, "seed": 7}


@contextmanager
def running(app):
    """`app` served by uvicorn on a free port of 127.0.0.1, in a thread: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served(s3_server):
    """The server over the real engine: (its base URL, its routes' shared state)."""
    health = http_server.Health()
    health.start(lambda: None, lambda: loaded_model.get_model(get_settings()))
    app = http_server.create_app(get_settings(), health=health)
    with running(app) as url:
        yield url, app.state.door


@pytest.fixture
def base(served):
    return served[0]


@pytest.fixture
def client(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def nature(s3):
    """The short example voice stored as `nature`, with its transcript beside it."""
    s3.put_object(Bucket=BUCKET, Key="voices/nature.wav", Body=SHORT_REF_WAV.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="voices/nature.txt", Body=SHORT_REF_TEXT.encode())
    return "nature"


def pcm_samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2")


def test_every_format_decodes_and_a_seed_gives_the_queue_job_s_audio(client, nature, s3):
    decoded = {}
    for fmt in ("mp3", "opus", "flac", "wav", "pcm"):
        data = client.audio.speech.create(model="f5-tts", voice=nature, input=TEXT, response_format=fmt,
                                          extra_body=FAST).read()
        decoded[fmt] = pcm_samples(data) if fmt == "pcm" else sf.read(io.BytesIO(data), dtype="int16")[0]
        assert len(decoded[fmt]) > 2400, fmt
    queued = Worker(get_settings())({"id": "same", "input": {"text": TEXT, "voice_name": nature,
                                                                    "output_format": "flac", **FAST}})
    body = s3.get_object(Bucket=BUCKET, Key=queued["s3_key"])["Body"].read()
    assert np.array_equal(decoded["flac"], sf.read(io.BytesIO(body), dtype="int16")[0])
    assert np.array_equal(decoded["wav"], decoded["pcm"])  # both streamed: the same samples


def test_a_stream_s_first_bytes_arrive_before_its_end(client, nature, served, monkeypatch):
    """The run is held after its first part until the client has that part's bytes: they come
    before the rest of the answer is made."""
    text = "One small sentence first. Then a second one follows it, and a third one ends the test here."
    door, got_first, held = served[1], threading.Event(), []
    run = door.engine.run

    def held_after_the_first_part(*args, **kwargs):
        for item in run(*args, **kwargs):
            yield item
            if isinstance(item, StreamPart) and not held:
                held.append(got_first.wait(10))

    monkeypatch.setattr(door.engine, "run", held_after_the_first_part)
    arrivals = []
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice={"id": nature}, input=text, response_format="wav", extra_body=FAST) as response:
        assert response.headers["content-type"] == "audio/wav" and response.headers["x-seed"] == "7"
        for block in response.iter_bytes():
            arrivals.append((time.perf_counter(), block))
            got_first.set()
    assert held == [True]
    data = b"".join(block for _, block in arrivals)
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24000 and len(audio) == (len(data) - 44) // 2
    assert data[4:8] == data[40:44] == b"\xff\xff\xff\xff"  # sizes unknown when the header left
    assert len(arrivals) > 1


def test_requests_at_once_share_sampling_calls_and_each_gets_its_audio(client, nature, monkeypatch):
    """Three requests at once: the first reaches an idle sampling loop and is sampled alone; the
    other two queue meanwhile and share the next call (observed in the loop's own count). Each
    sounds as it does alone, within the batching tolerance; the first is the very same audio."""
    import batching
    import sampler
    from test_synthesis import BATCH_TOLERANCE

    asks = [(TEXT, 1), ("Another line, said by the same voice.", 2), ("And a third one, also short.", 3)]

    def speak(text, seed):
        data = client.audio.speech.create(model="f5-tts", voice=nature, input=text, response_format="flac",
                                          extra_body={"nfe_step": 4, "seed": seed}).read()
        return sf.read(io.BytesIO(data), dtype="float32")[0]

    alone = [speak(*ask) for ask in asks]
    loop = batching.batcher_of(loaded_model.get_model(get_settings()), 0.8)
    shared_before, first_call, real = loop.shared_calls, threading.Event(), sampler.sample

    def held_first(*args, **kwargs):
        if not first_call.is_set():
            first_call.set()
            deadline = time.monotonic() + 60
            while len({id(r.job) for r in loop.waiting}) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # the other two requests queue their batches meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", held_first)
    together = [None] * len(asks)
    threads = [threading.Thread(target=lambda n=n, ask=ask: together.__setitem__(n, speak(*ask)))
               for n, ask in enumerate(asks)]
    threads[0].start()
    assert first_call.wait(60)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert loop.shared_calls > shared_before  # rows of two requests in one call
    for got, want in zip(together, alone):
        assert len(got) == len(want)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < BATCH_TOLERANCE
    assert np.array_equal(together[0], alone[0])


def test_sse_events_carry_the_audio_then_done(client, nature):
    with client.audio.speech.with_streaming_response.create(
            model="f5-tts", voice=nature, input=TEXT, response_format="pcm", stream_format="sse",
            extra_body=FAST) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n") if block]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    done = events[-1]
    assert done["type"] == "speech.audio.done" and done["seed"] == 7 and done["usage"]["input_tokens"] == len(TEXT)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert abs(len(audio) / 2 / 24000 - done["duration_s"]) < 0.001


def test_verify_through_the_sdk_says_its_verdict(client, nature, monkeypatch):
    """extra_body verify: a whole answer's verdict in headers; an SSE stream's, with the words, in
    its done event (the logic of verify is tests/test_verification.py's)."""
    import asr
    from verification import Heard

    class Deaf:  # hears nothing: every chunk fails, is sampled again, and the answer still comes
        def hear(self, waves, rate, language):
            return [Heard("", []) for _ in waves]

    monkeypatch.setattr(asr, "get_listener", lambda settings: Deaf())
    verified = {**FAST, "verify": True}
    response = client.audio.speech.with_raw_response.create(model="f5-tts", voice=nature, input=TEXT,
                                                            response_format="flac", extra_body=verified)
    assert response.headers["x-verified"] == "false" and response.headers["x-verify-worst-error"] == "1.0"
    with client.audio.speech.with_streaming_response.create(
            model="f5-tts", voice=nature, input=TEXT, response_format="pcm", stream_format="sse",
            extra_body=verified) as response:
        done = json.loads(response.read().decode().split("\n\n")[-2].removeprefix("data: "))
    assert done["type"] == "speech.audio.done" and done["verification"]["passed"] is False
    assert [w["word"] for w in done["words"]] == TEXT.split()


def expect_error(call, status: int):
    with pytest.raises(openai.APIStatusError) as err:
        call()
    assert err.value.status_code == status, err.value.body
    body = err.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_errors_carry_the_queue_job_s_sentence(client, nature):
    speak = client.audio.speech.create
    ours = expect_error(lambda: speak(model="f5-tts", voice=nature, input=TEXT, speed=4.0), 400)
    with pytest.raises(Exception) as queued:
        parse_job_input({"text": TEXT, "voice_name": nature, "speed": 4.0}, get_settings())
    assert ours["message"] == queued.value.message and ours["type"] == "invalid_request_error"
    unknown = expect_error(lambda: speak(model="f5-tts", voice=nature, input=TEXT, extra_body={"colour": 1}), 400)
    assert unknown["message"] == "Invalid input: colour: is not a known field."
    assert "aac" in expect_error(lambda: speak(model="f5-tts", voice=nature, input=TEXT,
                                               response_format="aac"), 400)["message"]
    assert "gpt-9" in expect_error(lambda: speak(model="gpt-9", voice=nature, input=TEXT), 400)["message"]
    assert "remove_silence" in expect_error(lambda: speak(model="f5-tts", voice=nature, input=TEXT,
                                                          response_format="pcm",
                                                          extra_body={"remove_silence": True}), 400)["message"]
    missing = expect_error(lambda: speak(model="f5-tts", voice="alloy", input=TEXT), 404)
    assert missing["code"] == "voice_not_found" and "alloy" in missing["message"]


def test_voices_through_the_sdk_serve_both_doors(client, s3, base):
    with open(SHORT_REF_WAV, "rb") as sample:
        voice = client.audio.voices.create(name="river", audio_sample=sample, consent="cons_1234",
                                           extra_body={"ref_text": SHORT_REF_TEXT})
    assert (voice.id, voice.name, voice.object, voice.type) == ("river", "river", "audio.voice", "audio_sample")
    head = s3.head_object(Bucket=BUCKET, Key="voices/river.wav")
    assert head["Metadata"]["f5-consent"] == "cons_1234"
    listed = httpx.get(f"{base}/v1/audio/voices").json()
    assert [v["id"] for v in listed["data"]] == ["river"] and listed["object"] == "list"
    data = client.audio.speech.create(model="f5-tts", voice={"id": voice.id}, input=TEXT, response_format="flac",
                                      extra_body=FAST).read()
    assert sf.info(io.BytesIO(data)).frames > 2400
    out = Worker(get_settings())({"id": "q", "input": {"text": TEXT, "voice_name": "river", **FAST}})
    assert out["ref_text"] == SHORT_REF_TEXT and out["ref_text_source"] == "sidecar", out
    deleted = client.audio.voices.delete(voice.id)
    assert (deleted.id, deleted.deleted, deleted.object) == ("river", True, "audio.voice.deleted")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="voices/")
    expect_error(lambda: client.audio.voices.delete(voice.id), 404)


def test_hostile_voice_requests(client, base, s3):
    with open(SHORT_REF_WAV, "rb") as sample:
        assert "plain file name" in expect_error(lambda: client.audio.voices.create(
            name="../x", audio_sample=sample, consent="c"), 400)["message"]
    with open(SHORT_REF_WAV, "rb") as sample:
        assert "consent" in expect_error(lambda: client.audio.voices.create(
            name="x", audio_sample=sample, consent=" "), 400)["message"]
    not_audio = httpx.post(f"{base}/v1/audio/voices", data={"name": "x", "consent": "c"},
                           files={"audio_sample": ("x.wav", b"RIFF but not audio")})
    assert not_audio.status_code == 400 and "readable audio" in not_audio.json()["error"]["message"]
    broken = httpx.post(f"{base}/v1/audio/voices", content=b"--zz\r\nnonsense",
                        headers={"content-type": "multipart/form-data; boundary=zz"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_input"
    assert httpx.delete(f"{base}/v1/audio/voices/a..b").status_code == 400
    assert httpx.delete(f"{base}/v1/audio/voices/..%2F..%2Fetc").status_code == 404  # no such route
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="voices/")


def test_bodies_over_the_limit_are_refused_before_they_are_read(base):
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:  # headers only: never the body
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 40000000\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 413")

    def chunks():
        for _ in range(32):
            yield b" " * 2**20

    answer = httpx.post(f"{base}/v1/jobs", content=chunks())
    assert answer.status_code == 413 and "30 MB" in answer.json()["error"]["message"]


def test_native_jobs_answer_as_runsync(base, nature):
    body = {"input": {"text": TEXT, "voice_name": nature, "captions_format": "srt", "remove_silence": True, **FAST}}
    answer = httpx.post(f"{base}/v1/jobs", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "COMPLETED" and result["output"]["seed"] == 7
    assert {"s3_key", "audio_url", "captions_s3_key", "captions", "timings"} <= set(result["output"])
    refused = httpx.post(f"{base}/v1/jobs", json={"input": {**body["input"], "stream_format": "pcm"}})
    assert refused.status_code == 400 and "stream_format" in refused.json()["error"]["message"]
    assert httpx.post(f"{base}/v1/jobs", content=b"{not json").json()["error"]["message"] == \
        "Invalid input: the body is not valid JSON."
    assert httpx.get(f"{base}/v1/models").json()["data"][0]["id"] == get_settings().f5_model


# --- the limits, over an engine that only pretends -------------------------------------------


class PretendEngine:
    """Yields a part of silence every 20 ms, up to 10 s of them; notes when its run is closed."""

    voice_storage = None

    def __init__(self):
        self.closed = threading.Event()
        self.runs = []  # (the arrival the door gave, the run's start)

    def run(self, job_id, job, stream, progress=None, delivery=None, arrived=None):
        self.runs.append((arrived, time.perf_counter()))
        try:
            for n in range(500):
                time.sleep(0.02)
                if job.text == "Fail." and n == 2:
                    raise StorageError("S3 upload of 'x' failed (500).")
                yield StreamPart(n, 0, None, job.text, n * 0.1, 0.1, 24000, "pcm", memoryview(bytes(4800)))
        finally:
            self.closed.set()


KEY = "k" * 24


@pytest.fixture(scope="module")
def pretend():
    settings = get_settings().model_copy(update={"max_concurrent_requests": 2, "api_key": KEY})
    engine, health = PretendEngine(), http_server.Health()
    app = http_server.create_app(settings, engine=engine, health=health)
    with running(app) as url:
        yield url, engine, app.state.door


SPEECH = {"model": "f5-tts", "voice": "nature", "input": TEXT, "response_format": "pcm"}
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_ping_says_starting_ready_broken_and_auth_guards_the_rest(pretend):
    url, _, door = pretend
    gate = threading.Event()
    door.health = health = http_server.Health()
    threading.Thread(target=health.start, args=(gate.wait, lambda: None), daemon=True).start()
    assert httpx.get(f"{url}/ping").status_code == 204
    gate.set()
    deadline = time.time() + 5
    while httpx.get(f"{url}/ping").status_code != 200 and time.time() < deadline:
        time.sleep(0.01)
    assert httpx.get(f"{url}/ping").status_code == 200  # no key needed there
    refused = httpx.get(f"{url}/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/v1/models", headers=AUTH).status_code == 200
    door.health = broken = http_server.Health()
    broken.start(lambda: None, lambda: (_ for _ in ()).throw(RuntimeError("no weights")))
    assert httpx.get(f"{url}/ping").status_code == 503
    failed = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers=AUTH)
    assert failed.status_code == 503 and "cannot serve" in failed.json()["error"]["message"]
    door.health = health


def test_a_request_s_clock_starts_when_it_arrives(pretend, monkeypatch):
    """The engine's run counts from the request's arrival: reading and parsing its body and
    starting its thread are in the job's timings (a body read slowly shows it)."""
    url, engine, _ = pretend
    engine.runs.clear()
    read = http_server.json_body

    async def slow_body(request):
        await asyncio.sleep(0.2)
        return await read(request)

    monkeypatch.setattr(http_server, "json_body", slow_body)
    sent = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=SPEECH, headers=AUTH) as answer:
        next(answer.iter_bytes())
    [(arrived, started)] = engine.runs
    assert sent <= arrived and started - arrived >= 0.2


def test_past_the_limit_429_at_once_and_a_client_gone_frees_its_run(pretend):
    url, engine, door = pretend
    with httpx.Client(base_url=url, headers=AUTH, timeout=10) as one, httpx.Client(base_url=url, headers=AUTH) as two:
        with one.stream("POST", "/v1/audio/speech", json=SPEECH) as first, \
                two.stream("POST", "/v1/audio/speech", json=SPEECH) as second:
            assert first.status_code == second.status_code == 200
            reading = first.iter_bytes()  # kept: a dropped iterator closes its response
            assert next(reading)
            started = time.perf_counter()
            third = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers=AUTH)
            assert third.status_code == 429 and third.headers["retry-after"] == "1"
            assert time.perf_counter() - started < 0.5 and "MAX_CONCURRENT_REQUESTS" in third.text
            upload = httpx.post(f"{url}/v1/audio/voices", headers=AUTH, data={"name": "late", "consent": "yes"},
                                files={"audio_sample": ("late.wav", b"RIFF" + bytes(40))})
            assert upload.status_code == 429  # an upload holds a place too
            engine.closed.clear()
        # both clients hung up mid-stream: their runs are closed and their places free
        assert engine.closed.wait(2)
        deadline = time.time() + 2
        while door.admission.active and time.time() < deadline:
            time.sleep(0.01)
        assert door.admission.active == 0


def test_serve_http_starts_the_server_instead_of_the_queue_worker(tmp_path):
    """With the default warm-up: /ping says ready only once it is done."""
    port, health_port = free_port(), free_port()
    env = subprocess_env(SERVE="http", PORT=port, PORT_HEALTH=health_port, WARMUP=None)
    process = subprocess.Popen([sys.executable, "runpod_handler.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        codes, deadline = [], time.time() + 90
        while time.time() < deadline:
            try:
                code = httpx.get(f"http://127.0.0.1:{port}/ping").status_code
            except httpx.TransportError:
                code = None
            if not codes or codes[-1] != code:
                codes.append(code)
            if code == 200:
                break
            time.sleep(0.05)
        assert codes[-1] == 200 and 204 in codes, codes
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/models")
        assert answer.json()["data"][0]["id"] == "tiny"
        assert httpx.get(f"http://127.0.0.1:{health_port}/ping").status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert process.returncode == -signal.SIGTERM, output  # uvicorn stops, then dies of the signal it caught
    assert "serving HTTP on port" in output and "ready to serve" in output
    assert output.index("loaded tiny from") < output.index("warm-up done") < output.index("ready to serve")


def test_a_failure_mid_stream_ends_sse_with_an_error_event_and_audio_cut_short(pretend):
    url = pretend[0]
    failing = {**SPEECH, "input": "Fail."}
    events = httpx.post(f"{url}/v1/audio/speech", json={**failing, "stream_format": "sse"}, headers=AUTH)
    last = json.loads(events.text.strip().split("\n\n")[-1].removeprefix("data: "))
    assert events.status_code == 200 and last["type"] == "error"
    assert last["error"]["code"] == "storage_error" and last["error"]["message"] == "S3 upload of 'x' failed (500)."
    with pytest.raises(httpx.RemoteProtocolError):  # never a short file that looks whole
        httpx.post(f"{url}/v1/audio/speech", json=failing, headers=AUTH)
