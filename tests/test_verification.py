"""verify: each chunk heard back, sampled again with the next seed when its words are wrong, the
best attempt kept, the job's verdict reported, and every spoken word timed in the returned audio.

The logic is proved with a stand-in listener that hears each chunk as scripted (it knows a chunk
by the length of its audio); the real path, with the tiny random-weight Whisper through
transformers' pipeline and its word timestamps, proves the plumbing."""

import base64
import io
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pysubs2
import pytest
import soundfile as sf
from conftest import SHORT_REF_TEXT, SHORT_REF_WAV, job_dirs

import asr
import captions
import verification
from config import ConfigError, Settings, get_settings
from engine import script_of
from job_schema import parse_job_input
from runpod_handler import Worker
from verification import Comparer, Heard, Verifier, attempt_seed

RATE = 24_000
#: Three chunks of clearly different lengths at the short voice's speaking rate.
TEXT = ("The first sentence of this text is a short one, as you can hear for yourself right now, my friend. "
        "The second sentence of this text is much longer than the first one was, and it goes on and on for quite a "
        "while before it finally comes to its very end, which is right about here, now. "
        "And the third sentence has three apples in it, which makes it longer than the first, yes indeed. "
        "Then a last short one.")


def same(texts):  # no numbers to read: what the unit tests compare is the error and the times
    return texts


# --- comparing what was heard with what was to be said -------------------------------------------


@pytest.mark.parametrize("heard, error", [
    ("The cat sat on the mat.", 0.0),
    ("the cat, sat on the MAT!", 0.0),  # case and punctuation are not errors
    ("The cat on the mat.", 1 / 6),  # a dropped word
    ("The cat sat sat on the mat.", 1 / 6),  # a repeated one
    ("The cat sat.", 3 / 6),  # cut short
    ("", 1.0),  # nothing heard
])
def test_the_error_is_the_word_error_rate_after_folding_case_and_punctuation(heard, error):
    words = [(w, n * 0.3, n * 0.3 + 0.3) for n, w in enumerate(heard.split())]
    assert Comparer(same).compare("The cat sat on the mat.", Heard(heard, words), 2.0)[:2] == \
        (pytest.approx(error), "wer")


def test_chinese_and_japanese_are_compared_by_characters():
    error, metric, words = Comparer(same).compare("我有三个苹果。", Heard("我有三个苹", [("我有三个苹", 0.0, 1.0)]), 1.2)
    assert (metric, error) == ("cer", pytest.approx(1 / 6))
    assert [w.word for w in words] == ["我", "有", "三", "个", "苹", "果。"]  # a word of the timings per character
    assert verification.metric_of("こんにちは、世界。") == "cer" and verification.metric_of("Hello 世界") == "wer"
    assert verification.whisper_language("こんにちは", None) == "ja"
    assert verification.whisper_language("你好", None) == "zh" and verification.whisper_language("Hi", None) == "en"
    assert verification.whisper_language("Hallo", "de") == "de" and verification.whisper_language("x", "pt_BR") == "pt"


def test_numbers_heard_as_digits_are_read_by_the_normaliser_before_comparing():
    read = []

    def reading(texts):  # stands for the job's normaliser; asked only of what holds digits or symbols
        read.extend(texts)
        return [t.replace("23", "twenty-three").replace("$5", "five dollars") for t in texts]

    heard = Heard("I owe 23 people $5.", [("I", 0, .2), ("owe", .2, .4), ("23", .4, .8), ("people", .8, 1),
                                          ("$5.", 1, 1.4)])
    error, _, words = Comparer(reading).compare("I owe twenty-three people five dollars.", heard, 1.5)
    # the heard words one by one, for their times; the whole heard text, for the error
    assert error == 0.0 and read == ["23", "$5.", "I owe 23 people $5."]
    # a heard word that reads as several shares its time among them
    assert [(w.word, w.start, w.end) for w in words] == [
        ("I", 0, .2), ("owe", .2, .4), ("twenty-three", .4, .8), ("people", .8, 1), ("five", 1, 1.2),
        ("dollars.", 1.2, 1.4)]


