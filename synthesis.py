"""Text + reference audio -> speech, with the loaded F5-TTS model; or lines of text, each in one
of several voices (a dialogue), planned and batched together.

Long text is split into chunks the way f5-tts splits it (except that a sentence too long for
one chunk is cut at spaces, where f5-tts keeps it whole), but the chunks are not run one
thread each at batch 1: they are sorted by length and sampled together in batched calls of
`sampler.sample`, each batch capped at `max_batch_frames` padded mel frames (the memory
budget), then decoded and cross-faded back in reading order.

A streamed job is planned for its first audio: its first chunk is a few words, sampled alone;
the next is sampled alone too (it must be ready before the first has played); the rest are
batched as above. `pieces` gives the audio out in reading order as soon as each chunk and all
before it are decoded; the model's sampling loop (`batching`) samples ahead meanwhile, and
shares its calls between jobs served at the same time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from errors import LimitExceeded, SynthesisError
from loaded_model import LoadedModel


@dataclass(frozen=True)
class SynthesisParams:
    nfe_step: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    speed: float = 1.0
    cross_fade_duration: float = 0.15
    target_rms: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Line:
    """Text in one voice: a whole single-voice job, or one segment of a dialogue."""

    text: str
    ref: int = 0  # which voice: its place in the job's references
    speed: float | None = None  # None: the job's
    pause_after: float = 0.0  # seconds of silence after it


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    frames: int  # total frames to sample: reference + generated
    ref: int = 0  # which voice: its place in the job's references
    line: int = 0  # which line of the job it is part of
    #: Cross-faded into the next chunk: the same voice follows with no pause between.
    fade_after: bool = False
    pause_after: int = 0  # samples of silence after this chunk's audio


@dataclass(frozen=True)
class Piece:
    """Audio of chunk `index` in its final form, in reading order: the chunk's speech less the
    fading end that waits for the next chunk, and with the previous chunk's faded end before it."""

    index: int
    text: str
    audio: np.ndarray  # float32, mono
    start: int  # in samples, from the start of the whole audio
    span: tuple[int, int]  # where the chunk's own audio lies in the whole, cross-fades included


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32, mono
    sample_rate: int
    chunks: int
    batches: int
    spans: list[tuple[int, int]]  # each chunk's (start, end) in `audio`, in samples


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _spaced(text: str) -> str:
    """`text` as f5-tts joins it to what follows: with a space after a one-byte (Latin) last
    character, none after a CJK one."""
    return text + " " if _size(text[-1]) == 1 else text


def split_sentence(sentence: str, max_chars: int) -> list[str]:
    """A sentence of more than `max_chars` UTF-8 bytes, cut at spaces into near-equal pieces of
    at most `max_chars` (between characters where a run has no space: Chinese, Japanese).

    f5-tts keeps such a sentence whole, so text without punctuation (a transcript, a pasted
    paragraph) became one chunk of minutes of audio: far past the clips the model was trained
    on (30 s at most), and past the memory budget of one sampling call."""
    size = _size(sentence)
    if size <= max_chars:
        return [sentence]
    words = []
    for word in re.findall(r"\S+\s*", sentence):
        # A run too long for a piece is cut between characters, punctuation kept with its letter.
        words += re.findall(r"\W{0,8}\w\W{0,8}|\W{1,8}", word) if _size(word) > max_chars else [word]
    pieces, current, done = [], "", 0
    for word in words:
        if current:
            # This piece's ideal end: the rest of the sentence shared equally among the fewest
            # pieces that can hold it. Cut where the piece would not fit, or where the cut
            # lands closer to that end than the next word boundary would.
            rest, grown = size - done, _size(current + word)
            ideal = done + rest / -(-rest // max_chars)
            end = done + grown
            if grown > max_chars or (end > ideal and end - ideal > ideal - done - _size(current)):
                pieces.append(current.strip())
                done += _size(current)
                current = ""
        current += word
    pieces.append(current.strip())
    return [p for p in pieces if p]


def chunk_text(text: str, max_chars: int = 135) -> list[str]:
    """Split at sentence punctuation into chunks of at most `max_chars` UTF-8 bytes, as
    f5-tts's `chunk_text` does, except that a longer sentence is cut by `split_sentence`."""
    chunks, current = [], ""
    for sentence in re.split(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])", text):
        if not sentence:
            continue
        for part in split_sentence(sentence, max_chars):
            piece = _spaced(part)
            if _size(current) + _size(part) <= max_chars:
                current += piece
            else:
                if current:
                    chunks.append(current.strip())
                current = piece
    if current.strip():
        chunks.append(current.strip())
    return chunks


