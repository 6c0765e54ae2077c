"""Malformed and hostile jobs: each gets one clear error string, nothing is written outside the
job's own directory, and the worker then serves a good job."""

import base64
import io
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import BUCKET, REF_TEXT, REF_WAV, ROOT, TEST_ENV, job_dirs
from static_server import BackgroundServer, StaticServer

import url_fetch
from runpod_handler import Worker
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

RATE = 24_000


def audio_bytes(seconds: float, fmt: str = "WAV", rate: int = RATE, silent: bool = False) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 220 * t)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD_VOICE = b64(REF_WAV.read_bytes())
WAV = REF_WAV.read_bytes()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200

# (id, input, what the error must say)
CASES = [
    ("input-none", None, "the job's input must be a JSON object"),
    ("input-string", "say hello", "the job's input must be a JSON object"),
    ("input-list", ["text"], "the job's input must be a JSON object"),
    ("empty-input", {}, "text: field required"),
    ("text-int", {"text": 123, "voice_base64": GOOD_VOICE}, "text: input should be a valid string"),
    ("text-null", {"text": None, "voice_base64": GOOD_VOICE}, "text: field required"),
    ("text-list", {"text": ["hi"], "voice_base64": GOOD_VOICE}, "text: input should be a valid string"),
    ("text-empty", {"text": "", "voice_base64": GOOD_VOICE}, "text: string should have at least 1 character"),
    ("text-blank", {"text": "   \n\t", "voice_base64": GOOD_VOICE}, "text: string should have at least 1 character"),
    ("text-huge", {"text": "a" * 20_001, "voice_base64": GOOD_VOICE}, "text is 20001 characters; at most 20000"),
    ("text-punctuation", {"text": "?!... ,;", "voice_base64": GOOD_VOICE}, "text has nothing to speak"),
    ("text-emoji", {"text": "😀🎉🔥", "voice_base64": GOOD_VOICE}, "text has nothing to speak"),
    ("no-voice", {"text": "hi"}, "give exactly one of voice_name, voice_url, voice_base64"),
    ("two-voices", {"text": "hi", "voice_name": "a", "voice_url": "https://x.test/a.wav"}, "(got voice_name, voice_url)"),
    ("three-voices", {"text": "hi", "voice_name": "a", "voice_url": "https://x.test/a", "voice_base64": GOOD_VOICE},
     "(got voice_name, voice_url, voice_base64)"),
    ("name-traversal", {"text": "hi", "voice_name": "../secret"}, "voice_name: must be a plain file name"),
    ("name-absolute", {"text": "hi", "voice_name": "/etc/passwd"}, "voice_name: must be a plain file name"),
    ("name-slash", {"text": "hi", "voice_name": "a/b.wav"}, "voice_name: must be a plain file name"),
    ("name-dotdot", {"text": "hi", "voice_name": ".."}, "voice_name: must be a plain file name"),
    ("name-nul", {"text": "hi", "voice_name": "voice\x00.wav"}, "voice_name: must be a plain file name"),
    ("name-backslash", {"text": "hi", "voice_name": "..\\..\\win"}, "voice_name: must be a plain file name"),
    ("name-empty", {"text": "hi", "voice_name": ""}, "voice_name: string should have at least 1 character"),
    ("name-missing", {"text": "hi", "voice_name": "nobody"}, "No voice named 'nobody' under 'voices/'"),
    ("url-http", {"text": "hi", "voice_url": "http://example.test/a.wav"}, "voice_url must be an https URL"),
    ("url-file", {"text": "hi", "voice_url": "file:///etc/passwd"}, "voice_url must be an https URL"),
    ("url-ftp", {"text": "hi", "voice_url": "ftp://example.test/a.wav"}, "voice_url must be an https URL"),
    ("url-data", {"text": "hi", "voice_url": "data:audio/wav;base64,AAAA"}, "voice_url must be an https URL"),
    ("url-loopback", {"text": "hi", "voice_url": "https://127.0.0.1/a.wav"}, "private, loopback"),
    ("url-localhost", {"text": "hi", "voice_url": "https://localhost:8443/a.wav"}, "private, loopback"),
    ("url-private-10", {"text": "hi", "voice_url": "https://10.1.2.3/a.wav"}, "private, loopback"),
    ("url-private-192", {"text": "hi", "voice_url": "https://192.168.0.1/a.wav"}, "private, loopback"),
    ("url-metadata", {"text": "hi", "voice_url": "https://169.254.169.254/latest/meta-data/"}, "private, loopback"),
    ("url-ipv6-loopback", {"text": "hi", "voice_url": "https://[::1]/a.wav"}, "private, loopback"),
    ("url-unspecified", {"text": "hi", "voice_url": "https://0.0.0.0/a.wav"}, "private, loopback"),
    ("url-nat64-metadata", {"text": "hi", "voice_url": "https://[64:ff9b::a9fe:a9fe]/x"}, "private, loopback"),
    ("url-6to4-loopback", {"text": "hi", "voice_url": "https://[2002:7f00:1::]/x"}, "private, loopback"),
    ("url-v4-compatible", {"text": "hi", "voice_url": "https://[::7f00:1]/x"}, "private, loopback"),
    ("url-v4-mapped", {"text": "hi", "voice_url": "https://[::ffff:169.254.169.254]/x"}, "private, loopback"),
    ("url-site-local", {"text": "hi", "voice_url": "https://[fec0::1]/a.wav"}, "private, loopback"),
    ("url-site-local-2", {"text": "hi", "voice_url": "https://[feff:ffff::1]/a.wav"}, "private, loopback"),
    ("url-long-host", {"text": "hi", "voice_url": "https://" + "a" * 3000 + ".test/x"},
     "voice_url host '" + "a" * 39 + "…' could not be resolved."),
    ("name-long-missing", {"text": "hi", "voice_name": "n" * 200}, "No voice named '" + "n" * 39 + "…' under"),
    ("url-decimal-ip", {"text": "hi", "voice_url": "https://2130706433/a.wav"}, "private, loopback"),
    ("url-credentials", {"text": "hi", "voice_url": "https://user:pw@example.test/a.wav"}, "must not carry credentials"),
    ("url-no-host", {"text": "hi", "voice_url": "https:///a.wav"}, "voice_url has no host"),
    ("url-bad-port", {"text": "hi", "voice_url": "https://example.test:99999/a.wav"}, "voice_url has an invalid port"),
    ("url-huge", {"text": "hi", "voice_url": "https://a.test/" + "x" * 5000}, "voice_url: string should have at most 4096"),
    ("b64-invalid", {"text": "hi", "voice_base64": "!!not base64!!"}, "voice_base64 is not valid base64"),
    ("b64-padding", {"text": "hi", "voice_base64": "YWJjZA"}, "voice_base64 is not valid base64"),
    ("b64-empty", {"text": "hi", "voice_base64": ""}, "voice_base64: string should have at least 1 character"),
    ("b64-non-audio", {"text": "hi", "voice_base64": b64(PNG), "ref_text": "x"}, "not a readable audio file"),
    ("b64-zero-bytes", {"text": "hi", "voice_base64": "AAAA", "ref_text": "x"}, "not a readable audio file"),
    ("b64-truncated-wav", {"text": "hi", "voice_base64": b64(WAV[:60]), "ref_text": "x"}, "The voice"),
    ("b64-half-wav", {"text": "hi", "voice_base64": b64(WAV[: len(WAV) // 20]), "ref_text": "x"}, "s of sound; at least 1.0 s"),
    ("audio-0.1s", {"text": "hi", "voice_base64": b64(audio_bytes(0.1)), "ref_text": "x"}, "s of sound; at least 1.0 s"),
    ("audio-silent", {"text": "hi", "voice_base64": b64(audio_bytes(5, silent=True)), "ref_text": "x"},
     "The voice has 0.0 s of sound"),
    ("audio-too-long", {"text": "hi", "voice_base64": b64(audio_bytes(601, "FLAC", 8000, silent=True)), "ref_text": "x"},
     "The voice is 601 s long; at most 600 s"),
    ("format-aac", {"text": "hi", "voice_base64": GOOD_VOICE, "output_format": "aac"},
     "output_format: input should be 'wav', 'flac', 'mp3', 'ogg', 'opus' or 'pcm'"),
    ("captions-format-ass", {"text": "hi", "voice_base64": GOOD_VOICE, "captions_format": "ass"},
     "captions_format: input should be 'srt', 'vtt' or 'vtt_words'"),
    ("stream-format-int", {"text": "hi", "voice_base64": GOOD_VOICE, "stream_format": 16},
     "stream_format: input should be 'pcm' or 'wav'"),
    ("stream-format-unstreamed", {"text": "hi", "voice_base64": GOOD_VOICE, "stream_format": "pcm"},
     "stream_format: this worker does not stream (its STREAM setting is off)"),
    ("speed-high", {"text": "hi", "voice_base64": GOOD_VOICE, "speed": 100}, "speed: input should be less than or equal to 3"),
    ("speed-zero", {"text": "hi", "voice_base64": GOOD_VOICE, "speed": 0}, "speed: input should be greater than or equal to 0.3"),
    ("speed-nan", {"text": "hi", "voice_base64": GOOD_VOICE, "speed": float("nan")}, "speed: input should be a finite number"),
    ("speed-inf", {"text": "hi", "voice_base64": GOOD_VOICE, "speed": float("inf")}, "speed: input should be a finite number"),
    ("speed-string", {"text": "hi", "voice_base64": GOOD_VOICE, "speed": "fast"}, "speed: input should be a valid number"),
    ("nfe-zero", {"text": "hi", "voice_base64": GOOD_VOICE, "nfe_step": 0}, "nfe_step: input should be greater than or equal to 4"),
    ("nfe-huge", {"text": "hi", "voice_base64": GOOD_VOICE, "nfe_step": 10_000}, "nfe_step: input should be less than or equal to 128"),
    ("nfe-float", {"text": "hi", "voice_base64": GOOD_VOICE, "nfe_step": 32.5}, "nfe_step: input should be a valid integer"),
    ("nfe-string", {"text": "hi", "voice_base64": GOOD_VOICE, "nfe_step": "32"}, "nfe_step: input should be a valid integer"),
    ("cfg-negative", {"text": "hi", "voice_base64": GOOD_VOICE, "cfg_strength": -1}, "cfg_strength: input should be greater"),
    ("seed-negative", {"text": "hi", "voice_base64": GOOD_VOICE, "seed": -1}, "seed: input should be greater than or equal to 0"),
    ("seed-huge", {"text": "hi", "voice_base64": GOOD_VOICE, "seed": 2**40}, "seed: input should be less than or equal to"),
    ("rms-zero", {"text": "hi", "voice_base64": GOOD_VOICE, "target_rms": 0}, "target_rms: input should be greater than 0"),
    ("bool-string", {"text": "hi", "voice_base64": GOOD_VOICE, "remove_silence": "yes"}, "remove_silence: input should be a valid boolean"),
    ("unknown-field", {"text": "hi", "voice_base64": GOOD_VOICE, "evil": 1}, "evil: is not a known field"),
    ("ref-text-huge", {"text": "hi", "voice_base64": GOOD_VOICE, "ref_text": "a" * 5000}, "ref_text: string should have at most 2000"),
    ("language-injection", {"text": "hi", "voice_base64": GOOD_VOICE, "language": "en; DROP TABLE"},
     "language: must be a language name or code, such as 'en' or 'german'."),
    ("language-long", {"text": "hi", "voice_base64": GOOD_VOICE, "language": "e" * 33},
     "language: string should have at most 32 characters"),
    ("ref-text-emoji", {"text": "hi", "voice_base64": GOOD_VOICE, "ref_text": "😀🎉"},
     "ref_text: has no letters or digits: send the words spoken in the reference"),
    ("ref-text-zero-width", {"text": "hi", "voice_base64": GOOD_VOICE, "ref_text": "\u200b\u200c\u2060"},
     "ref_text: has no letters or digits"),
    # dialogues
    ("dialogue-unknown-voice", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "segments": [{"voice": "b", "text": "Hi."}]},
     "segments.0.voice names no voice of voices (a)"),
    ("dialogue-unknown-tag", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi. [c] Hello."},
     "the tag [c] names no voice of voices (a)"),
    ("dialogue-tag-without-text", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi. [a] ... [a] Yes."},
     "the tag [a] has no text to speak after it"),
    ("dialogue-text-before-tag", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "Hi. [a] Hello."},
     "'Hi.' comes before the first [voice] tag"),
    ("dialogue-no-tags", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "Hello."},
     "the text needs [voice] tags"),
    ("dialogue-text-and-segments", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi.",
                                    "segments": [{"voice": "a", "text": "Hi."}]}, "give either segments or text"),
    ("dialogue-neither", {"voices": {"a": {"voice_base64": GOOD_VOICE}}}, "give either segments or text"),
    ("dialogue-top-level-voice", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "voice_base64": GOOD_VOICE,
                                  "text": "[a] Hi."}, "with voices, give voice_base64 inside each voice"),
    ("segments-without-voices", {"voice_base64": GOOD_VOICE, "segments": [{"voice": "a", "text": "Hi."}]},
     "segments needs voices"),
    ("dialogue-empty-voices", {"voices": {}, "text": "[a] Hi."}, "voices is empty"),
    ("dialogue-empty-segments", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "segments": []}, "segments is empty"),
    ("dialogue-voice-name-path", {"voices": {"../a": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi."},
     "'../a' is not a voice name"),
    ("dialogue-voice-two-sources", {"voices": {"a": {"voice_base64": GOOD_VOICE, "voice_name": "a"}},
                                    "text": "[a] Hi."}, "voices.a: give exactly one of"),
    ("dialogue-voice-no-source", {"voices": {"a": {"ref_text": "Hello."}}, "text": "[a] Hi."},
     "voices.a: give exactly one of"),
    ("dialogue-voice-traversal", {"voices": {"a": {"voice_name": "../x"}}, "text": "[a] Hi."},
     "voices.a.voice_name: must be a plain file name"),
    ("dialogue-voices-list", {"voices": [GOOD_VOICE], "text": "[a] Hi."}, "voices: input should be a valid dictionary"),
    ("dialogue-segment-blank", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "segments": [{"voice": "a", "text": "?!"}]},
     "segments.0.text: has nothing to speak"),
    ("dialogue-segment-extra", {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                                "segments": [{"voice": "a", "text": "Hi.", "ssml": "<x/>"}]},
     "segments.0.ssml: is not a known field"),
    ("dialogue-pause-negative", {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                                 "segments": [{"voice": "a", "text": "Hi.", "pause_after": -1.0}]},
     "segments.0.pause_after: input should be greater than or equal to 0"),
    ("dialogue-pause-string", {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                               "segments": [{"voice": "a", "text": "Hi.", "pause_after": "inf"}]},
     "segments.0.pause_after: input should be a valid number"),
    ("dialogue-speed", {"voices": {"a": {"voice_base64": GOOD_VOICE, "speed": 9.0}}, "text": "[a] Hi."},
     "voices.a.speed: input should be less than or equal to 3"),
    # text normalisation
    ("normalize-string", {"text": "hi", "voice_base64": GOOD_VOICE, "normalize": "yes"},
     "normalize: input should be a valid boolean"),
    ("text-language-unknown", {"text": "hi 5", "voice_base64": GOOD_VOICE, "text_language": "xx"},
     "text_language: 'xx' is not a language the worker reads numbers in: give en, zh, or a num2words code"),
    ("text-language-path", {"text": "hi", "voice_base64": GOOD_VOICE, "text_language": "../en"},
     "text_language: '../en' is not a language the worker reads numbers in"),
    ("text-language-long", {"text": "hi", "voice_base64": GOOD_VOICE, "text_language": "e" * 100},
     "text_language: string should have at most 8 characters"),
    ("text-language-number", {"text": "hi", "voice_base64": GOOD_VOICE, "text_language": 7},
     "text_language: input should be a valid string"),
    # round three (issue 24): numbers in other languages, text that normalises to nothing
    ("text-language-hangs", {"text": "Selam 9852152.", "voice_base64": GOOD_VOICE, "text_language": "am"},
     "text_language: 'am' is not a language the worker reads numbers in"),  # its converter loops forever
    # round three (issue 24): echoes of caller input, invisible characters
    ("echo-field-1m", {"text": "hi", "voice_base64": GOOD_VOICE, "x" * 10**6: 1},
     "x" * 39 + "…: is not a known field"),
    ("echo-voices-key-1m", {"voices": {"v" * 10**6: {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi."},
     "voices: '" + "v" * 39 + "…' is not a voice name"),
    ("echo-voices-key-no-source-1m", {"voices": {"v" * 10**6: {}}, "text": "[a] Hi."},
     "voices." + "v" * 39 + "…: give exactly one of"),
    ("echo-voice-field-1m", {"voices": {"a": {"voice_base64": GOOD_VOICE, "k" * 10**6: 1}}, "text": "[a] Hi."},
     "voices.a." + "k" * 39 + "…: is not a known field"),
    ("echo-segment-field-1m", {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                               "segments": [{"voice": "a", "text": "Hi.", "s" * 10**6: 1}]},
     "segments.0." + "s" * 39 + "…: is not a known field"),
    ("echo-five-fields-1m", {"text": "hi", "voice_base64": GOOD_VOICE, **{f"{n}" + "f" * 10**6: 1 for n in range(5)}},
     "more)."),
    ("invisible-before-tag", {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "\x01[a] Hi."},
     "text: '<U+0001>' comes before the first [voice] tag"),
    ("invisible-voices-key", {"voices": {"a\u200b": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi."},
     "voices: 'a<U+200B>' is not a voice name"),
    ("invisible-field-newline", {"text": "hi", "voice_base64": GOOD_VOICE, "x\nERROR forged": 1},
     "x<U+000A>ERROR forged: is not a known field"),
    ("invisible-only-text", {"text": "\ufeff\u200b\u2060", "voice_base64": GOOD_VOICE}, "text: has nothing to speak"),
    # round three (issue 24): captions and output formats
    ("format-upper-case", {"text": "hi", "voice_base64": GOOD_VOICE, "output_format": "OGG"},
     "output_format: input should be 'wav', 'flac', 'mp3', 'ogg', 'opus' or 'pcm'"),
    ("format-nul", {"text": "hi", "voice_base64": GOOD_VOICE, "output_format": "ogg\x00"},
     "output_format: input should be 'wav', 'flac', 'mp3', 'ogg', 'opus' or 'pcm'"),
    ("format-path", {"text": "hi", "voice_base64": GOOD_VOICE, "output_format": "wav/../../x"},
     "output_format: input should be 'wav', 'flac', 'mp3', 'ogg', 'opus' or 'pcm'"),
    ("format-list", {"text": "hi", "voice_base64": GOOD_VOICE, "output_format": ["ogg"]},
     "output_format: input should be 'wav', 'flac', 'mp3', 'ogg', 'opus' or 'pcm'"),
    ("captions-format-newline", {"text": "hi", "voice_base64": GOOD_VOICE, "captions_format": "srt\n"},
     "captions_format: input should be 'srt', 'vtt' or 'vtt_words'"),
    ("captions-format-upper-case", {"text": "hi", "voice_base64": GOOD_VOICE, "captions_format": "SRT"},
     "captions_format: input should be 'srt', 'vtt' or 'vtt_words'"),
    ("captions-format-empty", {"text": "hi", "voice_base64": GOOD_VOICE, "captions_format": ""},
     "captions_format: input should be 'srt', 'vtt' or 'vtt_words'"),
    ("stream-format-ogg", {"text": "hi", "voice_base64": GOOD_VOICE, "stream_format": "ogg"},
     "stream_format: input should be 'pcm' or 'wav'"),
]


def tree(path: Path, recursive: bool = True) -> set:
    if not path.exists():
        return set()
    return {str(p) for p in (path.rglob("*") if recursive else path.iterdir())}


def snapshot(s3) -> dict:
    return {
        "jobs": tree(Path(TEST_ENV["JOB_TMP_DIR"])),
        "output": tree(Path(TEST_ENV["OUTPUT_DIR"])),
        "models": tree(STORE.models_dir),
        "repo": tree(ROOT, recursive=False),
        "tmp": tree(Path(tempfile.gettempdir())),  # with private_tmp: this test's own
        "bucket": {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])},
    }


@pytest.fixture(scope="module")
def worker(s3_server):
    return Worker(get_settings())


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_every_hostile_job_gets_a_clear_error_and_nothing_is_written(worker, s3, private_tmp):
    before = snapshot(s3)
    for case_id, raw, expected in CASES:
        out = worker({"id": f"hostile-{case_id}", "input": raw})
        assert set(out) <= {"error", "refresh_worker"} and isinstance(out.get("error"), str), (case_id, out)
        assert expected in out["error"], (case_id, out["error"])
        assert "Traceback" not in out["error"] and len(out["error"]) < 400, case_id
        assert "refresh_worker" not in out, case_id  # bad input never costs the worker
        assert job_dirs() == [], case_id
    assert snapshot(s3) == before

    good = worker({"id": "after-hostile", "input": {"text": "Still working.", "voice_base64": GOOD_VOICE,
                                                      "ref_text": REF_TEXT, "nfe_step": 4}})
    assert "error" not in good, good


def test_a_ten_minute_recording_is_clipped_and_used(worker):
    long_voice = np.concatenate([sf.read(REF_WAV, dtype="float32")[0], np.zeros(int(594.5 * RATE), np.float32)])
    buf = io.BytesIO()
    sf.write(buf, long_voice, RATE, format="FLAC")
    out = worker({"id": "ten-minutes", "input": {"text": "Hello.", "voice_base64": b64(buf.getvalue()),
                                                   "ref_text": REF_TEXT, "nfe_step": 4}})
    assert "error" not in out, out


@pytest.mark.parametrize("rate, peak, fmt, subtype", [
    (23_999, 0.3, "WAV", "PCM_16"),   # torchaudio's resampler took 9 GB for this
    (383_999, 0.3, "WAV", "PCM_16"),  # and asked for 36 GB for this
    (24_000, 3e38, "WAV", "FLOAT"),   # finite, but far past full scale
])
def test_awkward_voices_make_finite_speech(tmp_path, rate, peak, fmt, subtype):
    t = np.arange(int(3 * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (peak * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format=fmt, subtype=subtype)
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))
    for output_format in ("flac", "wav"):
        out = worker({"id": "awkward", "input": {"text": "Hello.", "voice_base64": b64(buf.getvalue()),
                                                   "ref_text": "Hello there.", "nfe_step": 4,
                                                   "output_format": output_format}})
        assert "error" not in out, out
        audio, _ = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])), dtype="float32")
        assert len(audio) and np.isfinite(audio).all()
    assert job_dirs() == []


