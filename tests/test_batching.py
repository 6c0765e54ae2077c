"""The model's sampling loop: which waiting batches share a call (unit tests of the choice, no
model), and jobs served at the same time sharing calls on the tiny model, each with its own audio."""

import threading
import time

import numpy as np
import pytest
from test_synthesis import BATCH_TOLERANCE

import batching
from config import get_settings
from batching import Batcher, Row, Sampling

HOW = Sampling(4, 2.0, -1.0)


def rows(*frames: int) -> list[Row]:
    return [Row(None, [], f, 0, None, 0) for f in frames]


def waiting(batcher: Batcher, *requests) -> None:
    """Queue requests (job, order, frames[, sampling, budget]) without the loop: the choice of
    the next call is what is under test."""
    for job, order, frames, how, budget in ((*r, HOW, 10_000)[:5] for r in requests):
        batcher.waiting.append(batching.Request(job, order, next(batcher.seq), rows(*frames), how, budget))


@pytest.fixture
def batcher():
    return Batcher(model=None, min_fill=0.8)


def jobs_of(call) -> list:
    return [(r.job, r.order) for r in call]


def test_a_job_s_first_batch_goes_before_any_job_s_second(batcher):
    waiting(batcher, ("a", 1, [900]), ("a", 2, [900]), ("b", 0, [900]))
    assert jobs_of(batcher.next_call())[0] == ("b", 0)


def test_a_later_batch_that_has_waited_long_goes_before_a_newcomer_s_first(batcher):
    """No starvation: first batches jump the queue by FIRST_BATCH_LEAD_S, no more."""
    now = time.monotonic()
    old = batching.Request("long", 5, next(batcher.seq), rows(900), HOW, 10_000,
                           queued_at=now - batching.FIRST_BATCH_LEAD_S - 1)
    batcher.waiting.append(old)
    waiting(batcher, ("new", 0, [2000]))  # too long to share the call with the old batch's row
    assert jobs_of(batcher.next_call()) == [("long", 5)]


def test_batches_of_other_jobs_that_fit_share_the_call(batcher):
    waiting(batcher, ("a", 0, [1000, 900]), ("b", 0, [950]), ("c", 0, [1000]))
    call = batcher.next_call()
    assert jobs_of(call) == [("a", 0), ("b", 0), ("c", 0)]  # 4 rows x 1000 frames within 10,000
    assert batcher.waiting == [] and all(r.taken for r in call)


def test_a_job_s_own_batches_are_never_merged_beyond_its_plan(batcher):
    waiting(batcher, ("a", 0, [1000]), ("a", 1, [1000]))
    assert jobs_of(batcher.next_call()) == [("a", 0)]
    assert jobs_of(batcher.next_call()) == [("a", 1)]


def test_what_would_pass_the_budget_or_the_fill_waits_for_a_later_call(batcher):
    waiting(batcher, ("a", 0, [3000, 3000]), ("b", 0, [3000, 3000]), ("c", 0, [1000]), ("d", 0, [2500]))
    call = batcher.next_call()
    # b: 4 rows x 3000 > 10,000; c: a third of the longest row, mostly padding; d: 3 x 3000 and 83% full
    assert jobs_of(call) == [("a", 0), ("d", 0)]
    assert [r.job for r in batcher.waiting] == ["b", "c"]


def test_rows_sampled_differently_or_without_a_budget_do_not_share(batcher):
    waiting(batcher, ("a", 0, [1000]), ("b", 0, [1000], Sampling(8, 2.0, -1.0), 10_000), ("c", 0, [1000], HOW, 0))
    assert jobs_of(batcher.next_call()) == [("a", 0)]


def test_cancelled_requests_leave_the_queue_and_taken_ones_are_waited_for(batcher):
    waiting(batcher, ("a", 0, [1000]), ("a", 1, [1000]))
    [taken] = batcher.next_call()
    threading.Timer(0.05, taken.done.set).start()
    batcher.cancel([taken, *batcher.waiting])
    assert batcher.waiting == [] and taken.done.is_set()


class FakeModel:
    lock = threading.Lock()


