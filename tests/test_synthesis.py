import numpy as np
import pytest
import soundfile as sf
from conftest import REF_TEXT, REF_WAV

import lean_imports
import loaded_model
import synthesis
from errors import LimitExceeded
from synthesis import Chunk, SynthesisParams
from config import get_settings

pytestmark = pytest.mark.usefixtures("tiny_model")  # its tests run jobs or load the tiny model

LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 6
    + "Pack my box with five dozen liquor jugs! How vexingly quick daft zebras jump. "
    + "Sphinx of black quartz, judge my vow. " * 5
    + "The end."
)

#: Relative L2 distance allowed between a chunk sampled in a batch and the same chunk sampled
#: alone with the same seed. f5-tts's attention does not mask batch padding, so a row that is
#: shorter than its batch's longest sees a few padded frames; with rows at least 80% full
#: (MIN_BATCH_FILL) the measured difference on the tiny model is about 0.4%.
BATCH_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def model():
    return loaded_model.get_model(get_settings())


@pytest.fixture(scope="module")
def reference():
    audio, rate = sf.read(REF_WAV, dtype="float32")
    assert rate == 24_000
    return audio


def test_chunk_text_splits_at_punctuation_within_the_limit():
    text = "One two three. Four five six, seven eight nine! Ten? Eleven twelve thirteen fourteen."
    chunks = synthesis.chunk_text(text, max_chars=30)
    # f5-tts's rule: sentences are packed while they fit; one longer than the limit (f5-tts keeps
    # it whole) is cut at a space into near-equal pieces
    assert chunks == ["One two three. Four five six,", "seven eight nine! Ten?", "Eleven twelve", "thirteen fourteen."]
    assert synthesis.chunk_text("你好。世界！", max_chars=9) == ["你好。", "世界！"]
    assert synthesis.chunk_text("你好。世界！", max_chars=6) == ["你", "好。", "世", "界！"]


