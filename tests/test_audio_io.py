import io

import numpy as np
import pytest
import soundfile as sf
from conftest import REF_WAV

import audio_io
from errors import AudioError
from config import get_settings

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


# --- encoding: every length, the same samples, the same bytes (issue 24, items 0 and 19) ----------


def speech_like(seconds, seed=0):
    """A tone under noise, loud enough to clip now and then: every rounding case occurs."""
    rng = np.random.default_rng(seed)
    return (tone(seconds, amp=0.9) + 0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def decoded_int16(data, fmt):
    if fmt == "pcm":
        return np.frombuffer(data, "<i2")
    return sf.read(io.BytesIO(bytes(data)), dtype="int16")[0]


def test_lossless_formats_hold_the_same_samples():
    """libsndfile floored for WAV and PCM and rounded for FLAC: one step apart in half the samples."""
    audio = speech_like(3.0)
    audio[:4] = [np.nan, 2.0, -2.0, 0.5 / 32768]
    samples = {fmt: decoded_int16(audio_io.encoded(audio, RATE, fmt), fmt) for fmt in ("wav", "flac", "pcm")}
    assert np.array_equal(samples["wav"], samples["flac"]) and np.array_equal(samples["wav"], samples["pcm"])
    assert np.array_equal(samples["wav"], audio_io.pcm16(audio))
    assert list(samples["wav"][:4]) == [0, 32767, -32768, 0]  # NaN silent, clipped, rounded half to even


def test_16_bit_samples_read_and_written_again_are_unchanged():
    steps = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(audio_io.pcm16(steps.astype(np.float32) / 32768), steps)
    audio = speech_like(0.5)
    error = audio_io.pcm16(audio) / 32768 - np.clip(audio, -1, 32767 / 32768)  # full scale is 32767 steps up
    assert np.max(np.abs(error)) <= 0.5 / 32768


@pytest.mark.parametrize("fmt", sorted(audio_io.FORMATS))
def test_the_same_samples_make_the_same_bytes(fmt):
    """Ogg and Opus files held a random stream serial number (libsndfile draws one per file)."""
    audio = speech_like(2.0)
    assert bytes(audio_io.encoded(audio, RATE, fmt)) == bytes(audio_io.encoded(audio.copy(), RATE, fmt))


def ogg_pages(data):
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS", pos
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27:pos + 27 + segments])
        pages.append(bytes(data[pos:end]))
        pos = end
    return pages


def stored_and_computed_crc(page):
    blank = page[:22] + bytes(4) + page[26:]
    return int.from_bytes(page[22:26], "little"), audio_io.ogg_crc(blank)


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_ogg_pages_get_one_serial_and_checksums_that_decoders_accept(fmt):
    container, subtype, _ = audio_io.FORMATS[fmt]
    audio = speech_like(4.0)
    plain = io.BytesIO()  # as `encoded` writes it, a second at a time, with libsndfile's serial
    with sf.SoundFile(plain, "w", RATE, 1, subtype, format=container) as fh:
        for start in range(0, len(audio), RATE):
            fh.write(audio_io.pcm16(audio[start:start + RATE]))
    pages = ogg_pages(plain.getvalue())
    assert len(pages) >= 3  # headers and audio
    assert all(stored == computed for stored, computed in map(stored_and_computed_crc, pages))  # libogg's own CRC

    ours = bytes(audio_io.encoded(audio, RATE, fmt))
    rewritten = ogg_pages(ours)
    assert len(rewritten) == len(pages)
    assert {int.from_bytes(p[14:18], "little") for p in rewritten} == {audio_io.OGG_SERIAL}
    assert all(stored == computed for stored, computed in map(stored_and_computed_crc, rewritten))
    # libogg drops a page whose checksum is wrong: the same samples from both files, to the last one
    assert len(ours) == len(plain.getvalue()) and ours != plain.getvalue()
    decoded = sf.read(io.BytesIO(ours), dtype="int16")[0]
    assert len(decoded) == len(audio)
    assert np.array_equal(decoded, sf.read(io.BytesIO(plain.getvalue()), dtype="int16")[0])


