"""Warm synthesis: one chunk and long text, stock against our configurations (medians, ratios,
RTF, peak memory)."""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.inputs import LONG_TEXT, ONE_CHUNK, REF_TEXT, budget_and_runs, example_reference, load_models
from benchmarks.stock import stock_synthesize


def our_synthesize(model, reference, text, nfe, seed, max_batch_frames):
    import synthesis

    params = synthesis.SynthesisParams(nfe_step=nfe, seed=seed)
    return synthesis.synthesize(model, reference, REF_TEXT, text, params, max_batch_frames).audio


def timed(fn, runs, device):
    import torch

    cuda = device.startswith("cuda")
    first = time.perf_counter()
    fn()  # warm-up: kernels, allocator, caches
    first = time.perf_counter() - first
    times, peaks, out = [], [], None
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() / 2**30)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), (max(peaks) if peaks else None), out, first


#: Our configurations: the settings each one changes.


VARIANTS = {
    "ours": {},  # on CUDA: CUDA graphs, and the DiT blocks compiled (COMPILE=auto)
    "eager": {"compile": False},
    "no-graphs": {"compile": False, "cuda_graphs": False},
}


def measure(args, arch):
    import numpy as np

    names = args.variants.split(",")
    stock_model, loaded = load_models(arch, *(VARIANTS[name] for name in names))
    variants = dict(zip(names, loaded))
    reference = example_reference(stock_model)
    budget, runs = budget_and_runs(args, stock_model)
    texts = {"one": ONE_CHUNK, "long": LONG_TEXT}
    rows = []
    for case in (args.cases or "one,long").split(","):
        text = texts[case]
        stock = timed(lambda: stock_synthesize(stock_model, reference, text, args.nfe, 7), runs, stock_model.device)
        s_audio = stock[4]
        row = {"case": case, "chars": len(text), "nfe": args.nfe, "runs": runs, "stock_s": stock[0],
               "stock_range": [stock[1], stock[2]], "stock_audio_s": len(s_audio) / stock_model.sample_rate,
               "stock_peak_gib": stock[3], "ours": {}}
        row["stock_rtf"] = stock[0] / row["stock_audio_s"]
        for name, model in variants.items():
            waited = time.perf_counter()
            if not model.compile_done.is_set():  # compiling begins after a first synthesis
                our_synthesize(model, reference, text, args.nfe, 7, budget)
            model.compile_done.wait()  # times the compiled blocks, not the eager ones used meanwhile
            waited = time.perf_counter() - waited
            ours = timed(lambda: our_synthesize(model, reference, text, args.nfe, 7, budget), runs, model.device)
            o_audio = ours[4]
            r = {"s": ours[0], "range": [ours[1], ours[2]], "first_call_s": waited + ours[5], "speedup": stock[0] / ours[0],
                 "audio_s": len(o_audio) / model.sample_rate, "peak_gib": ours[3]}
            r["rtf"] = ours[0] / r["audio_s"]
            if case == "one" and len(s_audio) == len(o_audio):
                r["rel_diff"] = float(np.linalg.norm(s_audio - o_audio) / max(np.linalg.norm(s_audio), 1e-12))
            row["ours"][name] = r
        rows.append(row)
    return {"device": describe_device(stock_model.device), "arch": arch, "dtype": str(stock_model.dtype),
            "budget": budget, "rows": rows}


def describe_device(device):
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"


def report(result):
    print(f"\n{result['arch']} on {result['device']}, {result['dtype']}, MAX_BATCH_FRAMES={result['budget']}")
    head = f"{'case':<6} {'who':<10} {'audio':>7} {'median':>8} {'range':>15} {'speed-up':>9} {'RTF':>7} " \
           f"{'peak':>9} {'diff':>8} {'1st call':>9}"
    print(head)
    print("-" * len(head))
    peak = lambda g: f"{g:.2f} GiB" if g is not None else "-"
    for r in result["rows"]:
        print(f"{r['case']:<6} {'stock':<10} {r['stock_audio_s']:6.1f}s {r['stock_s']:7.3f}s "
              f"{r['stock_range'][0]:6.3f}-{r['stock_range'][1]:.3f}s {'1.00x':>9} {r['stock_rtf']:7.4f} "
              f"{peak(r['stock_peak_gib']):>9}")
        for name, o in r["ours"].items():
            diff = f"{o['rel_diff']:.1e}" if "rel_diff" in o else "n/a"
            print(f"{'':<6} {name:<10} {o['audio_s']:6.1f}s {o['s']:7.3f}s {o['range'][0]:6.3f}-{o['range'][1]:.3f}s "
                  f"{o['speedup']:8.2f}x {o['rtf']:7.4f} {peak(o['peak_gib']):>9} {diff:>8} {o['first_call_s']:8.2f}s")
    print("speed-up: stock median / ours; diff: relative L2 distance from stock's audio for the same seed"
          " (one chunk only: for long text stock draws each chunk's noise from one generator in thread order);"
          " 1st call: the first synthesis; with compiling, from it to the end of the first on the compiled blocks"
          " (first case only)")
