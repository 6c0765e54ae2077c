"""Streamed jobs (STREAM on): pieces of audio in reading order as they are made, joined exactly
the job's whole file; the first piece before anything else is sampled; failures end the stream
with an error item and leave nothing behind."""

import base64
import io
import threading
import time
from contextlib import closing

import numpy as np
import pytest
import soundfile as sf
from conftest import SHORT_REF_TEXT, job_dirs

import engine
import loaded_model
import runpod_handler
import synthesis
from runpod_handler import Worker
from synthesis import Chunk
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

LONG = " ".join(f"Sentence number {n} of a text long enough to need several chunks and batches." for n in range(8))


@pytest.fixture(scope="module")
def voice() -> str:
    from conftest import SHORT_REF_WAV  # what is tested is the stream, not the voice

    return base64.b64encode(SHORT_REF_WAV.read_bytes()).decode()


def streaming_worker(**settings) -> Worker:
    update = {"s3_bucket": None, "stream": True, "max_batch_frames": 4000, **settings}
    return Worker(get_settings().model_copy(update=update))


def job(voice, **fields):
    return {"id": "stream-" + ("-".join(sorted(fields)) or "plain"),
            "input": {"text": LONG, "voice_base64": voice, "ref_text": SHORT_REF_TEXT, "nfe_step": 4, "seed": 11,
                      **fields}}


# --- the first chunk ---------------------------------------------------------------------------


