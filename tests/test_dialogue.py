"""Several voices in one job: each voice staged and transcribed once, the chunks of all voices
sampled in shared batches, every segment as it would be alone, pauses as silence, captions that
name the voice."""

import base64
import io
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import BUCKET, REF_WAV, job_dirs
from test_synthesis import BATCH_TOLERANCE

import audio_io
import loaded_model
import checkpoints
import sampler
import synthesis
from runpod_handler import Worker
from synthesis import Line, SynthesisParams
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

EXAMPLES = checkpoints.f5_package_dir() / "infer" / "examples"
RATE = 24_000
SHORT_TEXT = "Some call me nature,"
LONG_TEXT = ("A Town Mouse and a Country Mouse were acquaintances, and the Country Mouse one day invited his friend "
             "to come and see him at his home in the fields.")

SCRIPT = [
    (0, "Good morning! I have been waiting for you since the sun came up over the hills, and the kettle is "
        "already warm. Come in, sit down, and tell me everything about the road from town."),
    (1, "Thank you, my friend. The road was long and dusty, and the carts were loud, but the fields on the way "
        "were green and quiet. I am glad to be here at last, away from all that noise."),
    (0, "Then rest a while. We shall have barley and roots for dinner, the best the field can give."),
    (1, "Barley and roots? My poor dear friend, you live here no better than the ants in the ground!"),
]


def wav_bytes(audio: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model():
    return loaded_model.get_model(get_settings())


@pytest.fixture(scope="module")
def recordings():
    """Two different recordings: 3 s of the English example, and the town and country mice read
    one after the other (17 s, clipped to about 12 s as any reference is)."""
    short = sf.read(REF_WAV, dtype="float32")[0][: 3 * RATE]
    long = np.concatenate([sf.read(EXAMPLES / "multi" / name, dtype="float32")[0]
                           for name in ("town.flac", "country.flac")])
    return short, long


@pytest.fixture(scope="module")
def references(model, recordings):
    return [audio_io.prepare_reference(audio, RATE, model.sample_rate, 12.0, 1.0) for audio in recordings]


def test_rows_with_references_of_different_lengths_sample_as_cfm_sample_does(model):
    """The sampler's per-row references against CFM.sample given the same mels, padded, and each
    row's reference length (`lens`)."""
    from f5_tts.model.utils import convert_char_to_pinyin

    generator = torch.Generator().manual_seed(4)
    waves = [0.1 * torch.randn(RATE * 3, generator=generator), 0.1 * torch.randn(RATE * 5, generator=generator)]
    texts = convert_char_to_pinyin(["Some call me nature. Hello world there.", "Others call me mother nature. Hi."])
    duration = torch.tensor([700, 560])
    kwargs = dict(steps=6, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=3)
    mels = sampler.reference_mels(model.cfm, waves)
    lens = torch.tensor([len(m) for m in mels])
    assert lens[0] < lens[1]
    with torch.inference_mode():
        padded = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True)
        stock, _ = model.cfm.sample(cond=padded, text=texts, duration=duration, lens=lens, **kwargs)
        ours, lengths = sampler.sample(model.cfm, waves, texts, duration, **kwargs)
    assert ours.shape == stock.shape and lengths == duration.tolist()
    assert float((ours - stock).norm() / stock.norm()) < 1e-6
    # each row keeps its own reference, to its own length, and only that
    for row, mel in enumerate(mels):
        assert torch.equal(ours[row, : len(mel)], mel)


def test_every_segment_sounds_as_it_would_alone_and_the_voices_share_batches(model, references):
    params = SynthesisParams(nfe_step=4, seed=11)
    refs = [(len(references[0]), SHORT_TEXT), (len(references[1]), LONG_TEXT)]
    assert len(references[0]) / RATE < 3.5 and len(references[1]) / RATE > 9  # about 3 s and 12 s
    lines = [Line(text, voice) for voice, text in SCRIPT]
    plan = synthesis.plan_lines(model, refs, lines, params, 10**6)
    result = synthesis.run(model, references, plan, params)

    mixed = [b for b in plan.batches if len({c.ref for c in b}) > 1]
    assert mixed, [[c.ref for c in b] for b in plan.batches]
    for batch in plan.batches:  # the fill rule holds for rows with references of different lengths
        assert all(c.frames >= synthesis.MIN_BATCH_FILL * batch[0].frames for c in batch)
    assert len(plan.batches) < len(plan.chunks)

    for n, line in enumerate(lines):
        voice = line.ref
        alone_plan = synthesis.plan_lines(model, [refs[voice]], [Line(line.text)], params, 10**6)
        alone = synthesis.run(model, references[voice], alone_plan, params).audio
        spans = [span for chunk, span in zip(plan.chunks, result.spans) if chunk.line == n]
        assert len(spans) == len(alone_plan.chunks)
        together = result.audio[spans[0][0] : spans[-1][1]]
        assert len(together) == len(alone)
        diff = np.linalg.norm(together - alone) / np.linalg.norm(alone)
        assert diff < BATCH_TOLERANCE, (n, diff)


