import numpy as np
import pytest
import soundfile as sf
from conftest import REF_WAV

import audio_io
from errors import AudioError

RATE = 24_000


def tone(seconds, rate=RATE, freq=220.0, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds, rate=RATE):
    return np.zeros(int(seconds * rate), dtype=np.float32)


@pytest.mark.parametrize("fmt", sorted(audio_io.FORMATS))
def test_every_format_round_trips(tmp_path, fmt):
    audio = tone(2.0)
    path = tmp_path / f"out.{fmt}"
    content_type = audio_io.encode_audio(audio, RATE, fmt, path)
    assert content_type.startswith("audio/")
    if fmt == "pcm":  # headerless: its rate, width and byte order are the contract's, not the file's
        decoded, rate = sf.read(path, samplerate=RATE, channels=1, format="RAW", subtype="PCM_16", endian="LITTLE")
        assert np.array_equal(np.frombuffer(path.read_bytes(), "<i2"), (decoded * 32768).astype("<i2"))
    else:
        decoded, rate = audio_io.read_audio(path, max_seconds=60, keep_seconds=13)
    assert rate == RATE
    assert abs(len(decoded) / rate - 2.0) < 0.1  # mp3/ogg codecs add a little padding
    assert np.sqrt(np.mean(decoded**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_stereo_and_other_rates_become_mono_at_the_model_rate(tmp_path):
    left = tone(3.0, rate=44_100)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, left], axis=1), 44_100)
    audio, rate = audio_io.read_audio(path, 60, 13)
    assert audio.ndim == 1 and rate == 44_100
    ref = audio_io.prepare_reference(audio, rate, RATE, 12.0, 1.0)
    assert abs(len(ref) / RATE - 3.05) < 0.05


def test_long_reference_is_cut_at_a_pause(tmp_path):
    # 8 s of sound, a 1.5 s pause, 8 more s: the cut falls in the pause, not at 12 s.
    audio = np.concatenate([tone(8), silence(1.5), tone(8)])
    ref = audio_io.prepare_reference(audio, RATE, RATE, 12.0, 1.0)
    assert abs(len(ref) / RATE - (8 + 0.05)) < 0.05


def test_long_reference_without_pause_is_cut_at_the_limit():
    ref = audio_io.prepare_reference(tone(20), RATE, RATE, 12.0, 1.0)
    assert abs(len(ref) / RATE - 12.05) < 0.02


def test_real_speech_is_kept_whole():
    audio, rate = audio_io.read_audio(REF_WAV, 60, 13)
    ref = audio_io.prepare_reference(audio, rate, RATE, 12.0, 1.0)
    assert 4.5 < len(ref) / RATE < 5.5


def test_edges_are_trimmed():
    ref = audio_io.prepare_reference(np.concatenate([silence(1), tone(2), silence(1)]), RATE, RATE, 12.0, 1.0)
    assert abs(len(ref) / RATE - 2.05) < 0.02


@pytest.mark.parametrize("audio", [tone(0.1), silence(5), np.concatenate([silence(3), tone(0.3)])])
def test_too_little_sound_is_refused(audio):
    with pytest.raises(AudioError, match="at least"):
        audio_io.prepare_reference(audio, RATE, RATE, 12.0, 1.0)


def test_unreadable_and_too_long_audio_are_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(AudioError, match="not a readable audio file"):
        audio_io.read_audio(junk, 60, 13)
    long = tmp_path / "long.wav"
    sf.write(long, silence(30, rate=8000), 8000)
    with pytest.raises(AudioError, match="at most 20 s"):
        audio_io.read_audio(long, 20, 13)


def test_shorten_silences():
    audio = np.concatenate([tone(1), silence(3), tone(1), silence(0.5), tone(1)])
    out = audio_io.without(audio, audio_io.long_pauses(audio, RATE))
    assert abs(len(out) / RATE - (1 + 1 + 1 + 0.5 + 1)) < 0.05