@pytest.mark.usefixtures("grammars_on_volume")
@pytest.mark.parametrize("written, heard", [
    ("At 3:30 pm, it was 1,000 km away, in 2023.", "At 3:30 PM it was 1,000 km away in 2023."),
    ("我们用 Python 写代码，very good。", "我們用Python寫代碼, very good"),  # Traditional, spaced otherwise
    ("He said 你好 to me and left.", "He said 你好 to me and left."),
])
def test_what_was_said_right_is_heard_right_with_the_jobs_own_normaliser(written, heard, monkeypatch):
    """Through the engine's comparer: a number is read in its sentence ("in 2023" is not "2023"
    alone), Traditional characters are Simplified, and a CJK character is a token wherever it is."""
    from engine import Engine
    from synthesis import SynthesisParams

    monkeypatch.setattr(asr, "get_listener", lambda settings: SimpleNamespace(hear=None))
    engine = Engine(get_settings())
    job = parse_job_input({"text": written, "voice_base64": "UklGRg==", "ref_text": "Hi.", "verify": True},
                          get_settings())
    spoken = engine.spoken(job, script_of(job)).lines[0].text  # what the model was told to say
    comparer = engine.verifier(job, SynthesisParams(), RATE).comparer
    words = [(w, n * 0.2, n * 0.2 + 0.2) for n, w in enumerate(heard.split())]
    assert comparer.compare(spoken, Heard(heard, words), 3.0)[0] == 0.0


def test_words_the_asr_missed_are_timed_between_their_neighbours():
    heard = Heard("one three", [("one", 0.1, 0.5), ("three", 1.1, 1.4)])
    words = Comparer(same).compare("One, two, three four five.", heard, 2.0)[2]
    assert [w.word for w in words] == ["One,", "two,", "three", "four", "five."]
    assert [w.interpolated for w in words] == [False, True, False, True, True]
    assert (words[1].start, words[1].end) == (0.5, 1.1)  # the gap between its neighbours
    assert (words[3].start, words[4].end) == (1.4, 2.0)  # to the chunk's end, shared equally
    assert words[3].end == words[4].start == pytest.approx(1.7)
    nothing = Comparer(same).compare("One two.", Heard("", []), 1.0)[2]
    assert [(w.start, w.end, w.interpolated) for w in nothing] == [(0, 0.5, True), (0.5, 1.0, True)]
    # times that overlap or run past the audio are made monotonic and kept inside it
    wild = Comparer(same).compare("a b c", Heard("a b c", [("a", 0.5, 0.9), ("b", 0.2, 0.4), ("c", 0.8, 9.0)]), 1.0)[2]
    starts = [w.start for w in wild]
    assert starts == sorted(starts) and all(w.start <= w.end <= 1.0 for w in wild)
    assert all(a.end <= b.start for a, b in zip(wild, wild[1:]))


def test_punctuation_standing_alone_joins_a_word():
    assert verification.units("Well — yes. 「你好」") == [("Well —", True), ("yes.", True), ("「你", True),
                                                          ("好」", False)]
    assert verification.units("— Hi there") == [("— Hi", True), ("there", True)]


# --- the verifier's logic ------------------------------------------------------------------------


class Scripted:
    """Hears what `script` says of each chunk (by its wave's first sample, which the tests set to
    the chunk's index), attempt by attempt; the chunk's own text once the script runs out."""

    def __init__(self, texts: list[str], script: dict[int, list[str]]):
        self.texts, self.script, self.heard, self.calls = texts, script, Counter(), 0

    def hear(self, waves, rate, language):
        self.calls += 1
        out = []
        for wave in waves:
            index = int(wave[0])
            said = self.script.get(index, [])
            text = said[self.heard[index]] if self.heard[index] < len(said) else self.texts[index]
            self.heard[index] += 1
            step = len(wave) / rate / max(len(text.split()), 1)
            out.append(Heard(text, [(w, k * step, (k + 1) * step) for k, w in enumerate(text.split())]))
        return out


def settled(verifier, chunks, waves, resample) -> list[np.ndarray]:
    """The waves `verifier` keeps of one batch, in the batch's order."""
    kept = {chunk.index: wave for group in verifier.settle(chunks, waves, resample) for chunk, wave in group}
    return [kept[chunk.index] for chunk in chunks]