def test_chunk_sizes_follow_each_voices_own_speaking_rate(model):
    """The same text, planned for a fast and a slow speaker: the slow one's chunks are shorter."""
    params = SynthesisParams()
    text = " ".join(text for _, text in SCRIPT)
    slow, fast = (RATE * 10, "Some call me nature."), (RATE * 5, LONG_TEXT)
    plan = synthesis.plan_lines(model, [slow, fast], [Line(text, 0), Line(text, 1)], params, 10**6)
    chunks = [[c for c in plan.chunks if c.ref == v] for v in (0, 1)]
    assert len(chunks[0]) > len(chunks[1])
    expected = [synthesis.chunk_text(text, max(1, int(len(synthesis.ended_ref_text(t).encode()) / (n / RATE)
                                                     * (22 - n / RATE)))) for n, t in (slow, fast)]
    assert [[c.text for c in cs] for cs in chunks] == expected


def test_pauses_are_silence_and_fades_stay_within_a_voices_run(model, references):
    params = SynthesisParams(nfe_step=4, seed=3, cross_fade_duration=0.15)
    refs = [(len(references[0]), SHORT_TEXT), (len(references[1]), LONG_TEXT)]
    lines = [Line("Hello there, my friend.", 0, pause_after=0.75), Line("Hello to you.", 1),
             Line("How are you today?", 0), Line("I am well, thank you.", 0, pause_after=0.5)]
    plan = synthesis.plan_lines(model, refs, lines, params, 10**6)
    result = synthesis.run(model, references, plan, params)
    spans, fade = result.spans, int(0.15 * RATE)
    assert [c.fade_after for c in plan.chunks] == [False, False, True, False]
    assert spans[1][0] == spans[0][1] + int(0.75 * RATE)  # the pause, exactly
    assert not result.audio[spans[0][1] : spans[1][0]].any()  # and silent
    assert spans[2][0] == spans[1][1]  # another voice follows at once, without a fade
    assert spans[3][0] == spans[2][1] - fade  # the same voice runs on: cross-faded
    assert len(result.audio) == spans[3][1] + int(0.5 * RATE) == plan.samples  # the last pause too
    assert not result.audio[spans[3][1] :].any()


# --- through the worker ------------------------------------------------------------------------


def job(recordings, **fields):
    voices = {"mouse": {"voice_base64": base64.b64encode(wav_bytes(recordings[0])).decode(), "ref_text": SHORT_TEXT},
              "town": {"voice_base64": base64.b64encode(wav_bytes(recordings[1])).decode(), "ref_text": LONG_TEXT}}
    return {"voices": voices, "nfe_step": 4, "seed": 5, "return_base64": True, **fields}


def audio_of(out) -> np.ndarray:
    assert "error" not in out, out
    return sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])), dtype="float32")[0]


@pytest.fixture(scope="module")
def worker():
    return Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False}))


def test_the_tag_form_and_the_segments_form_give_the_same_audio(worker, recordings):
    tagged = worker({"id": "tags", "input": job(recordings, text="[mouse] Hello there, friend. [town]  Hi!\n"
                                                                   "[mouse] How was the road?")})
    segments = worker({"id": "segments", "input": job(recordings, segments=[
        {"voice": "mouse", "text": "Hello there, friend."}, {"voice": "town", "text": "Hi!"},
        {"voice": "mouse", "text": "How was the road?"}])})
    assert np.array_equal(audio_of(tagged), audio_of(segments))
    assert tagged["captions"] == segments["captions"]
    assert [c["voice"] for c in tagged["captions"]] == ["mouse", "town", "mouse"]
    assert tagged["segments"] == 3 and set(tagged["voices"]) == {"mouse", "town"}
    assert all(v["ref_text_source"] == "request" for v in tagged["voices"].values())
    assert "ref_text" not in tagged  # each voice has its own, under voices
    assert job_dirs() == []