def test_a_failed_call_fails_each_request_in_it():
    loop = Batcher(FakeModel(), 0.8)

    def sample(call):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    loop.sample = sample
    first, second = (loop.submit(job, 0, rows(1000), HOW, 10_000) for job in ("a", "b"))
    for request in (first, second):
        with pytest.raises(RuntimeError, match="illegal memory access"):
            request.result()


def test_a_shared_call_that_fails_is_run_again_one_job_at_a_time():
    """The job whose rows fail gets the error; the one beside it gets its audio."""
    loop = Batcher(FakeModel(), 0.8)
    bad, good = (batching.Request(job, 0, next(loop.seq), rows(1000), HOW, 10_000) for job in ("bad", "good"))

    def sample(call):
        if any(r.job == "bad" for r in call):
            raise ValueError("this job's rows cannot be sampled")
        return [np.zeros(3, dtype=np.float32) for r in call for _ in r.rows]

    loop.sample = sample
    loop.serve([bad, good])
    with pytest.raises(ValueError):
        bad.result()
    assert len(good.result()) == 1 and loop.calls == 1 and loop.shared_calls == 0


def test_a_loop_that_dies_fails_what_waits_and_the_next_submit_starts_a_new_one():
    loop = Batcher(FakeModel(), 0.8)
    gate = threading.Event()

    def next_call():
        gate.wait(10)
        raise MemoryError("the loop itself failed")

    loop.next_call = next_call
    waiting_one = loop.submit("a", 0, rows(1000), HOW, 10_000)
    gate.set()
    with pytest.raises(MemoryError):
        waiting_one.result()
    deadline = time.monotonic() + 10
    while loop.thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    del loop.next_call  # the real choice again
    loop.sample = lambda call: [np.zeros(3, dtype=np.float32) for r in call for _ in r.rows]
    assert len(loop.submit("b", 0, rows(1000), HOW, 10_000).result()) == 1


# --- on the tiny model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tiny_model):
    import loaded_model

    return loaded_model.get_model(get_settings())


@pytest.fixture(scope="module")
def reference(model):
    from conftest import SHORT_REF_WAV

    import audio_io

    audio, rate = audio_io.read_audio(SHORT_REF_WAV, 60, 20)
    return audio_io.prepare_reference(audio, rate, model.sample_rate, 15, 1)


TEXTS = ["The first caller asks for this.", "A second one asks for that.", "And a third for the other."]


def synthesize(model, reference, text, seed):
    import synthesis
    from conftest import SHORT_REF_TEXT

    return synthesis.synthesize(model, reference, SHORT_REF_TEXT, text, synthesis.SynthesisParams(nfe_step=4, seed=seed),
                                max_batch_frames=10**5).audio


@pytest.mark.usefixtures("tiny_model")
def test_jobs_served_at_once_share_calls_and_each_gets_its_own_audio(model, reference, monkeypatch):
    """Three callers at once: the first call holds the first job alone (it arrived to an idle
    loop); the other two wait meanwhile and then share one call. Each sounds as it does alone."""
    import sampler

    alone = [synthesize(model, reference, text, seed) for seed, text in enumerate(TEXTS)]
    loop = batching.batcher_of(model, 0.8)
    calls_before, shared_before = loop.calls, loop.shared_calls
    rows_per_call, first_call, real = [], threading.Event(), sampler.sample

    def spy(cfm, refs, *args, **kwargs):
        rows_per_call.append(len(refs))
        if len(rows_per_call) == 1:
            first_call.set()
            deadline = time.monotonic() + 60
            while len({id(r.job) for r in loop.waiting}) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # the other two callers queue their batches meanwhile
        return real(cfm, refs, *args, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    together = [None] * 3

    def caller(n):
        together[n] = synthesize(model, reference, TEXTS[n], n)

    threads = [threading.Thread(target=caller, args=(0,))]
    threads[0].start()
    assert first_call.wait(60)
    threads += [threading.Thread(target=caller, args=(n,)) for n in (1, 2)]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert rows_per_call == [1, 2], rows_per_call  # two calls: the first job's, then the others' together
    assert (loop.calls - calls_before, loop.shared_calls - shared_before) == (2, 1)
    for got, want in zip(together, alone):
        assert len(got) == len(want)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < BATCH_TOLERANCE
    assert np.array_equal(together[0], alone[0])  # served alone: the very same audio
    assert loop.idle()