@pytest.mark.parametrize("fmt", sorted(audio_io.FORMATS))
@pytest.mark.parametrize("seconds", [1 / RATE, 0.2, 1.0, 2.5])
def test_short_and_uneven_pieces_encode_and_decode(fmt, seconds):
    """Streamed pieces are encoded one by one (a first chunk may be a few words): one block, an
    exact number of blocks and a part of one all decode to their own length."""
    audio = speech_like(seconds)
    data = audio_io.encoded(audio, RATE, fmt)
    if fmt == "pcm":
        assert len(data) == 2 * len(audio)
    elif fmt in ("wav", "flac"):
        assert np.array_equal(decoded_int16(data, fmt), audio_io.pcm16(audio))
    else:
        assert abs(len(decoded_int16(data, fmt)) - len(audio)) <= RATE // 10  # lossy codecs pad a little


LONGEST_CHILD = """
import io, json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import numpy as np, soundfile as sf
import audio_io
seconds, rate, formats = float(sys.argv[2]), 24_000, sys.argv[3:]
audio = np.zeros(int(seconds * rate), np.float32)
audio[:rate] = audio[-rate:] = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)  # sound at both ends

def check(fmt):
    started = time.process_time()
    data = audio_io.encoded(audio, rate, fmt)
    spent = time.process_time() - started
    if fmt == "pcm":
        frames, tail = len(data) // 2, np.frombuffer(data, "<i2")[-rate:] / 32768
    else:
        with sf.SoundFile(io.BytesIO(bytes(data))) as fh:
            frames = fh.frames
            fh.seek(max(0, frames - 2 * rate))
            tail = fh.read(dtype="float32")[-rate - rate // 10 :]
    return {"format": fmt, "cpu_s": round(spent, 2), "frames": frames, "tail_rms": float(np.sqrt(np.mean(tail**2)))}

def run():
    for fmt in formats:
        print(json.dumps(check(fmt)), flush=True)

threading.stack_size(2 << 20)  # a small stack, whatever `ulimit -s` says: what one call may use is bounded
worker = threading.Thread(target=run)
worker.start()
worker.join()
"""


def test_every_format_encodes_the_longest_output_without_crashing():
    """libsndfile 1.2.2's Vorbis writer used stack in proportion to the samples of one call and
    crashed the process (SIGSEGV) from about 87 s at 24 kHz on an 8 MB stack. All six formats at
    MAX_OUTPUT_SECONDS, in a child process: a crash fails this test with its exit status and the
    formats done before it. Silence between a second of sound at each end: the encoders are at
    their fastest (this CPU: about 25 s of CPU time for the six, against about 140 s for speech),
    and the end of each file is read back."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    seconds = get_settings().max_output_seconds
    formats = sorted(audio_io.FORMATS)
    child = subprocess.run([sys.executable, "-c", LONGEST_CHILD, str(ROOT), str(seconds), *formats],
                           capture_output=True, text=True, timeout=900)
    done = [json.loads(line) for line in child.stdout.splitlines()]
    assert child.returncode == 0, (child.returncode, [d["format"] for d in done], child.stderr[-2000:])
    assert [d["format"] for d in done] == formats
    for d in done:
        assert abs(d["frames"] - seconds * RATE) <= RATE // 10, d  # lossy codecs pad a little
        assert d["tail_rms"] > 0.1, d  # the last second's tone (0.21 RMS) is there


@pytest.mark.usefixtures("tiny_model")
def test_a_job_run_twice_with_its_seed_gives_the_same_bytes_and_lossless_formats_the_same_samples():
    """Same seed, different bytes (issue 24): Ogg and Opus files differed run to run, and a job's
    FLAC from its WAV by one step in half the samples."""
    import base64

    from runpod_handler import Worker

    worker = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    voice = base64.b64encode(REF_WAV.read_bytes()).decode()

    def audio(fmt):
        out = worker({"id": f"same-{fmt}", "input": {"text": "Hello there, twice.", "voice_base64": voice, "seed": 7,
                                                     "ref_text": "Some call me nature, others call me mother nature.",
                                                     "nfe_step": 4, "output_format": fmt}})
        assert "error" not in out, out
        return base64.b64decode(out["audio_base64"])

    for fmt in ("ogg", "opus"):  # the formats whose bytes differed run to run (PCM is WAV's: test_handler)
        assert audio(fmt) == audio(fmt), fmt
    assert np.array_equal(decoded_int16(audio("flac"), "flac"), decoded_int16(audio("wav"), "wav"))
