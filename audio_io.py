"""Audio in and out with soundfile (libsndfile is bundled in its wheel: WAV, FLAC, OGG and
MP3 without FFmpeg), and the reference clipping f5-tts does with pydub, in numpy."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from errors import AudioError, os_error

#: output_format -> (soundfile format, subtype, content type). `pcm` is raw 16-bit little-endian
#: mono, the samples of the WAV file without its header (what streaming and OpenAI-style clients
#: read); `opus` is Ogg Opus. Encoding 30 min of speech took one core of the 2-core test machine
#: 0.3 s for WAV and PCM, 1 s FLAC, 8 s Vorbis, 22 s MP3 and 104 s Opus (libsndfile sets Opus's
#: complexity to 10 and gives no way to lower it); a job reports it as `timings.encode`.
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "ogg": ("OGG", "VORBIS", "audio/ogg"),
    "opus": ("OGG", "OPUS", "audio/ogg; codecs=opus"),
    "pcm": ("RAW", "PCM_16", "audio/pcm"),
}
VOICE_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")

_WINDOW_S = 0.01  # loudness is judged over 10 ms windows


#: Sample rates accepted for a voice: telephone audio (8 kHz) and up, with room either side.
MIN_RATE, MAX_RATE, MAX_CHANNELS = 4_000, 384_000, 16


def read_audio(path: Path, max_seconds: float, keep_seconds: float) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 at its own rate; refuse what is not audio or too long.

    Only the first `keep_seconds` are decoded (the reference is clipped shorter anyway), one
    second at a time, each mixed to mono at once: memory stays a few tens of MB whatever the
    rate and channel count. Float formats may hold samples far past full scale (up to 3e38);
    such a recording is scaled so that its peak is full scale, as a sound editor would
    normalise it, instead of overflowing the model's arithmetic into noise or NaN."""
    try:
        info = sf.info(str(path))
    except Exception:
        raise AudioError("The voice is not a readable audio file (WAV, FLAC, OGG or MP3 expected).") from None
    if info.samplerate <= 0 or info.frames <= 0 or info.channels <= 0:
        raise AudioError("The voice audio is empty.")
    if not MIN_RATE <= info.samplerate <= MAX_RATE or info.channels > MAX_CHANNELS:
        raise AudioError(
            f"The voice has {info.channels} channels at {info.samplerate} Hz; a voice recording has at most "
            f"{MAX_CHANNELS} channels at {MIN_RATE} to {MAX_RATE} Hz."
        )
    if info.frames / info.samplerate > max_seconds:
        raise AudioError(
            f"The voice is {info.frames / info.samplerate:.0f} s long; at most {max_seconds:.0f} s is accepted "
            "(only the first ~12 s are used)."
        )
    wanted, blocks = int(keep_seconds * info.samplerate), []
    try:
        with sf.SoundFile(str(path)) as fh:
            while wanted > 0:
                block = fh.read(min(wanted, info.samplerate), dtype="float64", always_2d=True)
                if not len(block):
                    break
                wanted -= len(block)
                blocks.append(block.mean(axis=1))
    except Exception:
        raise AudioError("The voice audio is truncated or corrupt and could not be decoded.") from None
    if not blocks:
        raise AudioError("The voice audio is empty.")
    audio = np.concatenate(blocks)
    if not np.isfinite(audio).all():
        raise AudioError("The voice audio contains invalid samples (NaN or infinite).")
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        audio /= peak
    return audio.astype(np.float32), info.samplerate


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample with libsoxr, whose time and memory grow with the audio's length only.
    torchaudio's polyphase kernel grows with rate / gcd(rate, target): 15 s at 23,999 Hz took
    it 17 s and 9.3 GB, soxr 0.007 s (docs/benchmarks.md, `bench.py --resample`)."""
    if rate == target:
        return audio
    import soxr

    return soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), rate, target, quality="HQ")


def _window_db(audio: np.ndarray, rate: int) -> np.ndarray:
    """Loudness in dBFS of each 10 ms window."""
    n = max(1, int(rate * _WINDOW_S))
    usable = len(audio) // n * n
    if usable == 0:
        return np.full(1, -120.0)
    power = np.mean(np.square(audio[:usable].reshape(-1, n), dtype=np.float64), axis=1)
    return 10 * np.log10(np.maximum(power, 1e-12))


def _silent_runs(db: np.ndarray, threshold: float, min_windows: int) -> list[tuple[int, int]]:
    """(start, end) window indices of silent runs at least `min_windows` long."""
    silent = np.concatenate(([False], db < threshold, [False]))
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    return [(s, e) for s, e in zip(edges[::2], edges[1::2]) if e - s >= min_windows]


def trim_silence(audio: np.ndarray, rate: int, threshold: float = -42.0) -> np.ndarray:
    loud = np.flatnonzero(_window_db(audio, rate) >= threshold)
    if loud.size == 0:
        return audio[:0]
    n = int(rate * _WINDOW_S)
    return audio[loud[0] * n : (loud[-1] + 1) * n]


def prepare_reference(audio: np.ndarray, rate: int, target_rate: int, clip_seconds: float,
                      min_seconds: float) -> np.ndarray:
    """The reference the model sees: mono at `target_rate`, at most `clip_seconds` long, cut at
    a pause where there is one (f5-tts clips at about 12 s), edges trimmed, 50 ms of silence
    appended."""
    audio = resample(audio.astype(np.float32, copy=False), rate, target_rate)
    limit = int(clip_seconds * target_rate)
    if len(audio) > limit:
        db = _window_db(audio, target_rate)
        n = int(target_rate * _WINDOW_S)
        earliest = min(6.0, clip_seconds / 2) * target_rate
        cut = limit
        for threshold, min_windows in ((-50.0, 100), (-40.0, 10)):  # long pauses first, as f5-tts
            cuts = [(s + e) // 2 * n for s, e in _silent_runs(db, threshold, min_windows)]
            cuts = [c for c in cuts if earliest <= c <= limit]
            if cuts:
                cut = cuts[-1]
                break
        audio = audio[:cut]
    audio = trim_silence(audio, target_rate)
    seconds = len(audio) / target_rate
    if seconds < min_seconds:
        raise AudioError(
            f"The voice has {seconds:.1f} s of sound; at least {min_seconds:.1f} s is needed "
            "(5 to 12 s of clear speech works best)."
        )
    return np.concatenate([audio, np.zeros(int(0.05 * target_rate), dtype=np.float32)])


def long_pauses(audio: np.ndarray, rate: int, threshold: float = -50.0,
                max_silence: float = 1.0) -> list[tuple[int, int]]:
    """The (start, end) samples that shorten every pause longer than `max_silence` to
    `max_silence` (f5-tts's remove_silence): the middle of each such pause, to take out with
    `without` (and `after_cuts` for where a sample goes)."""
    n = int(rate * _WINDOW_S)
    keep = int(max_silence / _WINDOW_S) // 2
    return [((start + keep) * n, (end - keep) * n)
            for start, end in _silent_runs(_window_db(audio, rate), threshold, 2 * keep + 1)]


def without(audio: np.ndarray, cuts: list[tuple[int, int]]) -> np.ndarray:
    """`audio` less the `cuts` (in order, not overlapping)."""
    kept, last = [], 0
    for start, end in cuts:
        kept.append(audio[last:start])
        last = end
    kept.append(audio[last:])
    return np.concatenate(kept)


def after_cuts(position: int, cuts: list[tuple[int, int]]) -> int:
    """Where sample `position` lands once the `cuts` are taken out (a cut sample: where its cut was)."""
    return position - sum(min(end, position) - start for start, end in cuts if start < position)


def least_encoded_bytes(fmt: str, samples: int) -> int | None:
    """The fewest bytes `samples` of mono audio can take in `fmt`, where that is known before
    encoding: WAV and PCM hold 16-bit samples. FLAC of speech is about half of that (55% for f5-tts's
    reference recording), and speech with half its time silent still took 28%: a quarter is a
    floor it does not go under. MP3, Ogg and Opus sizes are known only once encoded."""
    if fmt in ("wav", "pcm"):
        return 2 * samples
    if fmt == "flac":
        return samples // 2
    return None


def encoded(audio: np.ndarray, rate: int, fmt: str) -> memoryview:
    """`audio` in `fmt`, in memory (a view of the buffer libsndfile wrote: no copy of a long file).

    Handed to libsndfile a second at a time: its Vorbis writer (1.2.2) takes stack in proportion
    to the samples of one call and crashed the process from about 87 s at 24 kHz (an 8 MB stack;
    sooner in a thread with less). Every format gets the same 16-bit samples (`pcm16`), so WAV, FLAC
    and PCM hold the same samples, and pieces encoded one by one hold those of the whole. The same
    samples make the same bytes: Ogg's random stream serial is made a constant (`_fixed_serial`)."""
    container, subtype, _ = FORMATS[fmt]
    out = io.BytesIO()
    endian = "LITTLE" if container == "RAW" else "FILE"  # a headerless file says nothing of its byte order
    block = max(1, rate)
    with sf.SoundFile(out, "w", samplerate=rate, channels=1, subtype=subtype, endian=endian, format=container) as fh:
        for start in range(0, len(audio), block):
            fh.write(pcm16(audio[start : start + block]))
    data = out.getbuffer()
    if container == "OGG":
        _fixed_serial(data)
    return data


#: The data size of a WAV stream whose length is unknown when its header is sent.
UNKNOWN_SIZE = 0xFFFFFFFF


def streaming_wav_header(rate: int) -> bytes:
    """The header of a 16-bit mono WAV stream whose length is not known when it begins: the RIFF
    and data sizes are 0xFFFFFFFF, as ffmpeg writes WAV to a pipe. Followed by `pcm16` samples,
    libsndfile (soundfile) and Python's `wave` read it to the end of the bytes."""
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
            + b"data" + struct.pack("<I", UNKNOWN_SIZE))