def chunks_and_waves(texts):
    chunks = [SimpleNamespace(index=n, text=t) for n, t in enumerate(texts)]
    return chunks, [np.full(RATE, n, np.float32) for n in range(len(texts))]


def test_a_chunk_heard_wrong_is_sampled_again_with_the_next_seed_and_the_better_attempt_kept():
    texts = ["One two three four five.", "Six seven eight nine ten.", "Eleven twelve."]
    listener = Scripted(texts, {1: ["Six seven nine ten.", "Six seven eight nine ten."]})
    verifier = Verifier(listener.hear, Comparer(same), RATE, seed=42, max_error=0.1, attempts=3)
    resampled = []

    def resample(chunks, seed):
        resampled.append(([c.index for c in chunks], seed))
        return [np.full(RATE, c.index, np.float32) + 0.5 for c in chunks]  # a new wave of the same chunk

    chunks, waves = chunks_and_waves(texts)
    kept = settled(verifier, chunks, waves, resample)
    assert resampled == [([1], attempt_seed(42, 1))]  # only the chunk heard wrong, once it was right
    assert kept[1][1] == 1.5 and kept[0] is waves[0] and kept[2] is waves[2]
    summary = verifier.summary()
    assert summary["passed"] and summary["chunks_resampled"] == 1 and summary["samplings"] == 4
    assert [c["attempts"] for c in summary["chunks"]] == [1, 2, 1]
    assert summary["chunks"][1] == {"index": 1, "heard": "Six seven eight nine ten.", "error": 0.0, "metric": "wer",
                                    "attempts": 2, "seed": attempt_seed(42, 1)}


def test_a_chunk_never_heard_right_ends_with_its_best_attempt_after_the_last_allowed():
    texts = ["Alpha beta gamma delta.", "Epsilon zeta."]
    listener = Scripted(texts, {0: ["Alpha.", "Alpha beta.", "Alpha beta gamma.", "Nothing."]})
    verifier = Verifier(listener.hear, Comparer(same), RATE, seed=7, max_error=0.2, attempts=3)
    seeds = []

    def resample(chunks, seed):
        seeds.append(seed)
        return [np.full(RATE, c.index, np.float32) + len(seeds) / 10 for c in chunks]

    chunks, waves = chunks_and_waves(texts)
    kept = settled(verifier, chunks, waves, resample)
    assert seeds == [attempt_seed(7, 1), attempt_seed(7, 2)]  # VERIFY_ATTEMPTS samplings in all, no more
    assert listener.heard[0] == 3 and listener.calls == 3
    assert kept[0][0] == pytest.approx(0.2)  # the third attempt: one word missing, the best of them
    summary = verifier.summary()
    assert not summary["passed"] and summary["worst_chunk"] == 0 and summary["worst_error"] == 0.25
    assert summary["chunks"][0]["attempts"] == 3 and summary["chunks"][0]["seed"] == attempt_seed(7, 2)


def test_a_tie_keeps_the_earlier_attempt_and_one_attempt_means_no_resampling():
    texts = ["Alpha beta gamma delta."]
    listener = Scripted(texts, {0: ["Alpha beta.", "Alpha gamma."]})
    verifier = Verifier(listener.hear, Comparer(same), RATE, seed=1, max_error=0.2, attempts=2)
    chunks, waves = chunks_and_waves(texts)
    kept = settled(verifier, chunks, waves, lambda c, seed: [w + 0.5 for w in waves])
    assert kept[0] is waves[0] and verifier.checks[0].seed == 1 and verifier.checks[0].attempts == 2
    alone = Verifier(Scripted(texts, {0: ["Alpha."]}).hear, Comparer(same), RATE, 1, 0.2, attempts=1)
    settled(alone, chunks, waves, lambda c, seed: pytest.fail("VERIFY_ATTEMPTS=1 samples nothing again"))
    assert not alone.summary()["passed"]