#: A streamed job's first chunk holds at least this many UTF-8 bytes (about three words): f5-tts
#: slows chunks under 10 bytes down to a third of the speed, and a word or two alone is often
#: spoken poorly.
LEAD_MIN_BYTES = 16


def split_lead(text: str, max_chars: int) -> tuple[str, str]:
    """The start of `text` to speak first in a stream, and the rest. The start runs to a clause or
    sentence boundary within a quarter of a chunk (upstream's socket server makes its first chunk
    that long), cut at spaces where a clause is longer, and holds at least LEAD_MIN_BYTES."""
    pieces = chunk_text(text, max(LEAD_MIN_BYTES, max_chars // 4))
    taken = 1
    while taken < len(pieces) and _size("".join(pieces[:taken])) < LEAD_MIN_BYTES:
        taken += 1
    # chunk_text changes only whitespace: the start ends after as many non-space characters.
    remaining, cut = sum(len("".join(p.split())) for p in pieces[:taken]), len(text)
    for i, ch in enumerate(text):
        if remaining == 0:
            cut = i
            break
        remaining -= not ch.isspace()
    head, rest = text[:cut], text[cut:]
    if not any(ch.isalnum() for ch in rest):  # nothing left to speak: one chunk, not a chunk of noise
        return text.strip(), ""
    return " ".join(chunk_text(head, max(1, _size(head)))), rest.strip()


def ended_ref_text(ref_text: str) -> str:
    """End the transcript the way f5-tts's `preprocess_ref_audio_text` does ("... . "), so the
    generated text starts a new sentence."""
    ref_text = ref_text.strip()
    if not ref_text.endswith("。"):
        ref_text += " " if ref_text.endswith(".") else ". "
    return ref_text


def plan_chunks(ref_text: str, ref_samples: int, text: str, speed: float, sample_rate: int, hop: int,
                stream: bool = False) -> list[Chunk]:
    """Chunks of `text` sized to the reference's speaking rate, with their frame counts, by
    f5-tts's formulas (`infer_process` and `infer_batch_process`); for a stream, the first one
    short (`split_lead`)."""
    ref_seconds = ref_samples / sample_rate
    max_chars = max(1, int(len(ref_text.encode("utf-8")) / ref_seconds * (22 - ref_seconds) * speed))
    if stream:
        lead, rest = split_lead(text, max_chars)
        texts = [lead] + (chunk_text(rest, max_chars) if rest else [])
    else:
        texts = chunk_text(text, max_chars)
    ref_bytes = _size(_spaced(ref_text))
    ref_frames = ref_samples // hop
    chunks = []
    for i, piece in enumerate(texts):
        piece_bytes = len(piece.encode("utf-8"))
        local_speed = 0.3 if piece_bytes < 10 else speed  # f5-tts slows very short chunks down
        frames = ref_frames + int(ref_frames / ref_bytes * piece_bytes / local_speed)
        chunks.append(Chunk(i, piece, frames))
    return chunks


#: A chunk joins a batch only if it is at least this fraction of the batch's longest chunk.
#: f5-tts's attention does not mask padding (masking it would make SDPA materialise a
#: batch x heads x n x n mask), so padding frames are seen by the shorter rows; bounding
#: the padding bounds how far a batched row can drift from the same chunk sampled alone.
#: A chunk's frames count its own reference's too: in a dialogue the padding of a row is still
#: the batch's longest row less this one, whatever the references' lengths.
MIN_BATCH_FILL = 0.8


def plan_batches(chunks: list[Chunk], max_batch_frames: int) -> list[list[Chunk]]:
    """Group chunks, longest first, so that batch size x longest chunk stays within the
    budget and every row is mostly real frames."""
    batches: list[list[Chunk]] = []
    for chunk in sorted(chunks, key=lambda c: c.frames, reverse=True):
        if (
            batches
            and (len(batches[-1]) + 1) * batches[-1][0].frames <= max_batch_frames
            and chunk.frames >= MIN_BATCH_FILL * batches[-1][0].frames
        ):
            batches[-1].append(chunk)
        else:
            batches.append([chunk])
    return batches


#: Chunks sampled alone after a stream's first, before the rest go in batches. The first piece
#: is a few words (a second or two); the next must be ready before it has played, and a whole
#: batch is not (about 2.5 s for the long text on an H100). One normal chunk alone takes about
#: 0.3 s there and brings 10 s or more of audio, which covers the batches after it.
STREAM_BRIDGE_CHUNKS = 1


def plan_stream_batches(chunks: list[Chunk], max_batch_frames: int, bridge: int = STREAM_BRIDGE_CHUNKS) -> list[list[Chunk]]:
    """A stream's batches: the first chunk alone, then `bridge` chunks alone, then the rest in
    reading order, in groups as large as the budget holds, each group batched by `plan_batches`
    (earliest chunk first). Batches of the whole text grouped by length would hold chunks from
    all over it, and a piece waits for every chunk before it."""
    head = [[c] for c in chunks[: 1 + bridge]]
    groups: list[list[Chunk]] = []
    for chunk in chunks[1 + bridge :]:
        group = groups[-1] if groups else []
        if not group or (len(group) + 1) * max(chunk.frames, *(c.frames for c in group)) > max_batch_frames:
            groups.append(group := [])
        group.append(chunk)
    rest = [sorted(plan_batches(group, max_batch_frames), key=lambda b: min(c.index for c in b)) for group in groups]
    return head + [batch for group in rest for batch in group]


class CrossFade:
    """Joins waves with a linear cross-fade of `samples` at each join, giving out each sample as
    soon as it is final: all of a wave but its end, which waits for the next wave to fade into."""

    def __init__(self, samples: int):
        self.samples, self.held = samples, None
        self.lead = 0  # after `add`: where that wave begins in what it returned

    def add(self, wave: np.ndarray) -> np.ndarray:
        parts, tail = [], wave
        self.lead = 0
        if self.held is not None:
            n = min(len(self.held), len(wave))
            self.lead = len(self.held) - n
            if n > 0:
                fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
                parts += [self.held[:-n], self.held[-n:] * (1.0 - fade) + wave[:n] * fade]
                tail = wave[n:]
            else:
                parts.append(self.held)
        keep = min(self.samples, len(tail))
        parts.append(tail[: len(tail) - keep])
        self.held = tail[len(tail) - keep :]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def finish(self) -> np.ndarray:
        """What is held back once no wave follows."""
        held, self.held = self.held, None
        return held if held is not None else np.zeros(0, dtype=np.float32)


def cross_fade(waves: list[np.ndarray], samples: int) -> np.ndarray:
    """Concatenate with a linear cross-fade of `samples` at each join."""
    fader = CrossFade(samples)
    return np.concatenate([fader.add(w) for w in waves] + [fader.finish()]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Plan:
    """What a synthesis will do, known before any sampling: its chunks (frame counts as the
    sampler will lengthen them), its batches, and the audio it will make."""

    chunks: list[Chunk]
    tokens: list[list[str]]  # reference transcript + chunk, as the model's vocabulary reads them
    batches: list[list[Chunk]]
    ref_frames: list[int]  # of each voice's reference
    samples: int  # of output audio: the chunks' frames less their references', less the cross-fades, with the pauses
    #: The padded frames one sampling call may hold (MAX_BATCH_FRAMES): another job's batch may
    #: share a call with one of this plan's within it. 0: never shared.
    max_batch_frames: int = 0


def plan_synthesis(
    model: LoadedModel,
    ref_samples: int,
    ref_text: str,
    text: str,
    params: SynthesisParams,
    max_batch_frames: int,
    max_output_seconds: float = float("inf"),
    stream: bool = False,
) -> Plan:
    """Chunk, size and batch `text` for a reference of `ref_samples`, refusing what is over a
    limit (MAX_OUTPUT_SECONDS, the model's longest row, the memory budget) before any work.
    `stream`: planned for the first audio (`split_lead`, `plan_stream_batches`)."""
    return plan_lines(model, [(ref_samples, ref_text)], [Line(text)], params, max_batch_frames, max_output_seconds,
                      stream)


def plan_lines(
    model: LoadedModel,
    refs: list[tuple[int, str]],
    lines: list[Line],
    params: SynthesisParams,
    max_batch_frames: int,
    max_output_seconds: float = float("inf"),
    stream: bool = False,
) -> Plan:
    """`plan_synthesis` for lines in several voices (`refs`: each voice's reference length in
    samples and its transcript). Each line is chunked at its own voice's speaking rate, and the
    chunks of all voices are batched together; a chunk is cross-faded into the next only within
    one voice's run of lines without a pause."""
    from f5_tts.model.utils import convert_char_to_pinyin

    import sampler

    rate, hop = model.sample_rate, model.hop_length
    ref_texts = [ended_ref_text(text) for _, text in refs]
    chunks: list[Chunk] = []
    for n, line in enumerate(lines):
        ref_samples, ref_text = refs[line.ref][0], ref_texts[line.ref]
        speed = params.speed if line.speed is None else line.speed
        made = plan_chunks(ref_text, ref_samples, line.text, speed, rate, hop, stream and n == 0)
        pause = round(line.pause_after * rate)
        run_on = n + 1 < len(lines) and lines[n + 1].ref == line.ref and pause == 0
        for k, chunk in enumerate(made):
            last = k == len(made) - 1
            chunks.append(replace(chunk, index=len(chunks), ref=line.ref, line=n,
                                  fade_after=not last or run_on, pause_after=pause if last else 0))
    ref_texts = [_spaced(t) for t in ref_texts]  # as plan_chunks counts it
    ref_frames = [samples // hop for samples, _ in refs]
    tokens = convert_char_to_pinyin([ref_texts[c.ref] + c.text for c in chunks])
    # The sampler lengthens a row to hold its text: plan with those lengths.
    chunks = [replace(c, frames=sampler.row_length(len(t), ref_frames[c.ref], c.frames))
              for c, t in zip(chunks, tokens)]
    lengths = [(c.frames - ref_frames[c.ref]) * hop for c in chunks]  # each chunk's samples
    pauses = sum(c.pause_after for c in chunks)
    planned = (sum(lengths) + pauses) / rate
    if planned > max_output_seconds:
        raise LimitExceeded(
            f"The text would make about {planned:.0f} s of audio; at most {max_output_seconds:.0f} s is allowed "
            "per job (MAX_OUTPUT_SECONDS): split it into several jobs."
        )
    worst = max(chunks, key=lambda c: c.frames)
    longest, model_limit = worst.frames, sampler.max_frames(model.cfm.transformer)
    what = f"segments.{worst.line}" if len(lines) > 1 else "the text"  # in a dialogue: whose transcript to check
    if longest > model_limit:
        raise LimitExceeded(
            f"One chunk of {what} needs {longest} mel frames, over the {model_limit} this model takes in one pass; "
            "check that ref_text is the transcript of the reference."
        )
    if longest > max_batch_frames:
        raise LimitExceeded(
            f"One chunk of {what} needs {longest} mel frames in one sampling call, over the memory budget "
            f"(MAX_BATCH_FRAMES={max_batch_frames}); check that ref_text is the transcript of the reference."
        )
    fade = int(params.cross_fade_duration * rate)
    faded = sum(min(fade, a, b) for a, b, c in zip(lengths, lengths[1:], chunks) if c.fade_after)
    samples = sum(lengths) - faded + pauses
    batches = plan_stream_batches(chunks, max_batch_frames) if stream else plan_batches(chunks, max_batch_frames)
    return Plan(chunks, tokens, batches, ref_frames, samples, max_batch_frames)


def synthesize(
    model: LoadedModel,
    ref_audio: np.ndarray,
    ref_text: str,
    text: str,
    params: SynthesisParams,
    max_batch_frames: int,
    max_output_seconds: float = float("inf"),
    serves: bool = True,
) -> SynthesisResult:
    """Speech for `text` in the voice of `ref_audio` (mono float32 at the model's rate). `serves`:
    whether this counts as the first synthesis a background compile waits for (a warm-up's does
    not: the compile would then start as the first jobs come)."""
    plan = plan_synthesis(model, len(ref_audio), ref_text, text, params, max_batch_frames, max_output_seconds)
    return run(model, ref_audio, plan, params, serves=serves)


def run(model: LoadedModel, ref_audio: np.ndarray | list[np.ndarray], plan: Plan, params: SynthesisParams,
        progress: Callable[..., None] | None = None, serves: bool = True) -> SynthesisResult:
    """All of `plan`'s audio. After each batch but the last, `progress(chunks_done=, chunks=,
    audio_s=)` (seconds made so far, before cross-fades): the last one's news is the result itself."""
    made = list(pieces(model, ref_audio, plan, params, progress, serves=serves))
    audio = np.concatenate([p.audio for p in made])
    return SynthesisResult(audio, model.sample_rate, len(plan.chunks), len(plan.batches), [p.span for p in made])


def pieces(model: LoadedModel, ref_audio: np.ndarray | list[np.ndarray], plan: Plan, params: SynthesisParams,
           progress: Callable[..., None] | None = None, lead_alone: bool = False,
           verify=None, serves: bool = True) -> Iterator[Piece]:
    """Sample `plan`'s batches (through the model's sampling loop, `batching`, beside other jobs'
    rows), and give out the audio in reading order as soon as a chunk and all before it are
    decoded. `ref_audio`: the reference, or one per voice of the plan. Joined, the pieces are
    `cross_fade` of each voice's runs of chunks, runs and pauses put end to end. The batches are
    queued at once, so later ones are sampled while the caller handles a piece; with `lead_alone`
    (a stream) only the first until the caller asks for a second piece: nothing competes with
    the first audio. Closing the generator drops what is not yet sampled.

    `verify` (`verification.Verifier`) hears each batch's waves as they are decoded, before any
    of them is given out, and settles them group by group (`settle`): those heard right at once,
    then those it sampled again (`resample(chunks, seed)`: one request, in the place of the batch)
    and put right; the cross-fades, spans and pieces are made of the waves it keeps."""
    import torch

    import batching

    refs, gains = [], []
    for audio in [ref_audio] if isinstance(ref_audio, np.ndarray) else ref_audio:
        ref = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, :]
        rms = float(torch.sqrt(torch.mean(torch.square(ref))))
        quiet = 0 < rms < params.target_rms  # a quiet voice is sampled louder, its output scaled back
        refs.append((ref * (params.target_rms / rms) if quiet else ref).to(model.device))
        gains.append(rms / params.target_rms if quiet else None)

    loop = batching.batcher_of(model, MIN_BATCH_FILL)
    how = batching.Sampling(params.nfe_step, params.cfg_strength, params.sway_sampling_coef)
    job, queued, retries = object(), [], []

    def rows(batch: list[Chunk], seed: int) -> list[batching.Row]:
        return [batching.Row(refs[c.ref], plan.tokens[c.index], c.frames, plan.ref_frames[c.ref], gains[c.ref], seed)
                for c in batch]

    def submit(batches: list[list[Chunk]], first: int) -> None:
        for order, batch in enumerate(batches, first):
            queued.append((batch, loop.submit(job, order, rows(batch, params.seed), how, plan.max_batch_frames)))

    def resampled(of: batching.Request, chunks: list[Chunk], seed: int) -> list[np.ndarray]:
        again = loop.submit(job, of.order, rows(chunks, seed), how, plan.max_batch_frames, due=of.due)
        retries.append(again)
        return again.result()

    waves: dict[int, np.ndarray] = {}
    fader = CrossFade(int(params.cross_fade_duration * model.sample_rate))
    done = start = decoded = 0  # chunks given out, samples given out, samples decoded
    try:
        submit(plan.batches[:1] if lead_alone else plan.batches, 0)
        for n in range(len(plan.batches)):
            if lead_alone and n == 1:
                submit(plan.batches[1:], 1)
            batch, request = queued[n]
            made_waves = request.result()
            settled = [list(zip(batch, made_waves))] if verify is None else \
                verify.settle(batch, made_waves, lambda chunks, seed, of=request: resampled(of, chunks, seed))
            for group in settled:
                for chunk, wave in group:
                    waves[chunk.index] = wave
                    decoded += wave.size
                made = done + len(waves)
                if progress is not None and made < len(plan.chunks):
                    progress(chunks_done=made, chunks=len(plan.chunks), audio_s=round(decoded / model.sample_rate, 2))
                while done in waves:
                    chunk, wave = plan.chunks[done], waves.pop(done)
                    audio = fader.add(wave)
                    span = (start + fader.lead, start + fader.lead + len(wave))
                    if not chunk.fade_after:  # the run ends: its held end, then the pause
                        silence = np.zeros(chunk.pause_after, dtype=np.float32)
                        audio = np.concatenate([audio, fader.finish(), silence])
                    if not np.isfinite(audio).all():  # never deliver NaN or infinity as audio
                        raise SynthesisError(
                            "The model produced invalid audio (NaN or infinite samples); the job was not completed.")
                    yield Piece(chunk.index, chunk.text, audio, start, span)
                    start, done = start + len(audio), done + 1
    finally:
        loop.cancel([request for _, request in queued] + retries)
        if serves:
            model.served.set()  # a background compile waiting for a first synthesis may begin


def stream(model: LoadedModel, ref_audio: np.ndarray | list[np.ndarray], plan: Plan,
           params: SynthesisParams, verify=None) -> Iterator[Piece]:
    """`pieces` for a stream: the first batch alone until the caller has the first piece, then
    the rest sampled ahead (in the sampling loop's thread) while the caller sends each piece.
    Closing this generator stops the sampling after the batch under way. With `verify`, a piece
    is sent once its chunk is settled (heard right, or sampled again as often as allowed), and
    never waits for the retries of a chunk after it."""
    return pieces(model, ref_audio, plan, params, lead_alone=True, verify=verify)