#: Rates whose ratio to 24 kHz (and 16 kHz, for Whisper) reduces badly: primes, 24 kHz +/- 1,
#: the accepted extremes.
AWKWARD_RATES = [4_000, 7_919, 22_051, 23_993, 23_999, 24_001, 44_101, 96_001, 383_999, 384_000]

BOUNDED_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, soxr  # noqa: F401  (library code is loaded before the baseline)
import audio_io
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway kernel fails here, not on the host
base, seconds = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, {}
for path in sys.argv[2:]:
    started = time.perf_counter()
    audio, rate = audio_io.read_audio(path, 600, keep_seconds=16)
    audio_io.prepare_reference(audio, rate, 24_000, 15.0, 1.0)
    audio_io.resample(audio, rate, 16_000)  # what Whisper gets
    seconds[path] = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def test_any_accepted_rate_resamples_in_bounded_time_and_memory(tmp_path):
    """torchaudio's resampler built a kernel of about (24000/g) x (rate/g) values, g the gcd:
    9.3 GB and 17 s for 15 s at 23,999 Hz. Every voice path goes through read_audio and
    prepare_reference; a 15 s voice at any accepted rate stays under 300 MB and 2 s."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    paths = []
    for rate in AWKWARD_RATES:
        path = tmp_path / f"{rate}.wav"
        sf.write(path, tone(15, rate=rate, freq=180.0), rate, subtype="PCM_16")
        paths.append(str(path))
    child = subprocess.run([sys.executable, "-c", BOUNDED_CHILD, str(ROOT), *paths], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["extra_mb"] < 300, result
    slow = {path: s for path, s in result["seconds"].items() if s >= 2.0}
    assert not slow, slow


@pytest.mark.parametrize("rate", AWKWARD_RATES)
def test_awkward_rates_keep_the_sound(rate):
    audio = audio_io.resample(tone(1.0, rate=rate, freq=300.0), rate, RATE)
    assert len(audio) == pytest.approx(RATE, abs=2) and audio.dtype == np.float32
    expected = tone(1.0, rate=RATE, freq=300.0)
    inner = slice(RATE // 10, -RATE // 10)  # the filter's edges aside
    assert np.linalg.norm(audio[inner] - expected[inner]) / np.linalg.norm(expected[inner]) < 0.01


@pytest.mark.parametrize("rate, channels", [(3_999, 1), (1, 1), (384_001, 1), (24_000, 17)])
def test_rates_and_channel_counts_out_of_range_are_refused(tmp_path, rate, channels):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros((rate // 2 + 1, channels), dtype=np.float32), rate)
    with pytest.raises(AudioError, match=f"{channels} channels at {rate} Hz; a voice recording has at most 16 "
                                         f"channels at 4000 to 384000 Hz"):
        audio_io.read_audio(path, 600, 13)


@pytest.mark.parametrize("peak", [3e38, 1e6, 1.5])
def test_samples_past_full_scale_are_normalised(tmp_path, peak):
    path = tmp_path / "loud.wav"
    wave = tone(2.0, amp=1.0)
    sf.write(path, np.stack([wave * peak, wave * peak], axis=1), RATE, subtype="FLOAT")
    audio, _ = audio_io.read_audio(path, 60, 13)
    assert np.isfinite(audio).all()
    assert np.max(np.abs(audio)) == pytest.approx(1.0, rel=1e-4)
    assert np.allclose(audio, wave, atol=1e-4)  # the same sound, at full scale


def test_non_finite_samples_are_refused(tmp_path):
    path = tmp_path / "nan.wav"
    wave = tone(2.0)
    wave[100] = np.nan
    sf.write(path, wave, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="invalid samples"):
        audio_io.read_audio(path, 60, 13)


def test_decoding_reads_only_what_is_kept(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(40.0, rate=48_000), 48_000)
    audio, rate = audio_io.read_audio(path, 600, keep_seconds=13)
    assert rate == 48_000 and len(audio) == 13 * 48_000
