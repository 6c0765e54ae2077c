"""Text + reference audio -> speech, with the loaded F5-TTS model.

Long text is split into chunks the way f5-tts splits it, but the chunks are not run one
thread each at batch 1: they are sorted by length and sampled together in batched calls of
`sampler.sample`, each batch capped at `max_batch_frames` padded mel frames (the memory
budget), then decoded and cross-faded back in reading order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from errors import LimitExceeded
from model_cache import LoadedModel


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


def chunk_text(text: str, max_chars: int = 135) -> list[str]:
    """Split at sentence punctuation into chunks of at most `max_chars` UTF-8 bytes (a
    sentence longer than that stays whole), as f5-tts's `chunk_text` does."""
    chunks, current = [], ""
    for sentence in re.split(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])", text):
        if not sentence:
            continue
        piece = sentence + " " if len(sentence[-1].encode("utf-8")) == 1 else sentence
        if len(current.encode("utf-8")) + len(sentence.encode("utf-8")) <= max_chars:
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
    import torch
    from f5_tts.model.utils import convert_char_to_pinyin

    import sampler

    ref = torch.from_numpy(np.ascontiguousarray(ref_audio, dtype=np.float32))[None, :]
    rms = float(torch.sqrt(torch.mean(torch.square(ref))))
    quiet = 0 < rms < params.target_rms
    if quiet:
        ref = ref * (params.target_rms / rms)
    ref = ref.to(model.device)

    ref_text = normalise_ref_text(ref_text)
    chunks = plan_chunks(ref_text, ref.shape[-1], text, params.speed, model.sample_rate, model.hop_length)
    if len(ref_text[-1].encode("utf-8")) == 1:
        ref_text += " "
    ref_frames = ref.shape[-1] // model.hop_length
    planned = sum(c.frames - ref_frames for c in chunks) * model.hop_length / model.sample_rate
    if planned > max_output_seconds:
        raise LimitExceeded(
            f"The text would make about {planned:.0f} s of audio; at most {max_output_seconds:.0f} s is allowed "
            "per job (MAX_OUTPUT_SECONDS): split it into several jobs."
        )
    batches = plan_batches(chunks, max_batch_frames)

    waves: dict[int, np.ndarray] = {}
    with model.in_use(), torch.inference_mode():
        for batch in batches:
            texts = convert_char_to_pinyin([ref_text + c.text for c in batch])
            frames = torch.tensor([c.frames for c in batch], dtype=torch.long, device=model.device)
            mel, lengths = sampler.sample(
                model.cfm,
                ref.expand(len(batch), -1),
                texts,
                frames,
                steps=params.nfe_step,
                cfg_strength=params.cfg_strength,
                sway_sampling_coef=params.sway_sampling_coef,
                seed=params.seed,
                cuda_graph=model.cuda_graphs,
                blocks=model.blocks,
            )
            for row, chunk in enumerate(batch):
                generated = mel[row : row + 1, ref_frames : lengths[row]].permute(0, 2, 1)
                wave = model.vocoder.decode(generated)
                if quiet:
                    wave = wave * (rms / params.target_rms)
                waves[chunk.index] = wave.squeeze(0).cpu().numpy().astype(np.float32)

    ordered = [waves[c.index] for c in chunks]
    audio = cross_fade(ordered, int(params.cross_fade_duration * model.sample_rate))
    return SynthesisResult(audio, model.sample_rate, len(chunks), len(batches))