@pytest.mark.parametrize("update, raw, message", [
    ({"max_text_chars": 10}, {"text": "eleven chars"}, "text is 12 characters; at most 10 are accepted."),
    ({"max_voice_bytes": 2048}, {"voice_base64": GOOD_VOICE}, "voice_base64 decodes to over 2048 bytes."),
    ({"max_voice_seconds": 3.0}, {"voice_base64": GOOD_VOICE}, "The voice is 5 s long; at most 3 s is accepted"),
    ({"max_output_seconds": 1.0}, {"text": "A long sentence that takes more than one second."},
     "at most 1 s is allowed per job (MAX_OUTPUT_SECONDS)"),
    ({"max_inline_bytes": 2048, "s3_bucket": None}, {}, "over the 2.0 KB that can be returned inline"),
    # dialogues: the job's limits hold for the whole of it, and its own have their own settings
    ({}, {"voices": {f"v{n}": {"voice_base64": GOOD_VOICE} for n in range(9)}, "text": "[v0] Hi."},
     "voices has 9 entries; at most 8 are accepted per job (MAX_VOICES)."),
    ({}, {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "segments": [{"voice": "a", "text": "Hi."}] * 501},
     "segments has 501 entries; at most 500 are accepted per job (MAX_SEGMENTS)."),
    ({}, {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "text": "[a] Hi. " * 501},
     "text has 501 [voice] tags; at most 500 segments are accepted per job (MAX_SEGMENTS)."),
    ({}, {"voices": {"a": {"voice_base64": GOOD_VOICE}}, "segments": [{"voice": "a", "text": "Hi.", "pause_after": 10.5}]},
     "segments.0.pause_after is 10.5 s; at most 10 s is accepted (MAX_PAUSE_SECONDS)."),
    ({"max_text_chars": 10}, {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                              "segments": [{"voice": "a", "text": "Hello."}, {"voice": "a", "text": "There."}]},
     "the segments' texts are 12 characters; at most 10 are accepted."),
    ({"max_output_seconds": 5.0}, {"voices": {"a": {"voice_base64": GOOD_VOICE}},  # the pauses count
                                   "segments": [{"voice": "a", "text": "Hi.", "pause_after": 6.0}]},
     "at most 5 s is allowed per job (MAX_OUTPUT_SECONDS)"),
    ({"max_inline_bytes": 200_000, "s3_bucket": None}, {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                                                       "segments": [{"voice": "a", "text": "Hi.", "pause_after": 5}]},
     "over the 195.3 KB that can be returned inline"),
    # text normalisation: the spoken form is held to MAX_TEXT_CHARS, and the grammars' work to its own bound
    ({"max_text_chars": 40}, {"text": "It is 1234567 km."},
     "text is 91 characters once its numbers and symbols are written as words; at most 40 are accepted "
     "(MAX_TEXT_CHARS)."),
    ({"max_text_chars": 40}, {"voices": {"a": {"voice_base64": GOOD_VOICE}},
                              "segments": [{"voice": "a", "text": "It is 1234567 km."}, {"voice": "a", "text": "Hi."}]},
     "text is 94 characters once its numbers and symbols are written as words; at most 40 are accepted"),
    ({"max_normalize_chars": 30}, {"text": "Item 1, item 2, item 3, item 4, item 5, item 6."},
     "at most 30 are accepted per job (MAX_NORMALIZE_CHARS). Send it in parts, or with normalize: false."),
    # round three (issue 24): the normaliser's bounds
    ({"max_text_chars": 200}, {"text": "Pay $1123456789 now. " * 9},  # read only until it is past the limit
     "characters once its numbers and symbols are written as words; at most 200 are accepted (MAX_TEXT_CHARS). "
     "Send it in parts."),
    ({}, {"text": "Item 1 and item 2. " * 170},  # the default bound, before any grammar runs
     "at most 3000 are accepted per job (MAX_NORMALIZE_CHARS). Send it in parts, or with normalize: false."),
    ({"max_normalize_chars": 29}, {"text": "Die Nummern 123456789012345 und 678901234567890.", "text_language": "de"},
     "text has 30 characters of numbers and symbols to read (with the words beside them); at most 29 are accepted "
     "per job (MAX_NORMALIZE_CHARS)."),  # num2words' digits count as the grammars' characters do
    # round three (issue 24): payload limits
    ({"max_inline_bytes": 2048, "s3_bucket": None}, {"output_format": "mp3"},
     "that can be returned inline (RunPod refuses large payloads): configure S3_BUCKET, or send a shorter text."),
    ({"max_inline_bytes": 2048, "s3_bucket": None}, {"output_format": "flac"},
     "configure S3_BUCKET, ask for output_format mp3 or opus, or send a shorter text."),
])
def test_each_limit_has_its_own_message(update, raw, message):
    worker = Worker(get_settings().model_copy(update=update))
    job = {"text": "Hi there.", "voice_base64": GOOD_VOICE, "ref_text": REF_TEXT, "nfe_step": 4, **raw}
    if "voices" in raw:
        job = {k: v for k, v in job.items() if k not in ("text", "voice_base64", "ref_text")} | raw
    out = worker({"id": "limit", "input": job})
    assert message in out.get("error", ""), out
    assert job_dirs() == []