def nonspace(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("text, lead", [
    ("Hello there, my old friend. How have you been all these years?", "Hello there, my old friend."),
    ("Yes. Of course I remember the night we met, it was raining.", "Yes. Of course I remember"),
    ("Short and sweet.", "Short and sweet."),
    ("Okay, ...", "Okay, ..."),  # nothing left to speak after the start: one chunk
    ("A sentence without any punctuation that runs on and on for quite a while yet", "A sentence without"),
    ("你好，世界。今天天气很好，我们去公园散步吧。", "你好，世界。"),
])
def test_a_stream_starts_with_a_few_words_up_to_a_boundary(text, lead):
    first, rest = synthesis.split_lead(text, max_chars=100)  # a quarter: 25 bytes
    assert first == lead
    assert nonspace(first + rest) == nonspace(text)  # nothing lost, nothing added
    assert len(first.encode()) >= min(synthesis.LEAD_MIN_BYTES, len(text.encode()))


def test_the_first_chunk_keeps_every_character_of_any_text():
    samples = ["  Leading space, then\nnew lines,\n\n and   runs of   spaces. Then more!",
               "Hi! " * 30, "x" * 500, "word " * 200, "¡Hola! ¿Qué tal? Muy bien, gracias.", "。" * 40 + "好"]
    for text in samples:
        first, rest = synthesis.split_lead(text.strip(), max_chars=120)
        assert first and nonspace(first + rest) == nonspace(text), text
        assert len(first.encode()) <= max(120 // 4, synthesis.LEAD_MIN_BYTES) * 2, first


def test_a_stream_plan_samples_the_first_chunks_alone_then_batches_in_reading_order():
    chunks = [Chunk(0, "a", 300)] + [Chunk(i, "x", f) for i, f in enumerate([1000, 990, 400, 980, 1000, 410], 1)]
    batches = synthesis.plan_stream_batches(chunks, max_batch_frames=3000)
    assert [[c.index for c in b] for b in batches[:2]] == [[0], [1]]
    rest = batches[2:]
    assert sorted(c.index for b in rest for c in b) == [2, 3, 4, 5, 6]
    assert [min(c.index for c in b) for b in rest] == sorted(min(c.index for c in b) for b in rest)
    for batch in rest:  # the budget and the fill of plan_batches hold
        longest = max(c.frames for c in batch)
        assert len(batch) * longest <= 3000 and all(c.frames >= synthesis.MIN_BATCH_FILL * longest for c in batch)
    # Chunks alike: batches of the budget's size, each a run of the text, in order; grouped by
    # length instead, every batch would hold chunks from all over the text.
    same = [Chunk(i, "x", 1000) for i in range(12)]
    batches = synthesis.plan_stream_batches(same, max_batch_frames=4000)
    assert [[c.index for c in b] for b in batches] == [[0], [1], [2, 3, 4, 5], [6, 7, 8, 9], [10, 11]]


def reference_cross_fade(waves, samples):
    """cross_fade as it was written before pieces existed: the whole of every wave at once."""
    parts, tail = [], waves[0]
    for nxt in waves[1:]:
        n = min(samples, len(tail), len(nxt))
        if n <= 0:
            parts.append(tail)
            tail = nxt
            continue
        fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
        parts.append(tail[:-n])
        parts.append(tail[-n:] * (1.0 - fade) + nxt[:n] * fade)
        tail = nxt[n:]
    parts.append(tail)
    return np.concatenate(parts).astype(np.float32, copy=False)


@pytest.mark.parametrize("fade", [0, 1, 100, 3600])
def test_pieces_of_a_cross_fade_join_to_the_whole_sample_for_sample(fade):
    rng = np.random.default_rng(fade)
    lengths = [5000, 50, 0, 3600, 7000, 10, 4000]  # some shorter than the fade, one empty
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    fader, pieces, spans, start = synthesis.CrossFade(fade), [], [], 0
    for wave in waves:
        pieces.append(fader.add(wave))
        spans.append((start + fader.lead, start + fader.lead + len(wave)))  # as `pieces` places a chunk
        start += len(pieces[-1])
    pieces.append(fader.finish())
    whole = np.concatenate(pieces)
    assert np.array_equal(whole, reference_cross_fade(waves, fade))
    for wave, (a, b) in zip(waves, spans):  # each wave lies in its span: exactly, where no fade touches it
        assert 0 <= a <= b <= len(whole) and b - a == len(wave)
        if fade == 0:
            assert np.array_equal(whole[a:b], wave)
    assert np.array_equal(synthesis.cross_fade(waves, fade), reference_cross_fade(waves, fade))


# --- streamed jobs -----------------------------------------------------------------------------


def decode_piece(item) -> np.ndarray:
    data = base64.b64decode(item["audio_base64"])
    if item["format"] == "pcm":
        return np.frombuffer(data, "<i2")
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == item["sample_rate"]
    return samples


@pytest.mark.parametrize("stream_format", ["pcm", "wav"])
def test_the_pieces_joined_are_the_whole_file(voice, sampling_calls, stream_format):
    items = list(streaming_worker().stream(job(voice, stream_format=stream_format)))
    *pieces, done = items
    assert done["type"] == "done" and "error" not in done, done
    assert [p["type"] for p in pieces] == ["audio"] * len(pieces)
    firsts = [p for p in pieces if p["part"] == 0]  # a chunk over PART_SECONDS goes out in parts
    assert [p["index"] for p in firsts] == list(range(done["chunks"])) and done["chunks"] >= 4
    assert done["batches"] == len(sampling_calls) >= 3 and sampling_calls[:2] == [1, 1]
    start = 0.0
    for piece in pieces:  # each starts where the one before it ends
        assert piece["start_s"] == pytest.approx(start, abs=2e-3) and piece["format"] == stream_format
        start += piece["duration_s"]
    joined = np.concatenate([decode_piece(p) for p in pieces])
    whole, rate = sf.read(io.BytesIO(base64.b64decode(done["audio_base64"])), dtype="int16")
    assert np.array_equal(joined, whole)
    assert done["duration_s"] == pytest.approx(len(whole) / rate, abs=1e-3) == pytest.approx(start, abs=2e-3)
    assert " ".join(p["text"] for p in firsts).split() == done["normalized_text"].split()  # what was said
    # all a non-streamed result holds, and the time to the first piece
    plain = Worker(get_settings().model_copy(update={"s3_bucket": None}))(job(voice))
    assert set(plain) | {"type"} == set(done)
    assert 0 < done["timings"]["first_audio"] < done["timings"]["total"]
    assert job_dirs() == []


def test_the_first_piece_is_out_before_any_later_batch_samples(voice, sampling_calls):
    with closing(streaming_worker().stream(job(voice))) as stream:  # closed, and the model freed, if a check fails
        first = next(stream)
        assert first["type"] == "audio" and first["index"] == 0
        assert sampling_calls == [1]  # the first chunk alone; nothing else has started
        rest = list(stream)
    assert rest[-1]["type"] == "done" and len(sampling_calls) == rest[-1]["batches"]


def test_later_batches_sample_while_the_caller_sends_a_piece(voice, monkeypatch):
    """The caller holds the second piece until the third batch has begun: that happens only if
    sampling goes on meanwhile, in a thread of its own."""
    import sampler

    third_started, real = threading.Event(), sampler.sample
    calls = []

    def spy(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            third_started.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    with closing(streaming_worker().stream(job(voice))) as stream:
        assert next(stream)["index"] == 0
        assert next(stream)["index"] == 1
        assert third_started.wait(timeout=120), "the third batch did not start while the second piece was held"
        assert list(stream)[-1]["type"] == "done"
    assert set(calls) == {"sampling"}  # every call in the model's sampling loop, none in the caller's thread


def test_a_stream_closed_early_frees_the_model_and_the_scratch(voice, sampling_calls):
    """A caller gone mid-stream (a cancelled job): the sampling stops after the batch under way."""
    stream = streaming_worker().stream(job(voice))
    next(stream), next(stream)
    stream.close()
    model = loaded_model.get_model(get_settings())
    assert not model.lock.locked() and job_dirs() == []
    assert model.batcher.idle()  # nothing of the job left waiting in the sampling loop
    assert len(sampling_calls) < 4


def test_a_failure_mid_stream_ends_it_with_an_error_and_the_next_job_succeeds(voice, monkeypatch):
    import torch

    import sampler

    real, calls = sampler.sample, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", failing)
    monkeypatch.setattr(runpod_handler, "_worker", streaming_worker())
    monkeypatch.setattr(runpod_handler, "SDK_CONFIG", {})
    items = list(runpod_handler.stream_handler(job(voice)))
    assert {i.get("type") for i in items[:-1]} == {"audio"} and {i["index"] for i in items[:-1]} == {0, 1}
    assert items[-1] == {"error": items[-1]["error"]} and "out of memory" in items[-1]["error"]
    assert runpod_handler.SDK_CONFIG == {"refresh_worker": True}  # the SDK stops this worker after the job
    assert job_dirs() == [] and not loaded_model.get_model(get_settings()).lock.locked()

    monkeypatch.setattr(sampler, "sample", real)
    again = list(runpod_handler.stream_handler(job(voice)))
    assert again[-1]["type"] == "done", again[-1]


def test_a_failure_while_sending_a_piece_stops_the_sampling_at_once(voice, monkeypatch, sampling_calls):
    """A piece that cannot be encoded (here: the disk is full) fails the job; the sampling ahead
    stops after the batch under way and the model is free before the error item goes out."""
    import audio_io

    real, encoded = audio_io.encoded, []

    def failing(audio, rate, fmt):
        encoded.append(fmt)
        if len(encoded) == 2:
            raise OSError(28, "No space left on device")
        return real(audio, rate, fmt)

    monkeypatch.setattr(audio_io, "encoded", failing)
    with closing(streaming_worker().stream(job(voice))) as stream:
        assert next(stream)["index"] == 0
        error = next(stream)
        assert error["error"].startswith("The disk is full"), error
        assert not loaded_model.get_model(get_settings()).lock.locked() and job_dirs() == []
        assert loaded_model.get_model(get_settings()).batcher.idle()
        assert len(sampling_calls) <= 3 and list(stream) == []


def test_bad_input_on_a_streaming_worker_is_one_error_item(voice):
    items = list(streaming_worker().stream(job(voice, stream_format="mp3")))
    assert items == [{"error": "Invalid input: stream_format: input should be 'pcm' or 'wav'."}]
    items = list(streaming_worker().stream(job(voice, remove_silence=True)))
    assert len(items) == 1 and items[0]["error"].startswith("Invalid input: remove_silence: not available on a "
                                                            "streaming worker")
    assert job_dirs() == []


def test_stream_format_is_refused_by_a_worker_that_does_not_stream(voice):
    out = Worker(get_settings().model_copy(update={"s3_bucket": None}))(job(voice, stream_format="pcm"))
    assert out == {"error": "Invalid input: stream_format: this worker does not stream (its STREAM setting is off); "
                            "leave it out, or send the job to a streaming endpoint."}


def test_one_streamed_job_from_the_command_line_prints_its_pieces(voice, monkeypatch, capsys):
    monkeypatch.setattr(runpod_handler, "_worker", streaming_worker())
    items = runpod_handler.local_stream_job(job(voice))
    lines = capsys.readouterr().out.splitlines()
    assert items[-1]["type"] == "done" and len(lines) == len(items)
    assert lines[0].startswith("piece 0: ") and lines[-1].startswith("job done: ") and "first audio" in lines[-1]


# --- what the answer carries: RunPod's payload limits -----------------------------------------


def test_a_long_chunk_goes_out_in_parts_under_the_stream_item_limit():
    """/stream refuses an item over 1 MB: a chunk of 25 s is sent in parts, which join to it."""
    rate = 24_000
    audio = (0.3 * np.sin(np.arange(25 * rate) / 10.0)).astype(np.float32)
    piece = synthesis.Piece(index=3, text="A long chunk.", audio=audio, start=5 * rate, span=(5 * rate, 30 * rate))
    for fmt in ("wav", "pcm"):
        items = [(runpod_handler.stream_item(part), len(part.audio))
                 for part in engine.stream_parts(piece, rate, fmt, voice="alice")]
        assert [item["part"] for item, _ in items] == [0, 1, 2]
        assert all(item["index"] == 3 and item["voice"] == "alice" and item["text"] == "A long chunk."
                   for item, _ in items)
        assert [item["start_s"] for item, _ in items] == [5.0, 15.0, 25.0]
        assert [item["duration_s"] for item, _ in items] == [10.0, 10.0, 5.0]
        assert all(len(item["audio_base64"]) < 1_000_000 for item, _ in items)
        data = [base64.b64decode(item["audio_base64"]) for item, _ in items]
        assert [size for _, size in items] == [len(d) for d in data]
        if fmt == "wav":
            joined = np.concatenate([sf.read(io.BytesIO(d), dtype="int16")[0] for d in data])
        else:
            joined = np.concatenate([np.frombuffer(d, "<i2") for d in data])
        whole = np.frombuffer(bytes(engine.audio_io.encoded(audio, rate, "pcm")), "<i2")
        assert np.array_equal(joined, whole)


@pytest.mark.usefixtures("tiny_model")
def test_a_stream_whose_answer_would_pass_runpod_s_limit_is_refused_before_sampling(voice, sampling_calls, s3):
    """/run and /runsync return every piece as well as the result: with S3 the pieces alone count,
    without it the inline file as well; refused before anything is sampled, with one sentence."""
    with_s3 = streaming_worker(s3_bucket=get_settings().s3_bucket, max_inline_bytes=100_000)
    items = list(with_s3.stream(job(voice)))
    assert len(items) == 1 and items[0]["error"].startswith("A streamed job's answer holds every piece of its audio: "
                                                            "this one would be at least ")
    assert "send it to an endpoint that does not stream" in items[0]["error"]
    inline = streaming_worker(max_inline_bytes=100_000)
    items = list(inline.stream(job(voice)))
    assert len(items) == 1 and items[0]["error"].startswith("A streamed job's pieces and its audio together would "
                                                            "be at least ")
    assert sampling_calls == [] and job_dirs() == []


@pytest.mark.usefixtures("tiny_model")
def test_a_streamed_answer_within_the_limit_counts_its_pieces(voice):
    """The pieces and the inline file both count: a limit that holds the file but not both fails
    the job with the sentence, after the pieces (the size of an mp3 is known once encoded)."""
    probe = list(streaming_worker().stream(job(voice, output_format="mp3")))
    pieces = sum(len(base64.b64decode(i["audio_base64"])) for i in probe if i.get("type") == "audio")
    whole = len(base64.b64decode(probe[-1]["audio_base64"]))
    fits = list(streaming_worker(max_inline_bytes=pieces + whole).stream(job(voice, output_format="mp3")))
    assert fits[-1]["type"] == "done"
    over = list(streaming_worker(max_inline_bytes=pieces + whole - 1).stream(job(voice, output_format="mp3")))
    assert over[-1]["error"].startswith("A streamed job's pieces and its audio together is ")
    assert job_dirs() == []


def test_a_streamed_job_s_first_audio_counts_from_its_arrival(voice):
    """What came before the engine's run (here, ten seconds of it) is in the job's timings."""
    *_, done = streaming_worker().stream(job(voice, text="Hello there."), arrived=time.perf_counter() - 10)
    assert 10 <= done["timings"]["first_audio"] <= done["timings"]["total"]
