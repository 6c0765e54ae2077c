"""The engine's steps one at a time, without a model: who speaks what, the post-processing order,
streamed parts, encoding, the result's fields, the timings. Whole jobs through the engine are in
test_handler.py, test_streaming.py and test_dialogue.py."""

import io
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

import engine
from config import get_settings
from engine import Reference, Script, Speech, Timings
from job_schema import JobResult, parse_job_input
from synthesis import Chunk, Line, Piece, Plan
from transcripts import Transcript
from verification import PlacedWord

RATE = 24_000
VOICE = {"voice_base64": "UklGRg==", "ref_text": "Hello."}


def parsed(**fields):
    return parse_job_input(fields, get_settings())


def test_a_single_voice_job_is_one_line_in_the_job_s_own_voice():
    assert engine.script_of(parsed(text="Hi there.", **VOICE)) == Script([None], [Line("Hi there.")])


def test_a_dialogue_names_its_voices_in_order_of_first_use_with_their_speeds_and_pauses():
    job = parsed(voices={"a": {**VOICE, "speed": 1.2}, "b": VOICE},
                 segments=[{"voice": "b", "text": "One.", "pause_after": 0.5}, {"voice": "a", "text": "Two."},
                           {"voice": "b", "text": "Three.", "speed": 0.8}])
    script = engine.script_of(job)
    assert script.names == ["b", "a"]
    assert script.lines == [Line("One.", 0, None, 0.5), Line("Two.", 1, 1.2, 0.0), Line("Three.", 0, 0.8, 0.0)]


def test_a_tagged_text_reads_as_the_same_script_as_its_segments():
    tagged = parsed(voices={"a": VOICE, "b": VOICE}, text="[a] Hi. [b] Hello!")
    segments = parsed(voices={"a": VOICE, "b": VOICE},
                      segments=[{"voice": "a", "text": "Hi."}, {"voice": "b", "text": "Hello!"}])
    assert engine.script_of(tagged) == engine.script_of(segments)


def test_the_seed_is_drawn_once_and_a_sent_one_is_kept():
    assert engine.synthesis_params(parsed(text="Hi.", seed=42, **VOICE)).seed == 42
    job = parsed(text="Hi.", **VOICE)
    assert 0 <= engine.synthesis_params(job).seed <= 2**31 - 1


def test_a_voice_of_a_dialogue_that_fails_says_which_it_is():
    from errors import AudioError

    with pytest.raises(AudioError) as raised, engine.voice_named("bob"):
        raise AudioError("The voice is silent.")
    assert raised.value.message == "voices.bob: The voice is silent."
    with pytest.raises(AudioError) as raised, engine.voice_named(None):
        raise AudioError("The voice is silent.")
    assert raised.value.message == "The voice is silent."


def plan_of(chunks: list[Chunk]) -> Plan:
    return Plan(chunks, [[] for _ in chunks], [chunks], [0], 0)


def test_post_processing_cuts_long_pauses_but_keeps_the_asked_ones_and_moves_the_spans():
    """Two chunks, each 1 s of tone then 3 s of silence; the first asks for a 3 s pause after it:
    only the second's silence is cut (to the 1 s remove_silence keeps), and the spans follow."""
    tone = (0.3 * np.sin(np.arange(RATE) / 3.0)).astype(np.float32)
    quiet = np.zeros(3 * RATE, dtype=np.float32)
    wave = np.concatenate([tone, quiet, tone, quiet, tone])
    spans = [(0, RATE), (4 * RATE, 5 * RATE), (8 * RATE, 9 * RATE)]
    chunks = [Chunk(0, "a", 0, pause_after=3 * RATE), Chunk(1, "b", 0), Chunk(2, "c", 0)]
    speech = engine.post_process(Speech(wave, spans, 7), plan_of(chunks), RATE, remove_silence=True)
    cut = len(wave) - len(speech.wave)
    assert 1.5 * RATE < cut < 2.5 * RATE  # the second pause, 3 s, shortened to about 1 s
    assert speech.spans[:2] == spans[:2] and speech.spans[2] == (8 * RATE - cut, 9 * RATE - cut)
    assert speech.streamed_bytes == 7
    assert np.array_equal(speech.wave[-RATE:], tone)


def test_post_processing_without_remove_silence_leaves_the_audio_as_made():
    speech = Speech(np.zeros(5 * RATE, dtype=np.float32), [(0, 5 * RATE)])
    assert engine.post_process(speech, plan_of([Chunk(0, "a", 0)]), RATE, remove_silence=False) is speech


def test_a_streamed_piece_goes_out_in_parts_that_join_to_it():
    audio = (0.2 * np.sin(np.arange(23 * RATE) / 7.0)).astype(np.float32)
    piece = Piece(2, "Text.", audio, start=RATE, span=(RATE, 24 * RATE))
    parts = list(engine.stream_parts(piece, RATE, "pcm", voice="a"))
    assert [(p.index, p.part, p.voice, p.text) for p in parts] == [(2, n, "a", "Text.") for n in range(3)]
    assert [(p.start_s, p.duration_s) for p in parts] == [(1.0, 10.0), (11.0, 10.0), (21.0, 3.0)]
    joined = b"".join(bytes(p.audio) for p in parts)
    assert joined == bytes(engine.audio_io.encoded(audio, RATE, "pcm"))


