"""Time to first audio and total time: stock's `infer_batch_process(streaming=True)`, this worker
not streamed (its first audio is the whole file), and this worker streamed, with and without the
bridge chunk (`synthesis.STREAM_BRIDGE_CHUNKS`), on the same model, reference and seed.

Clocks start where the job's synthesis starts (chunking included) and stop when a piece is in the
caller's hands (for ours, encoded as a streamed piece is). "stall" is how long a listener who
starts playing at the first audio would wait for audio that has not come yet, summed over the job.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from benchmarks.inputs import LONG_TEXT, REF_TEXT, TWO_SENTENCES, budget_and_runs, example_reference, load_models
from benchmarks.stock import stock_stream

TEXTS = {"long": LONG_TEXT, "two": TWO_SENTENCES}
WHO = ("stock stream", "ours whole", "ours stream", "stream, no bridge")


def stall(arrivals: list[tuple[float, float]]) -> float:
    """Waiting a listener does: (arrival, seconds of audio) of each piece in order, playing from the first."""
    waited, playhead = 0.0, arrivals[0][0]
    for arrived, seconds in arrivals:
        if arrived > playhead:
            waited += arrived - playhead
            playhead = arrived
        playhead += seconds
    return waited


def timed_pieces(make) -> dict:
    """Run `make()`, an iterator of (piece audio, rate), noting when each piece arrives."""
    start, arrivals = time.perf_counter(), []
    for audio, rate in make():
        arrivals.append((time.perf_counter() - start, len(audio) / rate))
    return {"first": arrivals[0][0], "total": arrivals[-1][0], "stall": stall(arrivals),
            "audio_s": sum(s for _, s in arrivals), "pieces": len(arrivals)}


def ours(model, reference, text, nfe, budget, how):
    import audio_io
    import synthesis

    params = synthesis.SynthesisParams(nfe_step=nfe, seed=7)
    plan = synthesis.plan_synthesis(model, len(reference), REF_TEXT, text, params, budget, stream=how != "ours whole")
    if how == "ours whole":
        yield synthesis.run(model, reference, plan, params).audio, model.sample_rate
        return
    if how == "stream, no bridge":
        plan = replace(plan, batches=synthesis.plan_stream_batches(plan.chunks, budget, bridge=0))
    for piece in synthesis.stream(model, reference, plan, params):
        audio_io.encoded(piece.audio, model.sample_rate, "pcm")  # as the handler sends it
        yield piece.audio, model.sample_rate


def measure(args, arch):
    import synthesis
    from benchmarks.warm import describe_device

    stock_model, (model,) = load_models(arch, {})
    reference = example_reference(model)
    budget, runs = budget_and_runs(args, model)
    if not model.compile_done.is_set():  # compiling begins after a first synthesis: time the compiled blocks
        list(ours(model, reference, "Warm up.", args.nfe, budget, "ours whole"))
    model.compile_done.wait()
    rows = []
    for case in (args.cases or "long,two").split(","):
        text = TEXTS[case]
        makers = {
            "stock stream": lambda: stock_stream(stock_model, reference, text, args.nfe, 7),
            **{how: (lambda how=how: ours(model, reference, text, args.nfe, budget, how)) for how in WHO[1:]},
        }
        row = {"case": case, "chars": len(text), "nfe": args.nfe, "runs": runs, "who": {}}
        for who, make in makers.items():
            timed_pieces(make)  # warm-up: kernels, allocator, this length's graphs
            results = [timed_pieces(make) for _ in range(runs)]
            row["who"][who] = {key: statistics.median(r[key] for r in results)
                               for key in ("first", "total", "stall", "audio_s", "pieces")}
        rows.append(row)
    return {"device": describe_device(model.device), "arch": arch, "dtype": str(model.dtype), "budget": budget,
            "bridge": synthesis.STREAM_BRIDGE_CHUNKS, "rows": rows}


def report(result):
    print(f"\n{result['arch']} on {result['device']}, {result['dtype']}, MAX_BATCH_FRAMES={result['budget']}; "
          "seconds from the start of synthesis")
    head = f"{'case':<6} {'who':<18} {'pieces':>6} {'audio':>7} {'first audio':>11} {'vs stock':>8} " \
           f"{'total':>8} {'vs whole':>8} {'stall':>7}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        stock, whole = r["who"]["stock stream"], r["who"]["ours whole"]
        for who, t in r["who"].items():
            print(f"{r['case']:<6} {who:<18} {t['pieces']:6.0f} {t['audio_s']:6.1f}s {t['first']:10.3f}s "
                  f"{stock['first'] / t['first']:7.2f}x {t['total']:7.3f}s {t['total'] / whole['total']:7.2f}x "
                  f"{t['stall']:6.2f}s")
    print("vs stock: stock's first audio / this one's (higher is sooner); vs whole: total / ours not streamed "
          "(the goal: at most 1.10 streamed); stall: a listener's wait after the first audio")