def test_voice_bytes_limit_holds_for_s3_and_urls(s3, monkeypatch):
    s3.put_object(Bucket=BUCKET, Key="voices/big.wav", Body=WAV)
    small = Worker(get_settings().model_copy(update={"max_voice_bytes": 4096, "allow_http_urls": True,
                                                           "allow_private_urls": True}))
    out = small({"id": "big-s3", "input": {"text": "Hi.", "voice_name": "big", "ref_text": "x"}})
    assert out["error"] == f"'voices/big.wav' is {len(WAV)} bytes; at most 4096 bytes are accepted."
    with StaticServer({"/big.wav": (200, {}, WAV)}) as server:
        out = small({"id": "big-url", "input": {"text": "Hi.", "voice_url": server.url + "/big.wav", "ref_text": "x"}})
    assert out["error"] == f"voice_url is {len(WAV)} bytes; at most 4096 are accepted."


@pytest.fixture
def first_hop_is_public(monkeypatch):
    """Treat 127.0.0.1 as if it were a public address, so that a server there can play a
    public host whose redirect leads somewhere private; every other address is judged as usual."""
    real = url_fetch._refuse_address
    monkeypatch.setattr(url_fetch, "_refuse_address", lambda ip: False if str(ip) == "127.0.0.1" else real(ip))


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/iam", "http://127.0.0.2:{port}/secret",
                                    "http://10.0.0.7/internal"])