def test_captions_name_the_voice_and_match_the_audio_with_its_pauses(worker, recordings):
    out = worker({"id": "dialogue-captions", "input": job(recordings, captions_format="vtt", normalize=False, segments=[
        {"voice": "town", "text": "Hello there, friend.", "pause_after": 1.25},
        {"voice": "mouse", "text": "Hi! How was the road? Was it long & dusty?", "speed": 1.3}])})
    audio = audio_of(out)
    first, second = out["captions"]
    assert (first["voice"], second["voice"]) == ("town", "mouse")
    assert second["start_s"] == pytest.approx(first["end_s"] + 1.25, abs=1e-6)
    pause = audio[round(first["end_s"] * RATE) : round(second["start_s"] * RATE)]
    assert len(pause) == round(1.25 * RATE) and not pause.any()
    assert second["end_s"] == pytest.approx(len(audio) / RATE, abs=1e-6)
    cue = r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n<v (town|mouse)>[^\n]+\n"
    assert re.fullmatch(rf"WEBVTT\n\n{cue}(\n{cue})*", out["captions_text"])
    assert "<v mouse>Hi! How was the road? Was it long &amp; dusty?" in out["captions_text"]


def test_remove_silence_keeps_the_pauses_a_dialogue_asks_for(worker, recordings):
    segments = [{"voice": "town", "text": "Hello there.", "pause_after": 3.0}, {"voice": "mouse", "text": "Hi."}]
    out = worker({"id": "dialogue-trim", "input": job(recordings, remove_silence=True, segments=segments)})
    audio = audio_of(out)
    first, second = out["captions"]
    assert second["start_s"] - first["end_s"] == pytest.approx(3.0, abs=1e-6)
    assert not audio[round(first["end_s"] * RATE) : round(second["start_s"] * RATE)].any()


def test_a_voice_used_many_times_is_fetched_and_transcribed_once(s3, recordings, monkeypatch):
    import asr

    for name, audio in zip(("mouse.wav", "town.wav"), recordings):
        s3.put_object(Bucket=BUCKET, Key=f"voices/{name}", Body=wav_bytes(audio))
    worker = Worker(get_settings())
    gets = []
    worker.engine.storage.client.meta.events.register("provide-client-params.s3.GetObject",
                                               lambda params, **_: gets.append(params["Key"]))
    transcribed, real = [], asr.transcribe
    monkeypatch.setattr(asr, "transcribe", lambda audio, *a, **k: transcribed.append(audio) or real(audio, *a, **k))
    segments = [{"voice": v, "text": f"Line number {n}."} for n, v in enumerate(["mouse", "town"] * 5)]
    out = worker({"id": "dialogue-s3", "input": {"voices": {"mouse": {"voice_name": "mouse"},
                                                            "town": {"voice_name": "town"},
                                                            "unused": {"voice_name": "missing"}},
                                                 "segments": segments, "nfe_step": 4}})
    assert "error" not in out, out
    # each recording and each sidecar read once (the other GET presigns the result's URL)
    assert sorted(k for k in gets if k.startswith("voices/")) == [
        "voices/mouse.txt", "voices/mouse.wav", "voices/town.txt", "voices/town.wav"]
    assert len(transcribed) == 2
    assert {v["ref_text_source"] for v in out["voices"].values()} == {"asr"}
    assert set(out["voices"]) == {"mouse", "town"}  # a voice no segment uses is never staged
    # Whisper's transcripts are kept beside each voice, once
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"voices/mouse.txt", "voices/town.txt"} <= keys


def test_a_voice_that_fails_to_stage_is_named_and_nothing_is_left(worker, recordings):
    broken = job(recordings, segments=[{"voice": "mouse", "text": "Hi."}, {"voice": "ghost", "text": "Boo."}])
    broken["voices"]["ghost"] = {"voice_base64": base64.b64encode(b"not audio at all" * 100).decode()}
    out = worker({"id": "dialogue-broken", "input": broken})
    assert out["error"].startswith("voices.ghost: "), out
    assert job_dirs() == []
    missing = job(recordings, segments=[{"voice": "mouse", "text": "Hi."}, {"voice": "ghost", "text": "Boo."}])
    missing["voices"]["ghost"] = {"voice_name": "ghost"}
    out = worker({"id": "dialogue-no-s3", "input": missing})
    assert out["error"].startswith("voices.ghost: voice_name needs S3"), out
    assert job_dirs() == []


