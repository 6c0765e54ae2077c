"""A dialogue of four speakers (about 2,000 characters, references of 5 to 10 s): this worker's
chunks of all speakers batched together, against the same segments synthesised one after another
as f5-tts's CLI does with `[voice]` tags (stock, and this worker one segment at a time), and
against a single-voice job of the same text."""

from __future__ import annotations

from benchmarks.inputs import LONG_TEXT, REF_TEXT, budget_and_runs, example_reference, load_models
from benchmarks.stock import stock_synthesize

#: (recording among f5-tts's examples, its transcript); the transcripts of the story's voices are
#: of their recordings' length (about 15 characters a second), which is what sizes the chunks.
SPEAKERS = [
    ("basic/basic_ref_en.wav", REF_TEXT),
    ("multi/main.flac", "A Town Mouse and a Country Mouse were acquaintances, and the Country Mouse invited him."),
    ("multi/town.flac", "My poor dear friend, you live here no better than the ants! Now, you should just see how I "
                        "fare! My larder is a regular horn of plenty."),
    ("multi/country.flac", "And the Country Mouse went with him to town, and they sat down to a fine dinner there."),
]
#: The long text's sentences and one more, read by the four speakers in turn.
SCRIPT = [(n % len(SPEAKERS), sentence) for n, sentence in enumerate(
    LONG_TEXT.replace(". ", ".\n").split("\n")
    + ["And every year since, on that winter evening, the villagers gather in the square to listen to the clocks."])]
WHO = ("stock, one segment at a time", "ours, one segment at a time", "ours, batched across speakers",
       "ours, one voice (same text)")


def measure(args, arch):
    import synthesis
    from benchmarks.warm import describe_device, timed

    stock_model, (model,) = load_models(arch, {})
    refs, texts = [example_reference(model, name) for name, _ in SPEAKERS], [text for _, text in SPEAKERS]
    budget, runs = budget_and_runs(args, model)
    params = synthesis.SynthesisParams(nfe_step=args.nfe, seed=7)
    script = SCRIPT[: args.segments]
    lines = [synthesis.Line(text, voice) for voice, text in script]
    whole = " ".join(text for _, text in script)
    plan = synthesis.plan_lines(model, [(len(r), t) for r, t in zip(refs, texts)], lines, params, budget)

    def one_by_one(synthesize):
        return [synthesize(line) for line in lines]

    make = {
        WHO[0]: lambda: one_by_one(lambda line: stock_synthesize(stock_model, refs[line.ref], line.text, args.nfe,
                                                                 7, texts[line.ref])),
        WHO[1]: lambda: one_by_one(lambda line: synthesis.synthesize(model, refs[line.ref], texts[line.ref],
                                                                     line.text, params, budget).audio),
        WHO[2]: lambda: [synthesis.run(model, refs, plan, params).audio],
        WHO[3]: lambda: [synthesis.synthesize(model, refs[0], texts[0], whole, params, budget).audio],
    }
    synthesis.run(model, refs, plan, params)
    model.compile_done.wait()  # times the compiled blocks, not the eager ones used meanwhile
    rows = {}
    for who, fn in make.items():
        median, low, high, peak, out, _ = timed(fn, runs, model.device)
        audio_s = sum(len(a) for a in out) / model.sample_rate
        rows[who] = {"s": median, "range": [low, high], "audio_s": audio_s, "rtf": median / audio_s, "peak_gib": peak}
    return {"device": describe_device(model.device), "arch": arch, "nfe": args.nfe, "runs": runs, "budget": budget,
            "chars": len(whole), "segments": len(lines), "speakers": len(SPEAKERS), "chunks": len(plan.chunks),
            "batches": len(plan.batches), "rows": rows}


def report(result):
    print(f"\n{result['arch']} on {result['device']}, NFE {result['nfe']}, MAX_BATCH_FRAMES={result['budget']}, "
          f"median of {result['runs']}: a dialogue of {result['speakers']} speakers, {result['segments']} segments, "
          f"{result['chars']} characters ({result['chunks']} chunks in {result['batches']} batches when batched)")
    rows = result["rows"]
    stock, single = rows[WHO[0]]["s"], rows[WHO[3]]["s"]
    head = f"{'who':<31} {'audio':>7} {'median':>8} {'RTF':>7} {'vs stock':>9} {'vs one voice':>13}"
    print(head)
    print("-" * len(head))
    for who, r in rows.items():
        print(f"{who:<31} {r['audio_s']:6.1f}s {r['s']:7.3f}s {r['rtf']:7.4f} {stock / r['s']:8.2f}x "
              f"{r['s'] / single:12.2f}x")
    print("vs stock: stock's time / this row's (higher is faster); vs one voice: this row's time / the single-voice "
          "job's (the goal on an H100: batched across speakers within 1.15x)")