def test_redirects_into_private_space_are_refused_before_connecting(first_hop_is_public, target):
    with StaticServer({"/secret": (200, {}, b"internal data")}, host="127.0.0.2") as inner:
        port = inner.port
        with StaticServer({"/voice.wav": (302, {"Location": target.format(port=port)}, b"")}) as outer:
            worker = Worker(get_settings().model_copy(update={"allow_http_urls": True}))
            out = worker({"id": "redirect", "input": {"text": "Hi.", "voice_url": outer.url + "/voice.wav",
                                                        "ref_text": "x"}})
        assert "private, loopback" in out["error"]
        assert outer.hits == ["/voice.wav"] and inner.hits == []
    assert job_dirs() == []


def test_redirect_loops_end(first_hop_is_public):
    with StaticServer({"/a": (302, {"Location": "/b"}, b""), "/b": (302, {"Location": "/a"}, b"")}) as server:
        worker = Worker(get_settings().model_copy(update={"allow_http_urls": True}))
        out = worker({"id": "loop", "input": {"text": "Hi.", "voice_url": server.url + "/a", "ref_text": "x"}})
    assert out["error"] == "voice_url redirected more than 3 times."


def test_a_slow_url_is_cut_off(first_hop_is_public):
    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\0" * 100)
                self.wfile.flush()
                threading.Event().wait(0.05)

    with BackgroundServer(Slow) as server:
        worker = Worker(get_settings().model_copy(update={"allow_http_urls": True, "voice_url_timeout_s": 1.0}))
        out = worker({"id": "slow", "input": {"text": "Hi.", "voice_url": server.url + "/v", "ref_text": "x"}})
    assert out["error"] == "voice_url took over 1 s."
    assert job_dirs() == []


