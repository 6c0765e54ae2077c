"""Stock f5-tts against this worker, on the same model, inputs and seed, in one run.

    python bench.py                    # warm synthesis: one chunk and long text, medians, ratios, RTF, memory
    python bench.py --cold             # cold start in fresh processes: process start to model ready / first audio
    python bench.py --arch tiny --runs 2   # fast on a CPU

Weights are random (written into a models directory of the bench's own, laid out as `prefetch`
lays out the volume): for the real architectures the compute per step is that of the published
weights; the audio is noise. On a GPU the default architecture is F5TTS_v1_Base, on a CPU the
tiny test model. Stock means f5-tts 1.1.22's `infer_batch_process` (one thread per chunk, batch 1).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REF_TEXT = "Some call me nature, others call me mother nature."
ONE_CHUNK = ("The quick brown fox jumps over the lazy dog while the evening sun sets slowly behind the distant "
             "hills, painting the sky in shades of orange, pink and a deep violet blue.")
LONG_TEXT = " ".join([
    "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker named Elias.",
    "Every morning he opened the shutters of his workshop and greeted the people who passed by on their way to the market.",
    "His clocks were known far and wide, for each one told not only the hour but also the phase of the moon and the tides.",
    "One winter evening a stranger arrived, wrapped in a grey cloak, carrying a broken pocket watch that no one could mend.",
    "Elias turned it over in his hands and noticed that the gears were made of a metal he had never seen before.",
    "He worked through the night, polishing each wheel and spring, listening to the quiet ticking of a hundred clocks around him.",
    "By dawn the watch was running again, but its hands moved backwards, slowly and steadily, as if counting down to something.",
    "The stranger smiled, thanked him, and left a single silver coin on the table before vanishing into the morning mist.",
    "In the weeks that followed, strange things began to happen in the village, small at first and then harder to ignore.",
    "Flowers bloomed in the snow, the river ran a little faster, and the church bell rang thirteen times at midnight.",
    "The children said the forest was whispering, and the old men at the inn swore that their memories were growing younger.",
    "Elias knew that the watch was the cause, and so he set out into the forest to find the stranger and return the coin.",
    "He walked for three days, following a path that seemed to appear only in front of him and to vanish behind his steps.",
    "On the fourth day he reached a clearing where time itself seemed to pause, and the stranger was waiting for him there.",
    "They spoke for hours about the nature of time, about beginnings and endings, and about the clocks that measure our lives.",
    "When Elias finally returned home, the village was as it had always been, and the watch on his bench had stopped for good.",
])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", help="F5TTS_v1_Base (default on a GPU) or tiny (default on a CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=int, help="timed runs per case (median), after one warm-up; default 5 on a GPU, "
                   "1 on a CPU; with --cold: cold starts of each (default 1)")
    p.add_argument("--nfe", type=int, default=32)
    p.add_argument("--cases", default="one,long")
    p.add_argument("--max-batch-frames", type=int, default=None, help="this worker's memory budget (MAX_BATCH_FRAMES)")
    p.add_argument("--variants", default="ours",
                   help="our configurations to time against stock, comma-separated: ours (the defaults), eager "
                        "(COMPILE=false), no-graphs (COMPILE=false CUDA_GRAPHS=false)")
    p.add_argument("--models-dir", help="where the random-weight models go (default: a temporary folder)")
    p.add_argument("--cold", action="store_true", help="time cold starts in fresh processes instead")
    p.add_argument("--resample", action="store_true",
                   help="time and memory of resampling a 15 s voice to 24 kHz: torchaudio (what stock and this "
                        "worker used) against soxr, at ordinary and awkward rates, each in a fresh process")
    p.add_argument("--rates", help="with --resample: the voice rates to try, comma-separated (default: "
                   "44100, 48000, 22050, 22051, 23999, 383999)")
    p.add_argument("--drop-caches", action="store_true", help="drop the page cache before each cold start (root)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


# --------------------------------------------------------------------------------------
# A models directory laid out like the volume after `prefetch`
# --------------------------------------------------------------------------------------


def prepare_models(arch: str) -> dict:
    """Random weights of `arch` in the bench's models dir; the environment of a worker using them."""
    import model_cache

    env = {"MODELS_DIR": str(model_cache.MODELS_DIR), "F5_MODEL": arch, "ALLOW_MODEL_DOWNLOAD": "false",
           "PREFETCH_ASR": "false"}
    settings = model_cache.SETTINGS.model_copy(update={"f5_model": arch, "allow_model_download": False})
    if arch == "tiny":
        if not (model_cache.TINY_DIR / "model.safetensors").is_file():
            model_cache.make_test_model()
        return env
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_hub import place_in_hub_cache

    repo, filename = model_cache.HUB_CHECKPOINTS[arch]
    try:
        files = model_cache.resolve_model_files(settings)
    except model_cache.ModelLoadError:
        backbone, layers = model_cache.model_config(arch)
        scratch = model_cache.MODELS_DIR / "scratch"
        files = model_cache.ModelFiles(arch, backbone, layers, scratch / "model.safetensors",
                                       model_cache.f5_package_dir() / "infer" / "examples" / "vocab.txt",
                                       scratch / "vocos")
        print(f"writing random {arch} weights into {model_cache.MODELS_DIR} ...", file=sys.stderr)
        model_cache.write_random_model(files, model_cache.VOCOS_ARCH)
        place_in_hub_cache(model_cache.HUB_DIR, repo, filename, files.checkpoint.read_bytes())
        for name in model_cache.VOCOS_FILES:
            place_in_hub_cache(model_cache.HUB_DIR, model_cache.VOCOS_REPO, name, (files.vocoder_dir / name).read_bytes())
        import shutil

        shutil.rmtree(scratch)
        files = model_cache.resolve_model_files(settings)
    if not model_cache.fp16_copy_is_current(files):
        model_cache.write_fp16_artifact(files)
    return env


