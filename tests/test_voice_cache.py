"""What a worker has read, it keeps: prepared references by the recording's identity, within a
memory bound; a later job with the same S3 voice asks S3 once (a HEAD) instead of downloading it,
a re-uploaded voice is read again, and a warm voice gives the same audio as a cold one."""

import base64

import numpy as np
import pytest
from conftest import BUCKET, SESSION_DIR, SHORT_REF_TEXT, SHORT_REF_WAV, write_first_words

from config import get_settings
from runpod_handler import Worker
from job_schema import VoiceInput
from voice_cache import VoiceCache

pytestmark = pytest.mark.usefixtures("tiny_model")


def test_the_least_recently_used_go_first_within_the_bound():
    one = np.zeros(1000, dtype=np.float32)  # 4000 bytes
    cache = VoiceCache(3 * one.nbytes)
    for name in "abc":
        cache.put(name, one.copy())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", one.copy())
    assert cache.get("b") is None and all(cache.get(n) is not None for n in "acd")
    assert cache.nbytes == 3 * one.nbytes
    cache.put("big", np.zeros(4000, dtype=np.float32))  # larger than the whole bound: not kept, nothing dropped
    assert cache.get("big") is None and len(cache) == 3
    cache.put("a", np.zeros(10, dtype=np.float32))  # the same recording again replaces its entry
    assert cache.nbytes == 2 * one.nbytes + 40
    assert cache.get(None) is None
    none = VoiceCache(0)
    none.put("a", one)
    assert len(none) == 0


def test_an_s3_voice_is_downloaded_once_until_it_is_uploaded_again(s3):
    s3.put_object(Bucket=BUCKET, Key="voices/alice.wav", Body=SHORT_REF_WAV.read_bytes())
    worker = Worker(get_settings())
    calls = []
    for operation in ("GetObject", "HeadObject"):
        worker.engine.storage.client.meta.events.register(
            f"provide-client-params.s3.{operation}",
            lambda params, operation=operation, **_: calls.append((operation, params["Key"])))
    job = {"text": "Hello there.", "voice_name": "alice.wav", "ref_text": SHORT_REF_TEXT, "nfe_step": 4, "seed": 7,
           "return_base64": True}

    def run(job_id):
        calls.clear()
        out = worker({"id": job_id, "input": job})
        assert "error" not in out, out
        return out, [call for call in calls if call[1].startswith("voices/")]

    cold, cold_calls = run("cold")
    assert cold["voice_cached"] is False
    key = "voices/alice.wav"
    assert cold_calls == [("HeadObject", key), ("HeadObject", key), ("GetObject", key)]  # identified, then staged
    warm, warm_calls = run("warm")
    assert warm["voice_cached"] is True
    assert warm_calls == [("HeadObject", "voices/alice.wav")]  # one request, no download
    assert warm["audio_base64"] == cold["audio_base64"]  # the same audio for the same seed

    # the same name, another recording: read again, and never the old one
    s3.put_object(Bucket=BUCKET, Key="voices/alice.wav",
                  Body=write_first_words(2.0, SESSION_DIR / "alice-again.wav").read_bytes())
    again, again_calls = run("re-uploaded")
    assert again["voice_cached"] is False and ("GetObject", "voices/alice.wav") in again_calls
    assert again["audio_base64"] != warm["audio_base64"]


def test_a_base64_voice_is_known_by_its_content(tmp_path):
    """Another caller's recording is never served: the same bytes are one entry, others another;
    a kept one is not even written into the job directory."""
    settings, cache = get_settings(), VoiceCache(2**20)
    first = VoiceInput(voice_base64=base64.b64encode(SHORT_REF_WAV.read_bytes()).decode())
    other = VoiceInput(voice_base64=base64.b64encode(write_first_words(2.0, tmp_path / "other.wav").read_bytes()).decode())
    voice, prepared = cache.stage(first, tmp_path / "job-1", settings, None)
    assert prepared is None and voice.path.is_file() and voice.identity.startswith("sha256:")
    cache.put(voice.identity, np.ones(10, dtype=np.float32))
    known, prepared = cache.stage(first, tmp_path / "job-2", settings, None)
    assert known.identity == voice.identity and prepared is not None and not (tmp_path / "job-2").exists()
    assert cache.stage(other, tmp_path / "job-3", settings, None)[1] is None