class TrickleServer:
    """A TCP server on 127.0.0.1 that answers every connection with `payload`, one byte every
    `gap` seconds (or nothing at all when `payload` is empty), to play a server that keeps a
    fetch alive without ever finishing it."""

    def __init__(self, payload: bytes, gap: float = 0.3):
        import socket

        self.payload, self.gap, self.stop = payload, gap, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.trickle, args=(conn,), daemon=True).start()

    def trickle(self, conn):
        with conn:
            for i in range(len(self.payload) if self.payload else 0):
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(self.payload[i : i + 1])
                except OSError:
                    return
            self.stop.wait(30)

    def __enter__(self):
        threading.Thread(target=self.serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


SLOW_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 1000


@pytest.mark.parametrize("scheme, payload, gap", [
    ("http", SLOW_BODY[:44], 0.0),        # headers at once, then nothing
    ("http", SLOW_BODY[:44] + b"\0" * 200, 0.0),  # headers, some body, then nothing
    ("http", SLOW_BODY, 0.5),             # a byte of body every half second
    ("http", SLOW_BODY, 0.3),             # the status line and headers a byte at a time
    ("https", b"\x16\x03\x01" * 100, 0.3),  # a TLS handshake that never completes
    ("https", b"", 0.0),                  # connected, then silence
], ids=["silent-after-headers", "stalled-body", "trickled-body", "trickled-headers", "trickled-tls", "silent-tls"])
def test_the_whole_fetch_ends_by_the_timeout(first_hop_is_public, scheme, payload, gap):
    import time

    if gap == 0.0 and scheme == "http":
        payload, gap = payload, 0.0001  # all at once, then the server holds the connection open
    with TrickleServer(payload, gap) as server:
        worker = Worker(get_settings().model_copy(update={"allow_http_urls": True, "voice_url_timeout_s": 2.0}))
        started = time.monotonic()
        out = worker({"id": "trickle", "input": {"text": "Hi.", "voice_url": f"{scheme}://127.0.0.1:{server.port}/v",
                                                   "ref_text": "x"}})
        took = time.monotonic() - started
    assert out == {"error": "voice_url took over 2 s."}
    assert took < 4 * 2.0, took  # the trickle alone would last minutes; a loaded machine may add seconds
    assert job_dirs() == []


def test_a_slow_name_lookup_ends_by_the_timeout(monkeypatch):
    import socket
    import time

    monkeypatch.setattr(url_fetch.socket, "getaddrinfo", lambda *a, **k: time.sleep(10))
    worker = Worker(get_settings().model_copy(update={"voice_url_timeout_s": 1.5}))
    started = time.monotonic()
    out = worker({"id": "dns", "input": {"text": "Hi.", "voice_url": "https://slow-dns.example/v.wav", "ref_text": "x"}})
    assert out == {"error": "voice_url took over 1.5 s."}
    assert time.monotonic() - started < 2.5
    assert socket.getaddrinfo is not None


def test_no_sidecar_transcript_larger_than_a_transcript(s3):
    s3.put_object(Bucket=BUCKET, Key="voices/hal.wav", Body=WAV)
    s3.put_object(Bucket=BUCKET, Key="voices/hal.txt", Body=b"word " * 1000)
    out = Worker(get_settings())({"id": "sidecar", "input": {"text": "Hi.", "voice_name": "hal"}})
    assert out["error"] == "The transcript voices/hal.txt is over 2000 characters."
