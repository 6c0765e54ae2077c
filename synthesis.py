"""Text + reference audio -> speech, with the loaded F5-TTS model.

Long text is split into chunks the way f5-tts splits it (except that a sentence too long for
one chunk is cut at spaces, where f5-tts keeps it whole), but the chunks are not run one
thread each at batch 1: they are sorted by length and sampled together in batched calls of
`sampler.sample`, each batch capped at `max_batch_frames` padded mel frames (the memory
budget), then decoded and cross-faded back in reading order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
class Chunk:
    index: int
    text: str
    frames: int  # total frames to sample: reference + generated


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32, mono
    sample_rate: int
    chunks: int
    batches: int


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


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
            piece = part + " " if _size(part[-1]) == 1 else part
            if _size(current) + _size(part) <= max_chars:
                current += piece
            else:
                if current:
                    chunks.append(current.strip())
                current = piece
    if current.strip():
        chunks.append(current.strip())
    return chunks


def normalise_ref_text(ref_text: str) -> str:
    """End the transcript the way f5-tts's `preprocess_ref_audio_text` does ("... . "), so the
    generated text starts a new sentence."""
    ref_text = ref_text.strip()
    if not ref_text.endswith("。"):
        ref_text += " " if ref_text.endswith(".") else ". "
    return ref_text


def plan_chunks(ref_text: str, ref_samples: int, text: str, speed: float, sample_rate: int, hop: int) -> list[Chunk]:
    """Chunks of `text` sized to the reference's speaking rate, with their frame counts, by
    f5-tts's formulas (`infer_process` and `infer_batch_process`)."""
    ref_seconds = ref_samples / sample_rate
    max_chars = max(1, int(len(ref_text.encode("utf-8")) / ref_seconds * (22 - ref_seconds) * speed))
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text += " "
    ref_bytes = len(ref_text.encode("utf-8"))
    ref_frames = ref_samples // hop
    chunks = []
    for i, piece in enumerate(chunk_text(text, max_chars)):
        piece_bytes = len(piece.encode("utf-8"))
        local_speed = 0.3 if piece_bytes < 10 else speed  # f5-tts slows very short chunks down
        frames = ref_frames + int(ref_frames / ref_bytes * piece_bytes / local_speed)
        chunks.append(Chunk(i, piece, frames))
    return chunks


#: A chunk joins a batch only if it is at least this fraction of the batch's longest chunk.
#: f5-tts's attention does not mask padding (masking it would make SDPA materialise a
#: batch x heads x n x n mask), so padding frames are seen by the shorter rows; bounding
#: the padding bounds how far a batched row can drift from the same chunk sampled alone.
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


def cross_fade(waves: list[np.ndarray], samples: int) -> np.ndarray:
    """Concatenate with a linear cross-fade of `samples` at each join."""
    if not waves:
        return np.zeros(0, dtype=np.float32)
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


@dataclass(frozen=True)
class Plan:
    """What a synthesis will do, known before any sampling: its chunks (frame counts as the
    sampler will lengthen them), its batches, and the audio it will make."""

    chunks: list[Chunk]
    tokens: list[list[str]]  # reference transcript + chunk, as the model's vocabulary reads them
    batches: list[list[Chunk]]
    ref_frames: int
    samples: int  # of output audio: each chunk's frames less the reference's, less the cross-fades


