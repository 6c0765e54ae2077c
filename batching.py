"""The model's sampling as a service: one loop per model takes the planned batches of every job in
the process, samples what is waiting in shared calls (within MAX_BATCH_FRAMES), decodes each row
and hands each job its waves. It is the only code that runs the model's sampling and vocoder.

A row keeps its own reference, frames and seed (its noise is drawn from its own job's seed), so
a job's audio does not depend on who else is served beside it, beyond what padding does to a
batched row (see synthesis.MIN_BATCH_FILL, which merged calls obey too). The rows of one job are
never merged beyond its plan: a job served alone gets exactly the calls it planned, and so the
same audio as before this service existed. Continuous batching: a call starts as soon as the
loop is free, with what is waiting, oldest first; a job's first batch counts as queued
FIRST_BATCH_LEAD_S earlier than it was, so a new job's first audio does not wait behind long
texts, and a long job's later batches, once they have waited that long, are not held back by
newcomers' first batches.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("f5worker.batching")

#: How much sooner a job's first batch is due than when it was queued: about one call of long
#: text on an H100 (a batch takes 0.3-2.5 s there).
FIRST_BATCH_LEAD_S = 2.0

@dataclass(frozen=True)
class Sampling:
    """What rows sharing a call must have in common: one time grid, one guidance strength."""

    steps: int
    cfg_strength: float
    sway_sampling_coef: float


@dataclass(frozen=True)
class Row:
    """One chunk to sample: its reference (on the device, loudness-matched), its tokens
    (reference transcript + chunk), its frames (reference included), and what to do after."""

    ref: object  # torch.Tensor, 1 x samples
    tokens: list[str]
    frames: int
    ref_frames: int
    gain: float | None  # the output scaled back by this (a quiet reference was sampled louder)
    seed: int


class Request:
    """One planned batch of one job, waiting, in a call, or done."""

    def __init__(self, job: object, order: int, seq: int, rows: list[Row], sampling: Sampling, budget: int,
                 queued_at: float | None = None):
        self.job, self.order, self.seq, self.rows, self.sampling, self.budget = job, order, seq, rows, sampling, budget
        queued_at = time.monotonic() if queued_at is None else queued_at
        self.due = queued_at - (FIRST_BATCH_LEAD_S if order == 0 else 0.0)
        self.taken = False  # in a call: it will finish, cancelled or not
        self.done = threading.Event()
        self.waves: list[np.ndarray] | None = None
        self.error: BaseException | None = None

    @property
    def longest(self) -> int:
        return max(r.frames for r in self.rows)

    @property
    def shortest(self) -> int:
        return min(r.frames for r in self.rows)

    def result(self) -> list[np.ndarray]:
        """Each row's decoded wave (float32, mono), when the call holding it has ended."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.waves