def test_a_streamed_dialogue_names_each_pieces_voice_and_joins_to_the_whole(recordings):
    from test_streaming import decode_piece

    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False,
                                                            "stream": True}))
    segments = [{"voice": "town", "text": "Hello there, friend. " * 3, "pause_after": 0.5},
                {"voice": "mouse", "text": "Hi! How was the road?"}, {"voice": "town", "text": "Long and dusty."}]
    *pieces, done = worker.stream({"id": "dialogue-stream", "input": job(recordings, segments=segments)})
    assert done["type"] == "done" and "error" not in done, done
    assert [p["voice"] for p in pieces] == [c["voice"] for c in done["captions"]]
    assert pieces[0]["voice"] == "town" and pieces[-1]["voice"] == "town" and len(pieces) >= 4
    assert pieces[0]["text"] != segments[0]["text"].strip()  # the first words alone, for the first audio
    whole = sf.read(io.BytesIO(base64.b64decode(done["audio_base64"])), dtype="int16")[0]
    assert np.array_equal(np.concatenate([decode_piece(p) for p in pieces]), whole)
    assert job_dirs() == []


def test_subtitle_files_of_a_dialogue():
    """WebVTT names the voice with its voice span; SRT, which has no speaker field, keeps the text."""
    import captions

    timed = captions.timed(["Hello there.", "Hi <you>!"], [(0, 24_000), (36_000, 60_000)], RATE, ["alice", "bob"])
    assert [c["voice"] for c in timed] == ["alice", "bob"]
    assert captions.subtitles(timed, "vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v alice>Hello there.\n\n"
                                                "00:00:01.500 --> 00:00:02.500\n<v bob>Hi &lt;you&gt;!\n")
    assert captions.subtitles(timed, "srt") == ("1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
                                                "2\n00:00:01,500 --> 00:00:02,500\nHi <you>!\n")
    assert "voice" not in captions.timed(["Hello."], [(0, 10)], RATE)[0]  # one voice: no name


def test_a_flood_of_tags_is_refused_before_any_is_read(monkeypatch):
    import job_schema
    from errors import LimitExceeded

    built = []
    monkeypatch.setattr(job_schema, "_read_tags", lambda text: built.append(text))
    flood = {"voices": {"a": {"voice_url": "https://example.com/a.wav"}}, "text": "[a] x " * 1_000_000}
    with pytest.raises(LimitExceeded, match="text has 1000000 \\[voice\\] tags; at most 500 segments"):
        job_schema.parse_job_input(flood, get_settings())
    assert built == []


def test_a_chunk_too_long_for_the_model_names_its_segment(model, references):
    """A voice whose transcript is far shorter than its speech makes chunks too long: the message
    says which segment (and so whose transcript) to check, before any sampling."""
    from errors import LimitExceeded

    t = np.arange(12 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    refs = [(len(references[0]), SHORT_TEXT), (len(tone), "Hi.")]
    lines = [Line("Hello there.", 0), Line("!!!!!!!!a!!!!!!!! b", 1, speed=0.3)]
    with pytest.raises(LimitExceeded, match="One chunk of segments.1 needs .* check that ref_text"):
        synthesis.plan_lines(model, refs, lines, SynthesisParams(), 24_000)


def test_a_dialogues_voices_are_fetched_at_the_same_time(recordings):
    """Each voice's server answers only once both requests have arrived: staged one after the
    other, the first would wait out the barrier and the job would fail."""
    import threading
    from http.server import BaseHTTPRequestHandler

    from static_server import BackgroundServer

    barrier, bodies = threading.Barrier(2, timeout=10), {"/a.wav": wav_bytes(recordings[0]),
                                                         "/b.wav": wav_bytes(recordings[1])}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                self.send_error(503)
                return
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "write_local_output": False,
                                                            "allow_http_urls": True, "allow_private_urls": True}))
    with BackgroundServer(Handler) as server:
        out = worker({"id": "dialogue-parallel", "input": {
            "voices": {"a": {"voice_url": f"{server.url}/a.wav", "ref_text": SHORT_TEXT},
                       "b": {"voice_url": f"{server.url}/b.wav", "ref_text": LONG_TEXT}},
            "text": "[a] Hello. [b] Hi there.", "nfe_step": 4}})
    assert "error" not in out, out
    assert job_dirs() == []
