"""A tiny random-weight Whisper of the real transformers classes, with a small byte-level
tokenizer written here, saved in the layout of a hub model repository."""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which Whisper's BPE uses."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def make_tiny_whisper(target: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)

    target.mkdir(parents=True, exist_ok=True)
    symbols = sorted(set(_bytes_to_unicode().values()))
    vocab = {s: i for i, s in enumerate(symbols)}
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    (target / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = WhisperTokenizer(str(target / "vocab.json"), str(target / "merges.txt"),
                                 additional_special_tokens=SPECIALS, unk_token="<|endoftext|>",
                                 bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=64, pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True, max_length=24,
        # the cross-attention heads word timestamps are read from (`return_timestamps="word"`)
        alignment_heads=[[0, 0], [0, 1]],
        begin_suppress_tokens=[ids["<|endoftext|>"]],
        # Random weights would emit any byte; letting through only letters and the space makes
        # its transcripts look like words, which is what the worker checks for.
        suppress_tokens=[ids[t] for t in SPECIALS] + [i for t, i in vocab.items() if not ((t.isascii() and t.isalpha()) or t == "Ġ")],
    )
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(target)
    return target
