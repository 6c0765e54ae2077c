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
    out = audio_io.shorten_silences(audio, RATE)
    assert abs(len(out) / RATE - (1 + 1 + 1 + 0.5 + 1)) < 0.05