def pcm16(audio: np.ndarray) -> np.ndarray:
    """`audio` as 16-bit samples: rounded to the nearest step of 1/32768, the scale libsndfile
    reads 16-bit files with, so 16-bit audio read and written again keeps its samples; past full
    scale clipped, NaN silent. Done here, once for every format: libsndfile's own conversion
    floors for WAV and rounds for FLAC (one step apart in half the samples)."""
    scaled = np.nan_to_num(np.asarray(audio, dtype=np.float32) * np.float32(32768.0), nan=0.0)
    return np.clip(np.rint(scaled, out=scaled), -32768, 32767, out=scaled).astype(np.int16)


#: The serial number of every Ogg stream written: libsndfile draws a random one per file.
OGG_SERIAL = int.from_bytes(b"F5TT", "little")
_BIT_REVERSED = bytes(int(f"{n:08b}"[::-1], 2) for n in range(256))


def _fixed_serial(data: memoryview) -> None:
    """Every page of the Ogg stream in `data` given the serial OGG_SERIAL, and its checksum
    recomputed. Left as written where `data` is not a whole run of Ogg pages (nothing half done)."""
    pages, pos = [], 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        pages.append((pos, end))
        pos = end
    if pos != len(data):
        return
    serial = OGG_SERIAL.to_bytes(4, "little")
    for start, end in pages:
        data[start + 14 : start + 18] = serial
        data[start + 22 : start + 26] = bytes(4)  # the checksum covers the page with its own field zero
        data[start + 22 : start + 26] = ogg_crc(data[start:end]).to_bytes(4, "little")


def ogg_crc(page: bytes | memoryview) -> int:
    """Ogg's page checksum: CRC-32 with polynomial 0x04c11db7, most significant bit first, no
    initial or final inversion. zlib's CRC-32 is the same polynomial bit-reflected with both
    inversions, so it computes it on the page's bytes bit-reversed, at C speed."""
    reflected = zlib.crc32(bytes(page).translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def encode_audio(audio: np.ndarray, rate: int, fmt: str, path: Path) -> str:
    """Write `audio` to `path` in `fmt`; returns the content type.

    Encoded in memory, then written: libsndfile's MP3 and Ogg encoders ignore failed writes
    and leave a truncated file on a full disk, where Python's own write raises."""
    data = encoded(audio, rate, fmt)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise os_error(exc, "the audio", "JOB_TMP_DIR", path) from None
    return FORMATS[fmt][2]