class Batcher:
    """The sampling loop of one model: `submit` a job's batches, `result()` each in turn,
    `cancel` what is left when the job ends early."""

    def __init__(self, model, min_fill: float):
        self.model, self.min_fill = model, min_fill
        self.waiting: list[Request] = []
        self.changed = threading.Condition()
        self.seq = itertools.count()
        self.calls = 0  # sampling calls made (each a batch of one or several jobs' rows)
        self.shared_calls = 0  # of those, calls that held rows of two or more jobs
        self.thread: threading.Thread | None = None

    def submit(self, job: object, order: int, rows: list[Row], sampling: Sampling, budget: int,
               due: float | None = None) -> Request:
        """Queue one batch of `job` (`order`: its place among the job's batches). `budget`: the
        padded frames a call may hold (MAX_BATCH_FRAMES); 0: never merged with another job's.
        `due`: its place in the queue, where it is not its own (chunks sampled again take the place
        of their first batch: the job waits for them before its later pieces)."""
        request = Request(job, order, next(self.seq), rows, sampling, budget)
        if due is not None:
            request.due = due
        with self.changed:
            self.waiting.append(request)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="sampling", daemon=True)
                self.thread.start()
            self.changed.notify()
        return request

    def cancel(self, requests: list[Request]) -> None:
        """Drop a job's requests that no call has taken, and wait for those one has: when this
        returns, nothing of the job is sampled any more."""
        with self.changed:
            dropped = {id(r) for r in requests if not r.taken}
            self.waiting = [r for r in self.waiting if id(r) not in dropped]
        for request in requests:
            if request.taken:
                request.done.wait()

    def idle(self) -> bool:
        """Nothing waiting and no call under way."""
        with self.changed:
            return not self.waiting and not self.model.lock.locked()

    def next_call(self) -> list[Request]:
        """The requests of the next call (taken off the queue): the first waiting by priority, and
        other jobs' requests that fit beside it (same sampling, within its budget and fill)."""
        self.waiting.sort(key=lambda r: (r.due, r.seq))
        first = self.waiting[0]
        call, jobs = [first], {id(first.job)}
        rows, longest, shortest = len(first.rows), first.longest, first.shortest
        for other in self.waiting[1:]:
            if id(other.job) in jobs or other.sampling != first.sampling or not first.budget or not other.budget:
                continue
            top, low = max(longest, other.longest), min(shortest, other.shortest)
            if (rows + len(other.rows)) * top <= min(first.budget, other.budget) and low >= self.min_fill * top:
                call.append(other)
                jobs.add(id(other.job))
                rows, longest, shortest = rows + len(other.rows), top, low
        taken = {id(r) for r in call}
        self.waiting = [r for r in self.waiting if id(r) not in taken]
        for request in call:
            request.taken = True
        return call

    def _loop(self) -> None:
        try:
            while True:
                with self.changed:
                    while not self.waiting:
                        self.changed.wait()
                    call = self.next_call()
                self.serve(call)
        except BaseException as exc:  # the loop itself failed: nobody may wait for it forever
            log.error("the sampling loop stopped: %s: %s", type(exc).__name__, exc)
            with self.changed:
                for request in self.waiting:
                    request.error = exc
                    request.done.set()
                self.waiting, self.thread = [], None  # the next submit starts a fresh loop

    def serve(self, call: list[Request]) -> None:
        """One call's rows sampled and handed to their jobs. A shared call that fails is run again
        one job at a time, so that an error lands on the job whose rows caused it."""
        try:
            with self.model.lock:  # the model's modules are not thread-safe: one call at a time
                waves = self.sample(call)
        except Exception as exc:  # noqa: BLE001 - each job raises it in its own thread
            if len(call) > 1:
                for request in call:
                    self.serve([request])
                return
            call[0].error = exc
            call[0].done.set()
            return
        except BaseException as exc:
            for request in call:
                request.error = exc
                request.done.set()
            raise
        self.calls += 1
        self.shared_calls += len(call) > 1
        at = 0
        for request in call:
            request.waves = waves[at:at + len(request.rows)]
            at += len(request.rows)
            request.done.set()

    def sample(self, call: list[Request]) -> list[np.ndarray]:
        import torch

        import sampler

        model = self.model
        rows = [row for request in call for row in request.rows]
        how = call[0].sampling
        with torch.inference_mode():
            frames = torch.tensor([r.frames for r in rows], dtype=torch.long, device=model.device)
            mel, lengths = sampler.sample(
                model.cfm, [r.ref for r in rows], [r.tokens for r in rows], frames, steps=how.steps,
                cfg_strength=how.cfg_strength, sway_sampling_coef=how.sway_sampling_coef, seed=[r.seed for r in rows],
                cuda_graph=model.cuda_graphs, blocks=model.blocks,
            )
            waves = []
            for n, row in enumerate(rows):
                wave = model.vocoder.decode(mel[n : n + 1, row.ref_frames : lengths[n]].permute(0, 2, 1))
                if row.gain is not None:
                    wave = wave * row.gain
                waves.append(wave.squeeze(0).cpu().numpy().astype(np.float32))
        return waves


_lock = threading.Lock()


def batcher_of(model, min_fill: float) -> Batcher:
    """The model's sampling loop, made on first use (and for a copy of the model, its own)."""
    with _lock:
        if model.batcher is None or model.batcher.model is not model:
            model.batcher = Batcher(model, min_fill)
        return model.batcher