def test_a_batch_is_settled_as_its_chunks_are_put_right_and_retried_together():
    """What heard right goes out first; two chunks heard wrong are sampled again in one request;
    each goes out as soon as it is right (a stream's piece never waits for a later chunk's retries)."""
    texts = ["One two three.", "Four five six.", "Seven eight nine."]
    listener = Scripted(texts, {0: ["One."], 2: ["Seven.", "Seven eight."]})
    verifier = Verifier(listener.hear, Comparer(same), RATE, seed=3, max_error=0.1, attempts=3)
    requests = []

    def resample(chunks, seed):
        requests.append(([c.index for c in chunks], seed))
        return [np.full(RATE, c.index, np.float32) + 0.5 for c in chunks]

    chunks, waves = chunks_and_waves(texts)
    groups = [[chunk.index for chunk, _ in group] for group in verifier.settle(chunks, waves, resample)]
    assert groups == [[1], [0], [2]]
    assert requests == [([0, 2], attempt_seed(3, 1)), ([2], attempt_seed(3, 2))]
    assert [verifier.checks[i].attempts for i in range(3)] == [2, 1, 3] and verifier.summary()["passed"]


def test_silence_cut_moves_the_words_with_the_audio():
    from engine import Speech, post_process
    from synthesis import Chunk, Plan

    rate, sound = 1000, np.full(1000, 0.5, np.float32)
    wave = np.concatenate([sound, np.zeros(3000, np.float32), sound])  # a 3 s pause between two words
    words = [verification.PlacedWord("One", 100, 900, False, True, 0),
             verification.PlacedWord("two", 4100, 4900, False, True, 0)]
    plan = Plan([Chunk(0, "One two", 0)], [], [], [0], len(wave))
    cut = post_process(Speech(wave, [(0, len(wave))], words=words), plan, rate, remove_silence=True)
    shortened = len(wave) - len(cut.wave)
    assert shortened > 1000  # the pause was cut
    assert [(w.start, w.end) for w in cut.words] == [(100, 900), (4100 - shortened, 4900 - shortened)]
    assert cut.spans == [(0, len(cut.wave))]


def test_attempt_seeds_follow_from_the_jobs_seed():
    assert attempt_seed(5, 0) == 5
    seeds = [attempt_seed(5, k) for k in range(1, 5)]
    assert seeds == [attempt_seed(5, k) for k in range(1, 5)] and len(set(seeds)) == 4
    assert all(0 <= s < 2**31 for s in seeds) and attempt_seed(6, 1) != attempt_seed(5, 1)


# --- word-level captions -------------------------------------------------------------------------


def test_vtt_words_times_each_word_inside_its_cue():
    timed = [{"start_s": 1.0, "end_s": 2.0, "text": "Hello there, friend.", "voice": "alice"}]
    words = [[captions.CueWord("Hello", 1.0), captions.CueWord("there,", 1.25),
              captions.CueWord("friend.", 1.25), captions.CueWord("<b>", 2.0)]]
    text = captions.subtitles(timed, "vtt_words", words)
    cue = text.split("\n")[3]
    # the first word needs no time; one that begins with the word before it, or at the cue's end, has none
    assert cue == "<v alice>Hello <00:00:01.250>there, friend. &lt;b&gt;"
    parsed = pysubs2.SSAFile.from_string(text)
    assert len(parsed) == 1 and parsed[0].start == 1000 and parsed[0].end == 2000
    assert captions.subtitles(timed, "vtt_words", None) == captions.subtitles(timed, "vtt")


# --- whole jobs, with the stand-in listener --------------------------------------------------------


class ByLength:
    """Hears each chunk of a job as its text (the chunk found by its audio's length, which differs
    between the chunks of TEXT), except scripted mishearings, attempt by attempt."""

    def __init__(self, lengths: dict[int, str], script: dict[int, list[str]] | None = None, digits=False):
        self.lengths, self.script, self.heard, self.calls, self.waves = lengths, script or {}, Counter(), 0, 0
        self.digits = digits

    def hear(self, waves, rate, language):
        self.calls += 1
        self.waves += len(waves)
        out = []
        for wave in waves:
            index, text = self.lengths[len(wave)]
            said = self.script.get(index, [])
            text = said[self.heard[index]] if self.heard[index] < len(said) else text
            if self.digits:  # as Whisper writes numbers
                text = text.replace("three apples", "3 apples")
            self.heard[index] += 1
            step = len(wave) / rate / max(len(text.split()), 1)
            out.append(Heard(text, [(w, k * step, (k + 1) * step) for k, w in enumerate(text.split())]))
        return out


