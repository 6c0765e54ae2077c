"""What `verify` costs: a one-sentence job and the long text through the engine, each unverified,
verified with one attempt (every chunk heard, none sampled again: the cost when no chunk needs
it), and verified with VERIFY_ATTEMPTS=3 (random weights speak noise, so every chunk is heard
wrong and sampled twice more: the worst case); and the long text streamed, unverified and heard
once, for the time to its first audio.

The ASR model is a random-weight Whisper written into the bench's models directory (the tiny one
on a CPU), unless --asr-model names one in its hub cache: a random Whisper decodes as many tokens
as it is allowed, a real one about as many as there are words, so only a real model's hearing time
is the real cost. The sampling's share is exact either way."""

from __future__ import annotations

import base64
import statistics
import sys
import time

from benchmarks.inputs import LONG_TEXT, ONE_CHUNK, REF_TEXT, ROOT

TEXTS = {"one": ONE_CHUNK, "long": LONG_TEXT}
#: mode -> VERIFY_ATTEMPTS (None: not verified)
MODES = {"plain": None, "heard": 1, "retried": 3}
TINY_ASR = "bench/whisper-tiny"


def asr_model(store, asked: str | None) -> str:
    """The ASR model to hear with: `asked` (in the hub cache), or a tiny random Whisper put there."""
    if asked:
        return asked
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_hub import place_folder_in_hub_cache
    from tiny_whisper import make_tiny_whisper

    from errors import ModelLoadError

    try:
        store.hub_snapshot(TINY_ASR, download=False)
    except ModelLoadError:  # not there yet
        place_folder_in_hub_cache(store.hub_dir, TINY_ASR, make_tiny_whisper(store.models_dir / "scratch-whisper"))
    return TINY_ASR


def measure(args, arch):
    import checkpoints
    import loaded_model
    import model_cache
    from benchmarks.warm import describe_device
    from config import MAX_INLINE_LIMIT, get_settings
    from engine import Engine

    base = get_settings().model_copy(update={"f5_model": arch, "s3_bucket": None, "write_local_output": False})
    heard_by = asr_model(model_cache.ModelStore.from_settings(base), args.asr_model)
    base = base.model_copy(update={"asr_model": heard_by, "verify_asr_model_override": heard_by})
    model = loaded_model.get_model(base)
    runs = args.runs or (5 if model.device.startswith("cuda") else 1)
    voice = base64.b64encode((checkpoints.f5_package_dir() / "infer" / "examples" / "basic" /
                              "basic_ref_en.wav").read_bytes()).decode()
    engines = {mode: Engine(base.model_copy(update={"verify_attempts": attempts or 1})) for mode, attempts in
               MODES.items()}
    # one verified job first, for all that follows: the model, the sampling loop, Whisper, the pipeline
    for _ in engines["heard"].run("warm-up", {"text": ONE_CHUNK, "voice_base64": voice, "ref_text": REF_TEXT,
                                              "nfe_step": args.nfe, "seed": 3, "output_format": "mp3",
                                              "return_base64": True, "verify": True}):
        pass
    rows = []
    for case in (args.cases or "one,long").split(","):
        row = {"case": case}
        for mode, attempts in MODES.items():
            job = {"text": TEXTS[case], "voice_base64": voice, "ref_text": REF_TEXT, "nfe_step": args.nfe, "seed": 3,
                   "output_format": "mp3", "return_base64": True, "verify": attempts is not None}
            results, walls = [], []
            for n in range(runs):
                start = time.perf_counter()
                *_, result = engines[mode].run(f"{case}-{mode}-{n}", job)
                walls.append(time.perf_counter() - start)
                results.append(result)
            timed = results
            row[mode] = {
                "total_s": statistics.median(walls),
                **{f"{step}_s": statistics.median(r.timings.get(step, 0.0) for r in timed)
                   for step in ("synthesis", "verify", "verify_asr")},
                "chunks": timed[-1].chunks, "batches": timed[-1].batches,
                "samplings": timed[-1].verification["samplings"] if timed[-1].verification else timed[-1].chunks,
                "audio_s": timed[-1].duration_s,
            }
        plain = row["plain"]["synthesis_s"]
        for mode in ("heard", "retried"):
            row[mode]["overhead"] = row[mode]["synthesis_s"] / plain - 1
        rows.append(row)
    # each case streamed, unverified and heard once, for the time to its first audio (the pieces
    # count against the inline limit: the largest allowed)
    streaming = Engine(base.model_copy(update={"stream": True, "verify_attempts": 1,
                                               "max_inline_bytes": MAX_INLINE_LIMIT}))
    for row in rows:
        row["first_audio_s"] = {}
        for mode in ("plain", "heard"):  # heard: the first piece waits for its hearing
            job = {"text": TEXTS[row["case"]], "voice_base64": voice, "ref_text": REF_TEXT, "nfe_step": args.nfe,
                   "seed": 3, "output_format": "mp3", "stream_format": "pcm", "return_base64": True,
                   "verify": mode == "heard"}
            times = []
            for n in range(runs):
                *_, result = streaming.run(f"stream-{row['case']}-{mode}-{n}", job, stream=True)
                times.append(result.timings["first_audio"])
            row["first_audio_s"][mode] = statistics.median(times)
    return {"device": describe_device(model.device), "arch": arch, "nfe": args.nfe, "runs": runs,
            "asr_model": base.verify_asr_model, "rows": rows}


def report(result):
    print(f"\nverify's cost, {result['arch']} on {result['device']}, nfe {result['nfe']}, ASR {result['asr_model']}, "
          f"median of {result['runs']} (synthesis: sampling, decoding and, verified, hearing):")
    print(f"  {'case':<5} {'chunks':>6} {'plain s':>8} {'heard s':>8} {'overhead':>9} {'ASR s':>7} "
          f"{'retried s':>10} {'samplings':>9} {'overhead':>9}")
    for row in result["rows"]:
        plain, heard, retried = row["plain"], row["heard"], row["retried"]
        print(f"  {row['case']:<5} {plain['chunks']:6d} {plain['synthesis_s']:8.3f} {heard['synthesis_s']:8.3f} "
              f"{heard['overhead']:+9.1%} {heard['verify_asr_s']:7.3f} {retried['synthesis_s']:10.3f} "
              f"{retried['samplings']:9d} {retried['overhead']:+9.1%}")
    print("  heard: every chunk heard once, none sampled again (the goal: at most +30% on a GPU for the long text);"
          "\n  retried: VERIFY_ATTEMPTS=3 with every chunk heard wrong (random weights), the worst case.")
    for row in result["rows"]:
        first = row["first_audio_s"]
        print(f"  {row['case']} streamed: first audio {first['plain']:.3f} s unverified, {first['heard']:.3f} s heard "
              f"first ({first['heard'] - first['plain']:+.3f} s)")
