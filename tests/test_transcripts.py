"""Where a reference's transcript comes from: the caller, the voice's sidecar in S3 (which
recording it belongs to), or Whisper, once per recording and language."""

import base64

import pytest
from conftest import BUCKET, REF_TEXT, REF_WAV, job_dirs

import asr
import transcripts
from runpod_handler import Worker
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

TEXT = "A few words to speak."
REF_WAV_BYTES = REF_WAV.read_bytes()


@pytest.fixture
def asr_calls(monkeypatch):
    calls = []
    real = asr.Transcriber.__call__

    def counting(self, audio, language):
        calls.append(language)
        return real(self, audio, language)

    monkeypatch.setattr(asr.Transcriber, "__call__", counting)
    return calls


@pytest.fixture
def worker(s3):
    return Worker(get_settings())


def job(**fields):
    return {"id": "asr-job", "input": {"text": TEXT, "nfe_step": 4, "seed": 1, **fields}}


def test_blank_transcript_runs_asr_once_and_writes_the_sidecar(worker, s3, ref_wav_bytes, asr_calls):
    s3.put_object(Bucket=BUCKET, Key="voices/erin.wav", Body=ref_wav_bytes)
    first = worker(job(voice_name="erin", ref_text=""))
    assert "error" not in first, first
    assert first["ref_text_source"] == "asr" and first["ref_text"]
    assert len(asr_calls) == 1
    sidecar = s3.get_object(Bucket=BUCKET, Key="voices/erin.txt")["Body"].read().decode()
    assert sidecar == first["ref_text"]

    fresh = Worker(get_settings())  # another worker: no in-memory cache to lean on
    second = fresh(job(voice_name="erin"))
    assert second["ref_text_source"] == "sidecar" and second["ref_text"] == first["ref_text"]
    assert len(asr_calls) == 1
    assert job_dirs() == []


def test_callers_transcript_wins_and_is_never_written(worker, s3, ref_wav_bytes, asr_calls):
    s3.put_object(Bucket=BUCKET, Key="voices/finn.wav", Body=ref_wav_bytes)
    s3.put_object(Bucket=BUCKET, Key="voices/finn.txt", Body=b"The stored transcript.")
    out = worker(job(voice_name="finn", ref_text=REF_TEXT))
    assert out["ref_text"] == REF_TEXT and out["ref_text_source"] == "request"
    assert s3.get_object(Bucket=BUCKET, Key="voices/finn.txt")["Body"].read() == b"The stored transcript."
    s3.delete_object(Bucket=BUCKET, Key="voices/finn.txt")
    worker(job(voice_name="finn", ref_text=REF_TEXT))
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="voices/finn.txt")
    assert asr_calls == []


def test_base64_voices_are_transcribed_once_by_content(worker, ref_wav_bytes, asr_calls):
    voice = base64.b64encode(ref_wav_bytes).decode()
    first = worker(job(voice_base64=voice))
    second = worker(job(voice_base64=voice))
    assert first["ref_text_source"] == second["ref_text_source"] == "asr"
    assert first["ref_text"] == second["ref_text"]
    assert len(asr_calls) == 1


def test_the_cache_keeps_each_language_apart(ref_wav_bytes, asr_calls):
    """A transcript Whisper made in one caller's language is not handed to a caller who asked
    for another, or for none."""
    other = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    voice = base64.b64encode(ref_wav_bytes).decode()
    for language in ("german", None, "german", None, "english"):
        out = other(job(voice_base64=voice, **({"language": language} if language else {})))
        assert out["ref_text_source"] == "asr", out
    assert asr_calls == ["german", None, "english"]


def sidecar(s3, key):
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return obj["Body"].read().decode(), obj["Metadata"]


def no_object(s3, key):
    return "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=key)


def test_a_forced_language_is_never_written_back(worker, s3, ref_wav_bytes, asr_calls):
    s3.put_object(Bucket=BUCKET, Key="voices/gus.wav", Body=ref_wav_bytes)
    out = worker(job(voice_name="gus", language="german"))
    assert out["ref_text_source"] == "asr" and no_object(s3, "voices/gus.txt")
    out = worker(job(voice_name="gus"))
    assert out["ref_text_source"] == "asr" and asr_calls == ["german", None]
    assert sidecar(s3, "voices/gus.txt")[0] == out["ref_text"]