def test_an_empty_piece_is_one_empty_part():
    piece = Piece(0, "", np.zeros(0, dtype=np.float32), start=0, span=(0, 0))
    [part] = engine.stream_parts(piece, RATE, "pcm")
    assert part.duration_s == 0 and bytes(part.audio) == b""


def test_encoding_writes_the_audio_and_the_subtitles_in_the_job_directory(tmp_path):
    job = parsed(text="Hi.", output_format="flac", captions_format="vtt", **VOICE)
    wave = (0.1 * np.sin(np.arange(RATE) / 5.0)).astype(np.float32)
    captions = [{"start_s": 0.0, "end_s": 1.0, "text": "Hi."}]
    files = engine.encode(job, "job-1", Speech(wave, [(0, RATE)]), RATE, captions, tmp_path)
    assert files.audio == tmp_path / "job-1.flac" and files.content_type == "audio/flac"
    audio, rate = sf.read(io.BytesIO(files.audio.read_bytes()))
    assert rate == RATE and len(audio) == RATE
    path, content_type = files.subtitles
    assert path == tmp_path / "job-1.vtt" and content_type == "text/vtt"
    assert "Hi." in path.read_text()
    assert engine.encode(parsed(text="Hi.", **VOICE), "job-2", Speech(wave, [(0, RATE)]), RATE, captions,
                         tmp_path).subtitles is None
    # a verified job's words, timed inside their cue
    words = [PlacedWord("Hi", 0, RATE // 2, False, True, 0), PlacedWord("there.", RATE // 2, RATE, True, True, 0)]
    job = parsed(text="Hi there.", captions_format="vtt_words", verify=True, **VOICE)
    path, content_type = engine.encode(job, "job-3", Speech(wave, [(0, RATE)], words=words), RATE,
                                       [{"start_s": 0.0, "end_s": 1.0, "text": "Hi there."}], tmp_path).subtitles
    assert path == tmp_path / "job-3.vtt" and content_type == "text/vtt"
    assert path.read_text().endswith("00:00:00.000 --> 00:00:01.000\nHi <00:00:00.500>there.\n")


def result_of(job, script, references, timings=None, wave_seconds=2.0, delivered=None) -> JobResult:
    chunks = [Chunk(n, line.text, 0, ref=line.ref) for n, line in enumerate(script.lines)]
    plan = Plan(chunks, [], [chunks], [0], 0)
    model = SimpleNamespace(sample_rate=RATE, files=SimpleNamespace(name="tiny"))
    speech = Speech(np.zeros(int(wave_seconds * RATE), dtype=np.float32), [])
    return engine.job_result(job, script, references, plan, engine.synthesis_params(job), speech, [], delivered or {},
                             model, timings or {"synthesis": 0.5, "total": 1.0})


def test_a_single_voice_result_names_its_transcript_and_no_voices():
    job = parsed(text="Hi.", seed=9, **VOICE)
    answer = result_of(job, engine.script_of(job), [Reference(np.zeros(1), Transcript("Hello.", "request"))],
                       delivered={"audio_base64": "AAAA"}).answer()
    assert list(answer) == ["audio_base64", "duration_s", "sample_rate", "format", "seed", "model", "ref_text",
                            "ref_text_source", "voice_cached", "normalized_text", "chunks", "batches", "captions", "timings", "rtf"]
    assert answer["seed"] == 9 and answer["rtf"] == 0.25 and answer["ref_text_source"] == "request"


def test_a_dialogue_result_names_each_voice_s_transcript_and_its_segments():
    job = parsed(voices={"a": VOICE, "b": VOICE}, text="[a] Hi. [b] Hello!")
    refs = [Reference(np.zeros(1), Transcript("Hello.", "request")), Reference(np.zeros(1), Transcript("Yo.", "asr"))]
    answer = result_of(job, engine.script_of(job), refs).answer()
    assert answer["voices"] == {"a": {"ref_text": "Hello.", "ref_text_source": "request", "voice_cached": False},
                                "b": {"ref_text": "Yo.", "ref_text_source": "asr", "voice_cached": False}}
    assert answer["segments"] == 2 and answer["normalized_text"] == "[a] Hi. [b] Hello!"
    assert "ref_text" not in answer and "s3_key" not in answer


def test_a_result_without_audio_has_no_real_time_factor():
    job = parsed(text="Hi.", **VOICE)
    result = result_of(job, engine.script_of(job), [Reference(np.zeros(1), Transcript("Hello.", "request"))],
                       wave_seconds=0)
    assert result.answer()["rtf"] is None


def test_timings_count_each_step_and_the_first_time_of_an_event():
    timings = Timings()
    with timings("encode"):
        time.sleep(0.01)
    timings.mark("first_audio")
    first = timings.seconds["first_audio"]
    timings.mark("first_audio")
    assert timings.seconds["first_audio"] == first
    done = timings.finish()
    assert list(done) == ["encode", "first_audio", "total"]
    assert 0.01 <= done["encode"] <= done["total"] and done["first_audio"] <= done["total"]


def test_a_failed_step_records_no_time():
    timings = Timings()
    with pytest.raises(ValueError), timings("upload"):
        raise ValueError
    assert "upload" not in timings.seconds


def test_timings_count_from_the_arrival_they_are_given():
    """A door stamps the job when it arrives: what came before the engine's run counts too."""
    timings = Timings(time.perf_counter() - 5)
    timings.mark("first_audio")
    done = timings.finish()
    assert 5 <= done["first_audio"] <= done["total"]