# --------------------------------------------------------------------------------------
# Warm synthesis
# --------------------------------------------------------------------------------------


def stock_synthesize(model, reference, text, nfe, seed):
    """f5-tts's own path: chunk_text sized by infer_process's formula, then infer_batch_process."""
    import torch
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process
    from f5_tts.model.utils import seed_everything

    import synthesis

    ref_text = synthesis.normalise_ref_text(REF_TEXT)  # what preprocess_ref_audio_text returns
    seconds = len(reference) / model.sample_rate
    max_chars = int(len(ref_text.encode("utf-8")) / seconds * (22 - seconds))
    seed_everything(seed)
    wave, rate, _ = next(infer_batch_process(
        (torch.from_numpy(reference)[None, :], model.sample_rate), ref_text, chunk_text(text, max_chars),
        model.cfm, model.vocoder, nfe_step=nfe, device=model.device, progress=None))
    return wave


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


def warm(args, arch):
    import numpy as np
    import soundfile as sf

    import audio_io
    import lean_imports
    import loaded_model
    import model_cache

    lean_imports.import_f5_model()  # stock's utils_infer then imports without the training stack
    settings = model_cache.SETTINGS.model_copy(update={"f5_model": arch})
    stock_model = loaded_model.load_model(settings.model_copy(update={"compile": False, "cuda_graphs": False}))
    variants = {name: loaded_model.load_model(settings.model_copy(update=VARIANTS[name]))
                for name in args.variants.split(",")}
    audio, rate = sf.read(model_cache.f5_package_dir() / "infer/examples/basic/basic_ref_en.wav", dtype="float32")
    reference = audio_io.prepare_reference(audio, rate, stock_model.sample_rate, 12.0, 1.0)
    budget = args.max_batch_frames or model_cache.SETTINGS.max_batch_frames
    cuda = stock_model.device.startswith("cuda")
    runs = args.runs or (5 if cuda else 1)
    texts = {"one": ONE_CHUNK, "long": LONG_TEXT}
    rows = []
    for case in args.cases.split(","):
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


def print_warm(result):
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


# --------------------------------------------------------------------------------------
# Cold start
# --------------------------------------------------------------------------------------

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