def test_a_failed_job_writes_no_sidecar(s3, ref_wav_bytes, asr_calls):
    s3.put_object(Bucket=BUCKET, Key="voices/hana.wav", Body=ref_wav_bytes)
    short = Worker(get_settings().model_copy(update={"max_output_seconds": 0.5}))
    out = short(job(voice_name="hana"))
    assert "MAX_OUTPUT_SECONDS" in out["error"] and len(asr_calls) == 1
    assert no_object(s3, "voices/hana.txt")


def speech_at(rate_factor: float) -> bytes:
    """The reference recording, sped up: another recording, with other words' timing."""
    import io

    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(REF_WAV_BYTES), dtype="float32")
    picked = audio[np.clip((np.arange(int(len(audio) / rate_factor)) * rate_factor).astype(int), 0, len(audio) - 1)]
    buf = io.BytesIO()
    sf.write(buf, picked, rate, format="FLAC")
    return buf.getvalue()


def test_voices_sharing_a_stem_never_get_each_others_transcript(worker, s3, ref_wav_bytes, asr_calls, monkeypatch):
    """voices/bob.wav and voices/bob.flac share the name voices/bob.txt: the worker's sidecar
    records which recording it transcribes and serves that recording only."""
    real = asr.transcribe

    def labelled(audio, rate, language, settings, remedy="send ref_text"):
        real(audio, rate, language, settings, remedy)
        return f"words of a recording of {len(audio)} samples"  # tells the recordings apart

    monkeypatch.setattr(asr, "transcribe", labelled)
    s3.put_object(Bucket=BUCKET, Key="voices/bob.wav", Body=ref_wav_bytes)
    s3.put_object(Bucket=BUCKET, Key="voices/bob.flac", Body=speech_at(1.25))
    wav = worker(job(voice_name="bob.wav"))
    text, meta = sidecar(s3, "voices/bob.txt")
    assert text == wav["ref_text"] and meta["f5-voice-key"] == "voices/bob.wav"

    flac = worker(job(voice_name="bob.flac"))
    assert flac["ref_text_source"] == "asr" and flac["ref_text"] != wav["ref_text"]
    assert sidecar(s3, "voices/bob.txt")[0] == wav["ref_text"]  # the sibling's sidecar is left alone
    assert Worker(get_settings())(job(voice_name="bob.wav"))["ref_text_source"] == "sidecar"

    # bob.wav uploaded anew: its old transcript is not used, and is replaced
    s3.put_object(Bucket=BUCKET, Key="voices/bob.wav", Body=speech_at(0.8))
    fresh = Worker(get_settings())(job(voice_name="bob.wav"))
    assert fresh["ref_text_source"] == "asr" and fresh["ref_text"] not in (wav["ref_text"], flac["ref_text"])
    assert sidecar(s3, "voices/bob.txt")[0] == fresh["ref_text"]
    assert len(asr_calls) == 3


def test_a_transcript_you_store_serves_every_recording_of_its_stem(worker, s3, ref_wav_bytes, asr_calls):
    s3.put_object(Bucket=BUCKET, Key="voices/ida.wav", Body=ref_wav_bytes)
    s3.put_object(Bucket=BUCKET, Key="voices/ida.flac", Body=speech_at(1.25))
    s3.put_object(Bucket=BUCKET, Key="voices/ida.txt", Body=REF_TEXT.encode())
    for name in ("ida.wav", "ida.flac"):
        out = worker(job(voice_name=name))
        assert (out["ref_text"], out["ref_text_source"]) == (REF_TEXT, "sidecar")
    assert asr_calls == []


def test_transcript_cache_is_bounded():
    cache = transcripts.TranscriptCache(size=3)
    for i in range(10):
        cache.put(str(i), f"text {i}")
    assert len(cache) == 3 and cache.get("0") is None and cache.get("9") == "text 9"
