"""Stock f5-tts, as its own callers use it: the baseline of every measurement. Stock means f5-tts
1.1.22's `infer_batch_process` (one thread per chunk, batch 1)."""

from __future__ import annotations

from benchmarks.inputs import REF_TEXT


def stock_synthesize(model, reference, text, nfe, seed, ref_text=REF_TEXT):
    """f5-tts's own path: chunk_text sized by infer_process's formula, then infer_batch_process."""
    wave, rate, _ = next(_infer_batch_process(model, reference, text, nfe, seed, ref_text))
    return wave


def stock_stream(model, reference, text, nfe, seed):
    """f5-tts's streaming path, `infer_batch_process(streaming=True)` (what its socket server
    serves): one chunk at a time, each sampled whole, then given out in slices of 2,048 samples.
    Yields (slice, sample rate)."""
    yield from _infer_batch_process(model, reference, text, nfe, seed, REF_TEXT, streaming=True)


def _infer_batch_process(model, reference, text, nfe, seed, ref_text, **options):
    import torch
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process
    from f5_tts.model.utils import seed_everything

    import synthesis

    ref_text = synthesis.ended_ref_text(ref_text)  # what preprocess_ref_audio_text returns
    seconds = len(reference) / model.sample_rate
    max_chars = int(len(ref_text.encode("utf-8")) / seconds * (22 - seconds))
    seed_everything(seed)
    return infer_batch_process(
        (torch.from_numpy(reference)[None, :], model.sample_rate), ref_text, chunk_text(text, max_chars),
        model.cfm, model.vocoder, nfe_step=nfe, device=model.device, progress=None, **options)


#: A cold start of stock, in a fresh process: imports f5-tts and loads as its
#: infer_batch_process callers do, then speaks one short text.
STOCK_COLD = """
import json, sys, time
marks = {"start": time.time()}
import torch
marks["torch"] = time.time()
from f5_tts.infer.utils_infer import load_model, load_vocoder, infer_batch_process
from f5_tts.model import DiT
marks["imports"] = time.time()
cfg = json.loads(sys.argv[1])
vocoder = load_vocoder("vocos", True, cfg["vocoder_dir"], cfg["device"])
model = load_model(DiT, cfg["arch"], cfg["checkpoint"], vocab_file=cfg["vocab"], device=cfg["device"])
if cfg["device"].startswith("cuda"): torch.cuda.synchronize()
marks["ready"] = time.time()
import soundfile as sf
audio, rate = sf.read(cfg["ref"], dtype="float32")
wave, _, _ = next(infer_batch_process((torch.from_numpy(audio)[None], rate), cfg["ref_text"], ["Hello there."],
                                      model, vocoder, nfe_step=cfg["nfe"], device=cfg["device"], progress=None))
marks["first_audio"] = time.time()
print("MARKS " + json.dumps(marks))
"""