def run_worker(cfg: dict, env: dict) -> dict:
    """The worker itself, as RunPod starts it (`python runpod_handler.py`, the SDK included), on
    one job from test_input.json. Marks are when its log lines arrive: the model loaded, the job
    done."""
    job = {"input": {"text": "Hello there.", "ref_text": cfg["ref_text"], "nfe_step": cfg["nfe"],
                     "voice_base64": base64.b64encode(Path(cfg["ref"]).read_bytes()).decode()}}
    with tempfile.TemporaryDirectory() as cwd:
        Path(cwd, "test_input.json").write_text(json.dumps(job))
        spawned = time.time()
        proc = subprocess.Popen([sys.executable, str(ROOT / "runpod_handler.py")], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(900, proc.kill)  # the read below waits for the worker's output
        watchdog.start()
        marks, tail = {}, []
        for line in proc.stdout:
            now = time.time() - spawned
            tail = (tail + [line.rstrip()])[-20:]
            if "ready" not in marks and "f5worker.loaded_model: loaded " in line:
                marks["ready"], marks["load_log"] = now, line.split("f5worker.loaded_model: ", 1)[1].strip()
            elif "first_audio" not in marks and "f5worker.handler: job " in line and " of audio in " in line:
                marks["first_audio"] = now
        proc.wait()
        watchdog.cancel()
    if proc.returncode != 0 or "first_audio" not in marks:
        return {"error": next((l for l in reversed(tail) if l.strip()), "?")}
    return marks


def cold(args, arch, env):
    import model_cache

    files = model_cache.resolve_model_files(model_cache.SETTINGS.model_copy(update={"f5_model": arch}))
    device = "cuda" if args.device == "auto" and _has_cuda() else ("cpu" if args.device == "auto" else args.device)
    cfg = {"arch": files.arch, "checkpoint": str(files.checkpoint), "vocab": str(files.vocab),
           "vocoder_dir": str(files.vocoder_dir), "device": device, "nfe": args.nfe, "ref_text": REF_TEXT,
           "ref": str(model_cache.f5_package_dir() / "infer/examples/basic/basic_ref_en.wav")}
    child_env = {**os.environ, **env, "DEVICE": device, "S3_BUCKET": "", "WRITE_LOCAL_OUTPUT": "false",
                 "LOG_LEVEL": "INFO", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    bare = "import time; s=time.time(); import torch; print('MARKS {\"start\": %r, \"torch\": %r}' % (s, time.time()))"
    runs: dict[str, list] = {"bare import torch": [], "stock": [], "ours": []}
    for _ in range(args.runs or 1):  # interleaved, so that a slow spell of the host hits all three
        for name, measured in runs.items():
            if args.drop_caches:
                subprocess.run(["sync"], check=False)
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            if name == "ours":
                measured.append(run_worker(cfg, child_env))
                continue
            spawned = time.time()
            proc = subprocess.run([sys.executable, "-c", bare if name == "bare import torch" else STOCK_COLD,
                                   json.dumps(cfg)], env=child_env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=900)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("MARKS ")]
            if proc.returncode != 0 or not lines:
                error = (proc.stderr.strip().splitlines() or ["?"])[-1]
                if "ModuleNotFoundError" in error:
                    error += " (stock's imports need `pip install -r requirements-bench.txt`)"
                measured.append({"error": error})
                continue
            measured.append({k: v - spawned for k, v in json.loads(lines[-1][6:]).items()})
    results = {}
    for name, measured in runs.items():
        failed = [m for m in measured if "error" in m]
        if failed:
            results[name] = failed[0]
            continue
        results[name] = {key: statistics.median(m[key] for m in measured) for key in measured[0]
                         if isinstance(measured[0][key], float)}
        results[name]["runs"] = [{k: v for k, v in m.items() if k != "load_log"} for m in measured]
        if "load_log" in measured[0]:
            results[name]["load_log"] = [m["load_log"] for m in measured]
    return {"device": device, "arch": arch, "page_cache": "dropped" if args.drop_caches else "warm",
            "runs": args.runs or 1, "results": results}


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def print_cold(result):
    print(f"\ncold start, {result['arch']} on {result['device']}, page cache {result['page_cache']}"
          f" (seconds from process spawn; median of {result['runs']})")
    base = result["results"].get("bare import torch", {}).get("torch")
    print(f"{'':<18} {'ready':>8} {'first audio':>12} {'ready / bare torch':>19} {'first audio / bare torch':>25}")
    for name, r in result["results"].items():
        if "error" in r:
            print(f"{name:<18} failed: {r['error']}")
            continue
        if name == "bare import torch":
            print(f"{name:<18} {r['torch']:8.2f}  (import torch alone)")
            continue
        ratio = lambda key: f"{r[key] / base:.2f}" if base else "-"
        print(f"{name:<18} {r['ready']:8.2f} {r['first_audio']:12.2f} "
              f"{ratio('ready'):>19} {ratio('first_audio'):>25}")
        for line in r.get("load_log", []):
            print(f"{'':<18} {line}")
    s, o = result["results"].get("stock", {}), result["results"].get("ours", {})
    if "ready" in s and "ready" in o:
        print(f"ours vs stock: ready {s['ready'] / o['ready']:.2f}x sooner, first audio "
              f"{s['first_audio'] / o['first_audio']:.2f}x sooner")
    print("stock: a script that imports f5-tts and loads as its infer_batch_process callers do; ours: the worker"
          " itself (`python runpod_handler.py`, RunPod SDK included) on one test_input.json job")


# --------------------------------------------------------------------------------------
# Resampling a voice
# --------------------------------------------------------------------------------------

RESAMPLE_RATES = (44_100, 48_000, 22_050, 22_051, 23_999, 383_999)
RESAMPLE_CHILD = """
import json, resource, sys, time
import numpy as np
lib, rate = sys.argv[1], int(sys.argv[2])
if lib == "torchaudio":
    import torch, torchaudio.functional as AF
    fn = lambda x: AF.resample(torch.from_numpy(x), rate, 24000).numpy()
else:
    import soxr
    fn = lambda x: soxr.resample(x, rate, 24000, quality="HQ")
x = (0.1 * np.random.default_rng(0).standard_normal(15 * rate)).astype(np.float32)
resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))  # what would take more fails instead
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    fn(x)
    error = None
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({"s": time.perf_counter() - start, "error": error,
                  "extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def resample_bench(rates=RESAMPLE_RATES) -> dict:
    rows = []
    for rate in rates:
        row = {"rate": rate}
        for lib in ("torchaudio", "soxr"):
            try:
                proc = subprocess.run([sys.executable, "-c", RESAMPLE_CHILD, lib, str(rate)], capture_output=True,
                                      text=True, timeout=300)
                row[lib] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else \
                    {"error": (proc.stderr.strip().splitlines() or ["killed"])[-1][:60]}
            except subprocess.TimeoutExpired:
                row[lib] = {"error": "over 300 s"}
        rows.append(row)
    return {"device": f"cpu ({os.cpu_count()} cores)", "seconds_of_voice": 15, "rows": rows}


def print_resample(result):
    print(f"\nresampling {result['seconds_of_voice']} s of voice to 24 kHz on {result['device']} "
          "(fresh process each; address space capped at 16 GB)")
    print(f"{'rate':>8}  {'torchaudio':>22}  {'soxr':>20}  {'time ratio':>10}")
    show = lambda r: f"{r['s']:7.3f} s {r['extra_mb']:7.0f} MB" if not r.get("error") else f"failed: {r['error']}"
    for row in result["rows"]:
        t, x = row["torchaudio"], row["soxr"]
        ratio = f"{t['s'] / x['s']:9.0f}x" if not t.get("error") and not x.get("error") else "-"
        print(f"{row['rate']:>8}  {show(t):>22}  {show(x):>20}  {ratio:>10}")


def main():
    args = parse_args()
    if args.resample:  # no model involved
        result = resample_bench([int(r) for r in args.rates.split(",")] if args.rates else RESAMPLE_RATES)
        print_resample(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    # The settings are read once, when model_cache is imported: set them first.
    os.environ["MODELS_DIR"] = args.models_dir or str(Path(tempfile.gettempdir()) / "f5-bench-models")
    os.environ.update(ALLOW_MODEL_DOWNLOAD="false", PREFETCH_ASR="false")
    if args.device != "auto":
        os.environ["DEVICE"] = args.device
    from config import settings_or_exit

    settings_or_exit()
    import model_cache  # noqa: F401  (before torch)
    import torch

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    arch = args.arch or ("F5TTS_v1_Base" if on_gpu else "tiny")
    env = prepare_models(arch)
    if args.cold:
        result = cold(args, arch, env)
        print_cold(result)
    else:
        result = warm(args, arch)
        print_warm(result)
    result.update(date=time.strftime("%Y-%m-%d"), command=" ".join(["python", *sys.argv]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
