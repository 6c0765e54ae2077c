"""Stock f5-tts against this worker, on the same model, inputs and seed, in one run.

    python bench.py                    # warm synthesis: one chunk and long text, medians, ratios, RTF, memory
    python bench.py --cold             # cold start in fresh processes: process start to model ready / first audio;
                                       # a fresh worker's first jobs against its later ones
    python bench.py --stream           # time to first audio and total: stock's streaming, ours whole and streamed
    python bench.py --dialogue         # four speakers batched together, against one segment at a time
    python bench.py --normalize        # text normalisation: grammar load time, time per text
    python bench.py --concurrent       # 1, 4, 16 concurrent clients over HTTP (SERVE=http) against one at a time
    python bench.py --voice-cache      # a short job with an S3 voice (moto): warm voice against cold
    python bench.py --verify           # one sentence and long text unverified, heard back, and re-sampled
    python bench.py --arch tiny --runs 2   # fast on a CPU

Weights are random (written into a models directory of the bench's own, laid out as `prefetch`
lays out the volume): for the real architectures the compute per step is that of the published
weights; the audio is noise. On a GPU the default architecture is F5TTS_v1_Base, on a CPU the
tiny test model. Each measurement is a module of `benchmarks/` with `measure` and `report`;
stock's side of them all is `benchmarks/stock.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import cold, concurrent, dialogue, normalization, resample, streaming, verify, voice_cache, warm
from benchmarks.inputs import prepare_models


#: The measurements that need a model, by their flag; none given: `warm`.
MEASUREMENTS = (("cold", cold), ("concurrent", concurrent), ("stream", streaming), ("dialogue", dialogue),
                ("verify", verify), ("voice_cache", voice_cache))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", help="F5TTS_v1_Base (default on a GPU) or tiny (default on a CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=int, help="timed runs per case (median), after one warm-up; default 5 on a GPU, "
                   "1 on a CPU; with --cold: cold starts of each (default 1)")
    p.add_argument("--nfe", type=int, default=32)
    p.add_argument("--cases", help="one,long (default) or with --stream long,two (default)")
    p.add_argument("--max-batch-frames", type=int, default=None, help="this worker's memory budget (MAX_BATCH_FRAMES)")
    p.add_argument("--variants", default="ours",
                   help="our configurations to time against stock, comma-separated: ours (the defaults), eager "
                        "(COMPILE=false), no-graphs (COMPILE=false CUDA_GRAPHS=false)")
    p.add_argument("--models-dir", help="where the random-weight models go (default: a temporary folder)")
    p.add_argument("--cold", action="store_true", help="time cold starts in fresh processes instead")
    p.add_argument("--stream", action="store_true", help="time to first audio and total time instead: stock's "
                   "infer_batch_process(streaming=True), ours not streamed, ours streamed (with and without the "
                   "bridge chunk)")
    p.add_argument("--dialogue", action="store_true", help="a dialogue of four speakers: batched across speakers, "
                   "against the segments one at a time (stock and ours) and a single-voice job of the same text")
    p.add_argument("--segments", type=int, help="with --dialogue: only the first this many segments (default all)")
    p.add_argument("--resample", action="store_true",
                   help="time and memory of resampling a 15 s voice to 24 kHz: torchaudio (what stock and this "
                        "worker used) against soxr, at ordinary and awkward rates, each in a fresh process")
    p.add_argument("--rates", help="with --resample: the voice rates to try, comma-separated (default: "
                   "44100, 48000, 22050, 22051, 23999, 383999)")
    p.add_argument("--normalize", action="store_true", help="text normalisation: the grammars' compile and load "
                   "times, and the time to normalise the long text with and without numbers, and a Chinese one")
    p.add_argument("--concurrent", action="store_true", help="concurrent clients through real HTTP: the worker "
                   "started with SERVE=http, streamed pcm speech of short texts, against the same requests one at a "
                   "time: aggregate audio seconds per second, time to first byte p50/p95")
    p.add_argument("--levels", help="with --concurrent: the numbers of clients, comma-separated (default 1,4,16)")
    p.add_argument("--voice-cache", action="store_true", help="a short job with an S3 voice on a local moto server: "
                   "the voice's prepared reference kept from an earlier job, against the same job cold")
    p.add_argument("--verify", action="store_true", help="verify's cost: one sentence and the long text through the "
                   "engine unverified, verified with one attempt (heard, none sampled again) and with three")
    p.add_argument("--asr-model", help="with --verify: a Whisper in the models dir's hub cache to hear with (default: "
                   "a tiny random one written there)")
    p.add_argument("--first-jobs", type=int, default=10, help="with --cold: a fresh worker's first jobs timed "
                   "after its start (default 10: the issue's first ten requests)")
    p.add_argument("--drop-caches", action="store_true", help="drop the page cache before each cold start (root)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


def main():
    args = parse_args()
    if args.resample:  # no model involved
        result = resample.measure([int(r) for r in args.rates.split(",")] if args.rates else resample.RESAMPLE_RATES)
        resample.report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    # The settings are read once, on first use: set them first.
    os.environ["MODELS_DIR"] = args.models_dir or str(Path(tempfile.gettempdir()) / "f5-bench-models")
    if args.normalize:  # no model involved
        result = normalization.measure(args, Path(os.environ["MODELS_DIR"]))
        normalization.report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    os.environ.update(ALLOW_MODEL_DOWNLOAD="false", PREFETCH_ASR="false")
    if args.device != "auto":
        os.environ["DEVICE"] = args.device
    import cache_env
    from config import settings_or_exit

    cache_env.configure(settings_or_exit())  # before torch
    import torch

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    arch = args.arch or ("F5TTS_v1_Base" if on_gpu else "tiny")
    env = prepare_models(arch)
    chosen = [module for flag, module in MEASUREMENTS if getattr(args, flag)]
    measurement = chosen[0] if chosen else warm
    # the two that start worker processes need the models' environment
    result = measurement.measure(args, arch, env) if measurement in (cold, concurrent) else \
        measurement.measure(args, arch)
    measurement.report(result)
    result.update(date=time.strftime("%Y-%m-%d"), command=" ".join(["python", *sys.argv]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