def test_text_without_punctuation_is_cut_into_chunks_that_fit():
    """Unpunctuated text (a transcript, say) was one chunk of minutes in f5-tts's rule."""
    words = ("so today we are going to talk about the way sound travels through air and water " * 40).strip()
    chunks = synthesis.chunk_text(words, max_chars=170)
    assert " ".join(chunks) == words
    sizes = [len(c.encode()) for c in chunks]
    assert len(chunks) == -(-len(words) // 170) and max(sizes) <= 170 and min(sizes) >= 150, sizes
    # no spaces at all (Chinese): cut between characters, never inside one
    hanzi = "你好世界" * 60 + "。"
    chunks = synthesis.chunk_text(hanzi, max_chars=170)
    assert "".join(chunks) == hanzi and len(chunks) == 5
    assert all(130 <= len(c.encode()) <= 170 for c in chunks)
    # a sentence within the limit is untouched, as in f5-tts
    assert synthesis.split_sentence("A short one without a comma", 170) == ["A short one without a comma"]


def test_unpunctuated_text_stays_within_the_memory_budget(model, reference):
    words = ("so today we are going to talk about the way sound travels through air and water " * 40).strip()
    result = synthesis.synthesize(model, reference, REF_TEXT, words, SynthesisParams(nfe_step=2), 24_000)
    assert result.chunks >= 18  # f5-tts's rule: one chunk of about 29,000 frames (five minutes)
    chunks = synthesis.plan_chunks(synthesis.ended_ref_text(REF_TEXT), len(reference), words, 1.0, 24_000, 256)
    assert max(c.frames for c in chunks) < 2_500


def test_a_chunk_over_the_budget_is_refused_not_run(model, reference):
    """A transcript far shorter than the reference's speech makes each character seconds long."""
    with pytest.raises(LimitExceeded, match="MAX_BATCH_FRAMES=4000"):
        synthesis.synthesize(model, reference, "A.", "Supercalifragilistic expialidocious words.",
                             SynthesisParams(nfe_step=2), 4_000)


def test_plan_batches_respects_budget_and_fill():
    chunks = [Chunk(i, "x", frames) for i, frames in enumerate([1000, 990, 980, 400, 950, 1000])]
    batches = synthesis.plan_batches(chunks, max_batch_frames=3000)
    assert sorted(c.index for b in batches for c in b) == list(range(6))
    for batch in batches:
        longest = max(c.frames for c in batch)
        assert len(batch) * longest <= 3000 or len(batch) == 1
        assert all(c.frames >= synthesis.MIN_BATCH_FILL * longest for c in batch)
    assert [c.index for c in batches[-1]] == [3]  # the short one is not padded to 1000


def test_cross_fade_lengths_and_join():
    a, b = np.ones(1000, np.float32), np.zeros(800, np.float32)
    out = synthesis.cross_fade([a, b], 100)
    assert len(out) == 1000 + 800 - 100
    assert out[899] == 1.0 and out[1000] == 0.0 and 0 < out[950] < 1
    assert len(synthesis.cross_fade([a, b], 0)) == 1800


def test_batched_equals_chunk_by_chunk(model, reference):
    params = SynthesisParams(nfe_step=6, seed=1234)
    batched = synthesis.synthesize(model, reference, REF_TEXT, LONG_TEXT, params, max_batch_frames=10**6)
    longest = max(c.frames for c in synthesis.plan_chunks(synthesis.ended_ref_text(REF_TEXT), len(reference),
                                                           LONG_TEXT, 1.0, 24_000, 256))
    single = synthesis.synthesize(model, reference, REF_TEXT, LONG_TEXT, params, max_batch_frames=longest)
    assert batched.chunks == single.chunks >= 3
    assert batched.batches < batched.chunks and single.batches == single.chunks
    assert len(batched.audio) == len(single.audio)
    diff = np.linalg.norm(batched.audio - single.audio) / np.linalg.norm(single.audio)
    assert diff < BATCH_TOLERANCE, diff


def test_memory_budget_splits_large_requests(model, reference, monkeypatch):
    import sampler

    params = SynthesisParams(nfe_step=4, seed=7)
    chunks = synthesis.plan_chunks(synthesis.ended_ref_text(REF_TEXT), len(reference), LONG_TEXT, 1.0,
                                   24_000, 256)
    longest = max(c.frames for c in chunks)
    budget = 2 * longest  # two rows per batch at most
    calls = []
    real_sample = sampler.sample

    def spy(cfm, ref_wave, text, duration, **kwargs):
        calls.append(int(duration.numel()) * int(duration.max()))
        mel, lengths = real_sample(cfm, ref_wave, text, duration, **kwargs)
        assert lengths == duration.tolist()  # planned with the lengths the sampler gives the rows
        return mel, lengths

    monkeypatch.setattr(sampler, "sample", spy)
    result = synthesis.synthesize(model, reference, REF_TEXT, LONG_TEXT, params, max_batch_frames=budget)
    assert result.batches == len(calls) >= len(chunks) / 2
    assert max(calls) <= budget


def test_same_seed_same_audio_other_seed_other_audio(model, reference):
    p = SynthesisParams(nfe_step=4, seed=5)
    a = synthesis.synthesize(model, reference, REF_TEXT, "Hello world, this is a test.", p, 24_000).audio
    b = synthesis.synthesize(model, reference, REF_TEXT, "Hello world, this is a test.", p, 24_000).audio
    c = synthesis.synthesize(model, reference, REF_TEXT, "Hello world, this is a test.",
                             SynthesisParams(nfe_step=4, seed=6), 24_000).audio
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    # duration follows f5-tts's rule: the reference's speaking rate applied to the new text
    expected_frames = int(len(reference) // 256 / len(synthesis.ended_ref_text(REF_TEXT) + " ")
                          * len("Hello world, this is a test."))
    assert abs(len(a) - expected_frames * 256) <= 2 * 256


def test_speed_shortens_the_audio(model, reference):
    slow = synthesis.synthesize(model, reference, REF_TEXT, "A sentence of moderate length to speak.",
                                SynthesisParams(nfe_step=4, speed=0.8), 24_000)
    fast = synthesis.synthesize(model, reference, REF_TEXT, "A sentence of moderate length to speak.",
                                SynthesisParams(nfe_step=4, speed=1.6), 24_000)
    assert len(fast.audio) < 0.6 * len(slow.audio)


def test_output_length_cap(model, reference):
    with pytest.raises(LimitExceeded, match="MAX_OUTPUT_SECONDS"):
        synthesis.synthesize(model, reference, REF_TEXT, LONG_TEXT, SynthesisParams(nfe_step=4), 24_000,
                             max_output_seconds=5)


def test_one_chunk_is_the_same_audio_as_stock_f5_tts(model, reference):
    """Stock's infer_batch_process on the same model, reference and seed gives the same samples."""
    import torch

    lean_imports.import_f5_model()  # stock's module imports without the training stack
    from f5_tts.infer.utils_infer import infer_batch_process
    from f5_tts.model.utils import seed_everything

    text = "Hello world, this sentence is one chunk for both."
    seed_everything(11)
    stock, _, _ = next(infer_batch_process(
        (torch.from_numpy(reference)[None, :], 24_000), synthesis.ended_ref_text(REF_TEXT), [text],
        model.cfm, model.vocoder, nfe_step=6, device=model.device, progress=None))
    ours = synthesis.synthesize(model, reference, REF_TEXT, text, SynthesisParams(nfe_step=6, seed=11), 24_000).audio
    assert len(ours) == len(stock)
    # fp32 on a CPU: the sampler differs from CFM.sample only in the order of a few float additions
    assert np.linalg.norm(ours - stock) / np.linalg.norm(stock) < 1e-5


def test_long_text_has_the_length_stock_gives(model, reference):
    import torch

    lean_imports.import_f5_model()
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process

    ref_text = synthesis.ended_ref_text(REF_TEXT)
    seconds = len(reference) / 24_000
    pieces = chunk_text(LONG_TEXT, int(len(ref_text.encode()) / seconds * (22 - seconds)))
    stock, _, _ = next(infer_batch_process(
        (torch.from_numpy(reference)[None, :], 24_000), ref_text, pieces, model.cfm, model.vocoder, nfe_step=4,
        device=model.device, progress=None))
    ours = synthesis.synthesize(model, reference, REF_TEXT, LONG_TEXT, SynthesisParams(nfe_step=4), 10**6)
    assert ours.chunks == len(pieces) and len(ours.audio) == len(stock)


def test_a_row_lengthened_by_its_text_keeps_all_its_frames(model, reference):
    """A long transcript with a short text: CFM.sample lengthens the row to the text's length,
    and the audio keeps what was sampled, as stock does."""
    import torch

    lean_imports.import_f5_model()
    from f5_tts.infer.utils_infer import infer_batch_process
    from f5_tts.model.utils import seed_everything

    short_ref = reference[: 24_000]  # 1 s of voice...
    ref_text = "word " * 60  # ...with a 300-character transcript: ~94 frames, fewer than its text
    seed_everything(5)
    stock, _, _ = next(infer_batch_process(
        (torch.from_numpy(short_ref)[None, :], 24_000), synthesis.ended_ref_text(ref_text), ["Hi there, friend."],
        model.cfm, model.vocoder, nfe_step=4, device=model.device, progress=None))
    ours = synthesis.synthesize(model, short_ref, ref_text, "Hi there, friend.", SynthesisParams(nfe_step=4, seed=5), 24_000)
    assert len(ours.audio) == len(stock)
    assert np.linalg.norm(ours.audio - stock) / np.linalg.norm(stock) < 1e-6


def test_the_plan_counts_the_frames_the_sampler_adds_for_a_long_text(model, reference, monkeypatch):
    """The memory budget is checked against the rows' real lengths, lengthening included."""
    import sampler

    short_ref, ref_text = reference[:24_000], "word " * 60
    estimate = synthesis.plan_chunks(synthesis.ended_ref_text(ref_text), len(short_ref), "Hi there, friend.",
                                     1.0, 24_000, 256)[0].frames
    seen, real_sample = [], sampler.sample

    def spy(cfm, ref_wave, text, duration, **kwargs):
        mel, lengths = real_sample(cfm, ref_wave, text, duration, **kwargs)
        seen.append((duration.tolist(), lengths))
        return mel, lengths

    monkeypatch.setattr(sampler, "sample", spy)
    synthesis.synthesize(model, short_ref, ref_text, "Hi there, friend.", SynthesisParams(nfe_step=2), 24_000)
    [(planned, lengths)] = seen
    assert planned == lengths and planned[0] > 2 * estimate
    with pytest.raises(LimitExceeded, match="MAX_BATCH_FRAMES"):  # a transcript long enough to pass the budget
        synthesis.synthesize(model, short_ref, ref_text * 15, "Hi there, friend.", SynthesisParams(nfe_step=2), 4_000)


def test_non_finite_audio_is_never_returned(model, reference):
    """A model whose weights went bad (a corrupt copy, a numerical fault) makes NaN: the job
    fails instead of delivering it as audio."""
    import copy

    import torch

    from errors import SynthesisError

    broken = copy.copy(model)
    broken.vocoder = copy.deepcopy(model.vocoder)
    with torch.no_grad():
        next(broken.vocoder.parameters()).fill_(float("nan"))
    params = SynthesisParams(nfe_step=4, seed=1)
    with pytest.raises(SynthesisError, match="invalid audio"):
        synthesis.synthesize(broken, reference, REF_TEXT, "Hello there.", params, 24_000)
    assert np.isfinite(synthesis.synthesize(model, reference, REF_TEXT, "Hello there.", params, 24_000).audio).all()


def test_a_chunk_longer_than_the_models_text_positions_is_refused(model):
    """f5-tts's DiT has text positions for 8,192 frames: a longer row failed inside the model
    ("Internal error (RuntimeError)"). A transcript far shorter than the reference's speech with
    a slow speed makes such a chunk within the memory budget; it is refused with the limit."""
    t = np.arange(12 * 24_000) / 24_000
    reference = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    params = SynthesisParams(nfe_step=4, seed=1, speed=0.3)
    with pytest.raises(LimitExceeded, match="over the 8192 this model takes in one pass; check that ref_text"):
        synthesis.synthesize(model, reference, "Hi.", "!!!!!!!!a!!!!!!!! b", params, 24_000)


@pytest.mark.parametrize("text, fade", [("Hello there.", 0.15), (LONG_TEXT, 0.15), (LONG_TEXT, 0.0), (LONG_TEXT, 2.0)])
def test_the_plan_knows_how_long_the_audio_will_be(model, reference, text, fade):
    params = SynthesisParams(nfe_step=2, seed=1, cross_fade_duration=fade)
    plan = synthesis.plan_synthesis(model, len(reference), REF_TEXT, text, params, 24_000)
    result = synthesis.run(model, reference, plan, params)
    assert plan.samples == len(result.audio) and (result.chunks > 1) == (text == LONG_TEXT)