def plan_synthesis(
    model: LoadedModel,
    ref_samples: int,
    ref_text: str,
    text: str,
    params: SynthesisParams,
    max_batch_frames: int,
    max_output_seconds: float = float("inf"),
) -> Plan:
    """Chunk, size and batch `text` for a reference of `ref_samples`, refusing what is over a
    limit (MAX_OUTPUT_SECONDS, the model's longest row, the memory budget) before any work."""
    from f5_tts.model.utils import convert_char_to_pinyin

    import sampler

    ref_text = normalise_ref_text(ref_text)
    chunks = plan_chunks(ref_text, ref_samples, text, params.speed, model.sample_rate, model.hop_length)
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text += " "
    ref_frames = ref_samples // model.hop_length
    tokens = convert_char_to_pinyin([ref_text + c.text for c in chunks])
    # The sampler lengthens a row to hold its text: plan with those lengths.
    chunks = [replace(c, frames=sampler.row_length(len(t), ref_frames, c.frames)) for c, t in zip(chunks, tokens)]
    lengths = [(c.frames - ref_frames) * model.hop_length for c in chunks]  # each chunk's samples
    planned = sum(lengths) / model.sample_rate
    if planned > max_output_seconds:
        raise LimitExceeded(
            f"The text would make about {planned:.0f} s of audio; at most {max_output_seconds:.0f} s is allowed "
            "per job (MAX_OUTPUT_SECONDS): split it into several jobs."
        )
    longest, model_limit = max(c.frames for c in chunks), sampler.max_frames(model.cfm.transformer)
    if longest > model_limit:
        raise LimitExceeded(
            f"One chunk of the text needs {longest} mel frames, over the {model_limit} this model takes in one pass; "
            "check that ref_text is the transcript of the reference."
        )
    if longest > max_batch_frames:
        raise LimitExceeded(
            f"One chunk of the text needs {longest} mel frames in one sampling call, over the memory budget "
            f"(MAX_BATCH_FRAMES={max_batch_frames}); check that ref_text is the transcript of the reference."
        )
    fade = int(params.cross_fade_duration * model.sample_rate)
    samples = sum(lengths) - sum(min(fade, a, b) for a, b in zip(lengths, lengths[1:]))
    return Plan(chunks, tokens, plan_batches(chunks, max_batch_frames), ref_frames, samples)


def synthesize(
    model: LoadedModel,
    ref_audio: np.ndarray,
    ref_text: str,
    text: str,
    params: SynthesisParams,
    max_batch_frames: int,
    max_output_seconds: float = float("inf"),
) -> SynthesisResult:
    """Speech for `text` in the voice of `ref_audio` (mono float32 at the model's rate)."""
    plan = plan_synthesis(model, len(ref_audio), ref_text, text, params, max_batch_frames, max_output_seconds)
    return run(model, ref_audio, plan, params)


def run(model: LoadedModel, ref_audio: np.ndarray, plan: Plan, params: SynthesisParams,
        progress: Callable[..., None] | None = None) -> SynthesisResult:
    """Sample `plan`'s batches, decode each chunk and cross-fade them in reading order. After each
    batch but the last, `progress(chunks_done=, chunks=, audio_s=)` (seconds made so far, before
    cross-fades): the last one's news is the result itself."""
    import torch

    import sampler

    ref = torch.from_numpy(np.ascontiguousarray(ref_audio, dtype=np.float32))[None, :]
    rms = float(torch.sqrt(torch.mean(torch.square(ref))))
    quiet = 0 < rms < params.target_rms
    if quiet:
        ref = ref * (params.target_rms / rms)
    ref = ref.to(model.device)

    waves: dict[int, np.ndarray] = {}
    with model.in_use(), torch.inference_mode():
        for batch in plan.batches:
            frames = torch.tensor([c.frames for c in batch], dtype=torch.long, device=model.device)
            mel, lengths = sampler.sample(
                model.cfm,
                ref.expand(len(batch), -1),
                [plan.tokens[c.index] for c in batch],
                frames,
                steps=params.nfe_step,
                cfg_strength=params.cfg_strength,
                sway_sampling_coef=params.sway_sampling_coef,
                seed=params.seed,
                cuda_graph=model.cuda_graphs,
                blocks=model.blocks,
            )
            for row, chunk in enumerate(batch):
                generated = mel[row : row + 1, plan.ref_frames : lengths[row]].permute(0, 2, 1)
                wave = model.vocoder.decode(generated)
                if quiet:
                    wave = wave * (rms / params.target_rms)
                waves[chunk.index] = wave.squeeze(0).cpu().numpy().astype(np.float32)
            if progress is not None and len(waves) < len(plan.chunks):
                made = sum(len(w) for w in waves.values()) / model.sample_rate
                progress(chunks_done=len(waves), chunks=len(plan.chunks), audio_s=round(made, 2))

    ordered = [waves[c.index] for c in plan.chunks]
    audio = cross_fade(ordered, int(params.cross_fade_duration * model.sample_rate))
    if not np.isfinite(audio).all():  # never deliver NaN or infinity as audio
        raise SynthesisError("The model produced invalid audio (NaN or infinite samples); the job was not completed.")
    return SynthesisResult(audio, model.sample_rate, len(plan.chunks), len(plan.batches))
