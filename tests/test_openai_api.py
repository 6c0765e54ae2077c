"""The HTTP door's logic without a server: OpenAI's fields mapped to a job, the error mapping,
SSE framing, the streamed WAV header, the answer's size limit, and voices kept in a local folder."""

import base64
import io
import json
import wave

import numpy as np
import pytest
import soundfile as sf
from conftest import SHORT_REF_TEXT, SHORT_REF_WAV

import audio_io
import openai_api
import voices
from config import get_settings
from delivery import BodyDelivery
from errors import GpuError, InvalidInput, JobError, LimitExceeded, VoiceNotFound
from http_server import Door, error_code
from job_schema import parse_job_input
from voice_store import LocalFolder, VoiceStore

SETTINGS = get_settings()


def speech(**fields):
    return openai_api.speech_request({"model": "f5-tts", "input": "Hi there.", "voice": "nature", **fields}, "tiny")


def test_openai_fields_map_to_a_job():
    asked = speech()
    assert asked.job == {"text": "Hi there.", "voice_name": "nature", "output_format": "mp3"}
    assert (asked.response_format, asked.stream_format, asked.streamed) == ("mp3", "audio", False)
    assert speech(voice={"id": "nature"}).job["voice_name"] == "nature"
    fast = speech(model="tts-1", response_format="pcm", speed=1.5, seed=3, instructions="cheerful")
    assert fast.job == {"text": "Hi there.", "voice_name": "nature", "output_format": "pcm", "nfe_step": 16,
                        "speed": 1.5, "seed": 3}
    assert fast.streamed and fast.ignored == ("instructions",)
    assert speech(model="tts-1", nfe_step=8).job["nfe_step"] == 8  # an extra field wins over the model's
    assert speech(model="tiny").job["output_format"] == "mp3"  # the loaded model's own name


@pytest.mark.parametrize("fields, words", [
    ({"response_format": "aac"}, "aac is not available"),
    ({"response_format": "ogg"}, "'ogg' is not a format"),
    ({"model": "gpt-9"}, "'gpt-9' is not a model of this worker"),
    ({"model": None}, "model: field required"),
    ({"stream_format": "chunks"}, "give audio or sse"),
    ({"voice": 3}, "voice: give a voice's name"),
    ({"voice": None}, "voice: field required"),
    ({"text": "x"}, "text: is not a field of /v1/audio/speech (send it as input)"),
    ({"return_base64": True}, "the answer is the audio"),
])
def test_what_the_speech_request_refuses(fields, words):
    with pytest.raises(InvalidInput) as err:
        speech(**fields)
    assert words in err.value.message and err.value.message.startswith("Invalid input: ")


def test_the_door_s_streaming_rule_leaves_the_queue_s_alone():
    raw = {"text": "Hi.", "voice_name": "nature", "remove_silence": True}
    assert parse_job_input(raw, SETTINGS, streamed=False).remove_silence
    with pytest.raises(InvalidInput, match="not available on a streamed request"):
        parse_job_input(raw, SETTINGS, streamed=True)
    with pytest.raises(InvalidInput, match="stream_format: is not a field of this request"):
        parse_job_input({**raw, "stream_format": "pcm"}, SETTINGS, streamed=False)
    with pytest.raises(InvalidInput, match="its STREAM setting is off"):  # the queue door's own sentence
        parse_job_input({**raw, "stream_format": "pcm"}, SETTINGS)


def test_errors_map_to_statuses_and_openai_s_body():
    door = Door.__new__(Door)
    door.health = type("H", (), {"broken": lambda self, reason: setattr(self, "reason", reason)})()
    cases = [(InvalidInput("Invalid input: x."), 400, "invalid_input"), (LimitExceeded("Too long."), 400,
             "limit_exceeded"), (VoiceNotFound("No voice."), 404, "voice_not_found"),
             (GpuError("The GPU failed."), 503, "gpu_error"), (JobError("Odd."), 500, "internal_error"),
             (ValueError("secret=abc"), 500, "internal_error")]
    for exc, status, code in cases:
        response = door.failure(exc, "job")
        body = json.loads(response.body)["error"]
        assert (response.status_code, body["code"]) == (status, code), exc
        assert body["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert "secret" not in json.loads(door.failure(ValueError("secret=abc"), "job").body)["error"]["message"]
    assert door.health.reason == "The GPU failed."  # a fault that needs a fresh worker breaks /ping
    assert error_code(VoiceNotFound("x")) == "voice_not_found"


def test_sse_events_are_openai_s_frames():
    delta = openai_api.audio_delta(b"\x01\x02")
    assert delta.startswith(b"data: {") and delta.endswith(b"}\n\n")
    assert json.loads(delta[6:]) == {"type": "speech.audio.delta", "audio": base64.b64encode(b"\x01\x02").decode()}
    done = json.loads(openai_api.audio_done(10, 94, seed=1)[6:])
    assert done == {"type": "speech.audio.done", "usage": {"input_tokens": 10, "output_tokens": 94,
                                                           "total_tokens": 104}, "seed": 1}


def test_a_streamed_wav_reads_to_its_end_in_soundfile_and_wave():
    samples = audio_io.pcm16(np.linspace(-0.5, 0.5, 4800, dtype=np.float32))
    data = audio_io.streaming_wav_header(24000) + samples.tobytes()
    assert len(audio_io.streaming_wav_header(24000)) == 44
    read, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24000 and np.array_equal(read, samples)
    with wave.open(io.BytesIO(data)) as fh:  # wave reports a length it does not know, and reads what is there
        assert fh.getframerate() == 24000 and fh.getnframes() == 0xFFFFFFFF // 2
        assert fh.readframes(10**6) == samples.tobytes()


def test_the_answer_must_fit_the_balancer_s_payload():
    body = BodyDelivery(limit=1000)
    body.check_planned_size(False, "mp3", 10**6)  # unknown until encoded: checked once it is
    with pytest.raises(LimitExceeded, match="over the 1000.0 B|over the 1.0 KB"):
        body.check_planned_size(False, "wav", 600)
    with pytest.raises(LimitExceeded, match="ask for response_format mp3 or opus"):
        body.check_planned_size(False, "pcm", 600, "pcm")


def test_voices_in_a_local_folder_are_what_voice_name_reads(tmp_path):
    folder = LocalFolder(tmp_path)
    store = VoiceStore(SETTINGS, folder)
    made = store.create("nature", SHORT_REF_WAV, "cons_1", SHORT_REF_TEXT)
    assert made.id == "nature" and (tmp_path / "voices" / "nature.wav").is_file()
    assert folder.metadata("voices/nature.wav")["f5-consent"] == "cons_1"
    assert [v.id for v in store.voices()] == ["nature"]
    job_dir = tmp_path / "job"
    staged = voices.stage(parse_job_input({"text": "Hi.", "voice_name": "nature"}, SETTINGS), job_dir, SETTINGS,
                          folder)
    assert staged.path.read_bytes() == SHORT_REF_WAV.read_bytes()
    assert staged.sidecar.read()[0] == SHORT_REF_TEXT
    store.create("nature", SHORT_REF_WAV, "cons_2")  # again, without a transcript: the old one goes
    assert folder.read_text("voices/nature.txt") is None
    store.delete("nature")
    assert store.voices() == [] and not list((tmp_path / "voices").iterdir())
    with pytest.raises(VoiceNotFound, match="in the voices folder"):
        store.delete("nature")
    with pytest.raises(InvalidInput, match="plain file name"):
        store.create("../escape", SHORT_REF_WAV, "c")