def voice():
    return base64.b64encode(SHORT_REF_WAV.read_bytes()).decode()


def job(**fields):
    return {"id": "verify-" + ("-".join(sorted(fields)) or "plain"),
            "input": {"text": TEXT, "voice_base64": voice(), "ref_text": SHORT_REF_TEXT, "nfe_step": 4, "seed": 5,
                      "return_base64": True, **fields}}


def parse_clock(text: str) -> float:
    h, m, sec = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def worker(**settings) -> Worker:
    return Worker(get_settings().model_copy(update={"s3_bucket": None, **settings}))


def audio_of(out) -> np.ndarray:
    samples, _ = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])), dtype="int16")
    return samples


def lengths_of(out) -> dict[int, tuple[int, str]]:
    """Each chunk's audio length (samples) -> (its index, its text), from a result's captions."""
    spans = [(round(c["start_s"] * RATE), round(c["end_s"] * RATE), c["text"]) for c in out["captions"]]
    lengths = {b - a: (n, text) for n, (a, b, text) in enumerate(spans)}
    assert len(lengths) == len(spans) >= 3
    return lengths


@pytest.fixture(scope="module")
def plain(tiny_model):
    """The job unverified, and what each of its chunks says."""
    out = worker()(job())
    assert "error" not in out, out
    return out


@pytest.mark.usefixtures("tiny_model")
def test_a_verified_job_resamples_only_the_chunk_heard_wrong_and_is_reproducible(plain, monkeypatch, sampling_calls):
    lengths = lengths_of(plain)
    second = next(text for index, text in lengths.values() if index == 1).split()
    dropped = " ".join(second[:len(second) // 2])  # the end of the chunk missing: truncated speech
    heard = []
    for _ in range(2):  # the same seed: the same attempts, the same audio
        listener = ByLength(lengths, {1: [dropped]}, digits=True)
        monkeypatch.setattr(asr, "get_listener", lambda settings: listener)
        out = worker()(job(verify=True))
        assert "error" not in out, out
        heard.append(out)
    first, again = heard
    assert np.array_equal(audio_of(first), audio_of(again))
    assert first["verification"] == again["verification"] and first["words"] == again["words"]
    summary = first["verification"]
    assert summary["passed"] and summary["chunks_resampled"] == 1 and summary["samplings"] == len(lengths) + 1
    assert [c["attempts"] for c in summary["chunks"]] == [1, 2, 1]
    assert summary["chunks"][1]["seed"] == attempt_seed(5, 1) and summary["chunks"][2]["error"] == 0.0  # "3 apples"
    # each run: the plan's batches, then one call of one row (chunk 1 again), no more
    assert len(sampling_calls) == 2 * (plain["batches"] + 1) and sum(sampling_calls) == 2 * (len(lengths) + 1)
    # The audio differs from the unverified job's only where chunk 1 lies (cross-fades included):
    # the same frames, the other chunks bit for bit.
    verified, unverified = audio_of(first), audio_of(plain)
    assert len(verified) == len(unverified) and first["captions"] == plain["captions"]
    start, end = round(plain["captions"][1]["start_s"] * RATE), round(plain["captions"][1]["end_s"] * RATE)
    assert np.array_equal(verified[:start], unverified[:start]) and np.array_equal(verified[end:], unverified[end:])
    assert not np.array_equal(verified[start:end], unverified[start:end])
    assert 0 <= first["timings"]["verify_asr"] <= first["timings"]["verify"] <= first["timings"]["synthesis"]
    assert first["timings"]["verify"] > 0


@pytest.mark.usefixtures("tiny_model")
def test_a_job_whose_chunks_all_pass_is_the_unverified_audio_with_every_word_timed(plain, monkeypatch):
    lengths = lengths_of(plain)
    monkeypatch.setattr(asr, "get_listener", lambda settings: ByLength(lengths))
    out = worker()(job(verify=True, captions_format="vtt_words"))
    assert "error" not in out, out
    assert np.array_equal(audio_of(out), audio_of(plain)) and out["verification"]["samplings"] == len(lengths)
    spoken = out["normalized_text"].split()
    assert [w["word"] for w in out["words"]] == spoken
    assert not any(w.get("interpolated") for w in out["words"])
    starts = [w["start_s"] for w in out["words"]]
    assert starts == sorted(starts) and all(w["start_s"] <= w["end_s"] for w in out["words"])
    placed = iter(out["words"])  # each chunk's words inside its caption, in order
    for caption in out["captions"]:
        for _ in caption["text"].split():
            word = next(placed)
            assert caption["start_s"] <= word["start_s"] <= word["end_s"] <= caption["end_s"]
    # the subtitle file: each cue's words after its first led by their own start, to the millisecond
    cues = [block.split("\n")[1] for block in out["captions_text"].split("\n\n")[1:]]
    placed = iter(out["words"])
    for caption, cue in zip(out["captions"], cues):
        words = [next(placed) for _ in caption["text"].split()]
        expected = [w["start_s"] for w in words[1:] if caption["start_s"] < round(w["start_s"], 3) < caption["end_s"]]
        assert [parse_clock(t) for t in re.findall(r"<([\d:.]+)>", cue)] == pytest.approx(expected, abs=6e-4)
    assert out["captions_local_path"].endswith(".vtt") and job_dirs() == []


@pytest.mark.usefixtures("tiny_model")
def test_a_streamed_verified_job_sends_the_kept_attempt(monkeypatch):
    streaming = worker(stream=True, max_batch_frames=4000)
    unverified = list(streaming.stream(job(stream_format="pcm")))[-1]  # a stream's plan: its own chunks
    lengths = lengths_of(unverified)
    second = next(text for index, text in lengths.values() if index == 1)
    listener = ByLength(lengths, {1: [second.split()[0]]})
    monkeypatch.setattr(asr, "get_listener", lambda settings: listener)
    items = list(streaming.stream(job(verify=True, stream_format="pcm")))
    *pieces, done = items
    assert "error" not in done, done
    joined = np.concatenate([np.frombuffer(base64.b64decode(p["audio_base64"]), "<i2") for p in pieces])
    assert np.array_equal(joined, audio_of(done)) and done["verification"]["chunks"][1]["attempts"] == 2


# --- the real path: the tiny Whisper, through transformers' pipeline ------------------------------


@pytest.mark.usefixtures("tiny_model")
def test_the_real_asr_hears_each_chunk_with_word_times(plain):
    out = worker(verify=True, verify_attempts=2)(job(captions_format="vtt_words"))  # VERIFY on for the endpoint
    assert "error" not in out, out
    summary = out["verification"]
    assert summary["asr_model"] == get_settings().asr_model and len(summary["chunks"]) == plain["chunks"]
    assert all(c["heard"] and c["attempts"] in (1, 2) and c["metric"] == "wer" for c in summary["chunks"])
    # random weights hear nonsense: every chunk fails, is sampled once more, and the job still succeeds
    assert not summary["passed"] and summary["samplings"] == 2 * plain["chunks"]
    assert [w["word"] for w in out["words"]] == out["normalized_text"].split()
    starts = [w["start_s"] for w in out["words"]]
    assert starts == sorted(starts) and starts[-1] <= out["duration_s"]
    assert pysubs2.SSAFile.from_string(out["captions_text"]) and out["captions_text"].startswith("WEBVTT")
    assert "verify" in out["timings"] and out["timings"]["verify_asr"] > 0


def test_a_chunk_over_whispers_window_and_an_english_only_model_are_heard(tiny_model, monkeypatch):
    """A chunk longer than the 30 s Whisper hears at once is heard whole (long-form decoding); a
    model that knows only English is told neither language nor task, which it would refuse."""
    from config import get_settings as settings

    listener = asr.get_listener(settings())
    rng = np.random.default_rng(0)
    long_one, short_one = ((0.1 * rng.standard_normal(seconds * RATE)).astype(np.float32) for seconds in (35, 2))
    heard = listener.hear([short_one, long_one], RATE, "en")
    assert len(heard) == 2 and all(h.text for h in heard)
    assert max(end or start for _, start, end in heard[1].words) > 30  # words past the first window
    monkeypatch.setattr(listener.model.generation_config, "is_multilingual", False)
    assert listener.hear([short_one], RATE, "en")[0].text


@pytest.mark.usefixtures("tiny_model")
def test_with_verify_on_for_the_endpoint_the_warm_up_loads_its_whisper(monkeypatch):
    import loaded_model
    import runpod_handler
    from engine import Engine

    asked = []
    monkeypatch.setattr(asr, "get_listener", lambda settings: asked.append(settings.verify_asr_model))
    for verify in (False, True):
        engine = Engine(get_settings().model_copy(update={"verify": verify, "s3_bucket": None}))
        runpod_handler.warm_up(engine, loaded_model.get_model(get_settings()))
    assert asked == [get_settings().asr_model]  # once: VERIFY=true's


# --- limits and bad input ------------------------------------------------------------------------


@pytest.mark.usefixtures("tiny_model")
def test_verify_without_an_asr_model_is_one_sentence_before_any_synthesis(sampling_calls):
    out = worker(verify_asr_model_override="test/whisper-not-here", allow_model_download=False)(job(verify=True))
    assert out == {"error": "verify: speech recognition (test/whisper-not-here) is unavailable on this worker (it is "
                            "not on the volume and ALLOW_MODEL_DOWNLOAD is false); send the job without verify."}
    assert sampling_calls == [] and job_dirs() == []


@pytest.mark.usefixtures("tiny_model")
def test_a_dialogue_of_many_tiny_segments_is_verified_in_bounded_work(monkeypatch, sampling_calls):
    class Deaf:
        calls: list = []  # chunks heard in each call

        def hear(self, waves, rate, language):
            self.calls.append(len(waves))
            return [Heard("", []) for _ in waves]

    deaf = Deaf()
    monkeypatch.setattr(asr, "get_listener", lambda settings: deaf)
    segments = [{"voice": "a" if n % 2 else "b", "text": "Hi."} for n in range(40)]
    voices = {name: {"voice_base64": voice(), "ref_text": SHORT_REF_TEXT} for name in "ab"}
    out = worker(max_segments=40, verify_attempts=2)(
        {"id": "tiny-segments", "input": {"voices": voices, "segments": segments, "nfe_step": 4, "seed": 1,
                                          "verify": True}})
    assert "error" not in out, out
    assert out["chunks"] == 40 and not out["verification"]["passed"]
    # every chunk heard twice, re-sampled once: the work is chunks x VERIFY_ATTEMPTS; the hearing is
    # batched as the sampling is, at most HEAR_BATCH chunks a call (Whisper's memory)
    assert sum(sampling_calls) == 2 * 40 and sum(deaf.calls) == 2 * 40
    assert max(sampling_calls) > verification.HEAR_BATCH == max(deaf.calls)  # the cap at work
    assert len(deaf.calls) == sum(-(-rows // verification.HEAR_BATCH) for rows in sampling_calls)
    assert {w.get("voice") for w in out["words"]} == {"a", "b"} and all(w["interpolated"] for w in out["words"])


@pytest.mark.parametrize("env, message", [
    ({"VERIFY_ATTEMPTS": "0"}, "VERIFY_ATTEMPTS"), ({"VERIFY_ATTEMPTS": "6"}, "VERIFY_ATTEMPTS"),
    ({"VERIFY_MAX_ERROR": "0"}, "VERIFY_MAX_ERROR"), ({"VERIFY_MAX_ERROR": "1.5"}, "VERIFY_MAX_ERROR"),
    ({"VERIFY": "maybe"}, "VERIFY"),
])
def test_verify_settings_are_bounded(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**env})


@pytest.mark.parametrize("fields, message", [
    ({"captions_format": "vtt_words"}, "Invalid input: captions_format: vtt_words needs verify: true (each word's "
                                       "time comes from hearing the audio back); send verify: true, or ask for vtt."),
    ({"verify": "yes"}, "Invalid input: verify: input should be a valid boolean."),
])
def test_verify_fields_are_checked(fields, message):
    assert worker()(job(**fields)) == {"error": message}
