"""Cold start in fresh processes: stock, the worker itself (`python runpod_handler.py`, the SDK
included) and a bare `import torch`, from process spawn to model ready and to first audio; and a
fresh worker's first jobs against its later ones, timed from the handler's call."""

from __future__ import annotations

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

from benchmarks.inputs import REF_TEXT, ROOT
from benchmarks.stock import STOCK_COLD


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
            elif "first_audio" not in marks and "f5worker.engine: job " in line and " of audio in " in line:
                marks["first_audio"] = now
        proc.wait()
        watchdog.cancel()
    if proc.returncode != 0 or "first_audio" not in marks:
        return {"error": next((l for l in reversed(tail) if l.strip()), "?")}
    return marks


#: The RunPod SDK with its start() replaced: once the load at start (and the warm-up) is done, it
#: calls the streaming handler on FIRST_JOBS_INPUT's job FIRST_JOBS_COUNT times, timing each from the call to
#: its first piece and to its result, and prints them with the job's own timings.
SDK_TIMING_JOBS = """
import json, os, sys, threading, time

_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.remove(_here)
del sys.modules["runpod"]
import runpod as _real  # the real SDK, imported as the worker imports it
sys.path.insert(0, _here)


def start(config):
    main = sys.modules["__main__"]
    [load] = [t for t in threading.enumerate() if t.name == "load"] or [None]
    if load is not None:
        load.join()
    job = json.load(open(os.environ["FIRST_JOBS_INPUT"]))
    rows = []
    for n in range(int(os.environ["FIRST_JOBS_COUNT"])):
        called, first = time.perf_counter(), None
        for item in main.stream_handler({"id": f"first-jobs-{n}", "input": job["input"]}):
            if first is None and item.get("type") == "audio":
                first = time.perf_counter() - called
            last = item
        rows.append({"to_first_audio": first, "to_result": time.perf_counter() - called,
                     "timings": last.get("timings", {}), "error": last.get("error")})
    print("FIRST_JOBS " + json.dumps(rows), flush=True)
    sys.exit(0)


_real.serverless.start = start
"""


def first_jobs(cfg: dict, env: dict, count: int) -> list[dict] | dict:
    """A fresh worker's first `count` streamed jobs once its start is done (`python runpod_handler.py`,
    the SDK's start() replaced by SDK_TIMING_JOBS), each timed from the handler's call to its
    first audio and to its result, beside its own `timings`. The text has a symbol and a digit,
    so it reaches the English grammar as a text with a number does."""
    job = {"input": {"text": "Hello from F5-TTS, streamed in pieces as they are made.", "ref_text": cfg["ref_text"],
                     "nfe_step": cfg["nfe"], "voice_base64": base64.b64encode(Path(cfg["ref"]).read_bytes()).decode()}}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "runpod").mkdir()
        Path(folder, "runpod", "__init__.py").write_text(SDK_TIMING_JOBS)
        Path(folder, "job.json").write_text(json.dumps(job))
        timed_env = {**env, "STREAM": "true", "FIRST_JOBS_INPUT": str(Path(folder, "job.json")),
                     "FIRST_JOBS_COUNT": str(count),
                     "PYTHONPATH": os.pathsep.join([folder, env["PYTHONPATH"]])}
        proc = subprocess.run([sys.executable, str(ROOT / "runpod_handler.py")], cwd=folder, env=timed_env,
                              capture_output=True, text=True, timeout=900)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("FIRST_JOBS ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1][len("FIRST_JOBS "):])


def measure(args, arch, env):
    import checkpoints
    import model_cache
    from config import get_settings

    files = model_cache.resolve_model_files(get_settings().model_copy(update={"f5_model": arch}))
    device = "cuda" if args.device == "auto" and _has_cuda() else ("cpu" if args.device == "auto" else args.device)
    cfg = {"arch": files.arch, "checkpoint": str(files.checkpoint), "vocab": str(files.vocab),
           "vocoder_dir": str(files.vocoder_dir), "device": device, "nfe": args.nfe, "ref_text": REF_TEXT,
           "ref": str(checkpoints.f5_package_dir() / "infer/examples/basic/basic_ref_en.wav")}
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
            "runs": args.runs or 1, "results": results, "first_jobs": first_jobs(cfg, child_env, args.first_jobs)}


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def report(result):
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
    jobs = result.get("first_jobs")
    if isinstance(jobs, dict):
        print(f"a fresh worker's first jobs: failed: {jobs['error']}")
    elif jobs:
        done = sorted(job["to_result"] for job in jobs[len(jobs) // 2:] if not job["error"])
        steady = done[len(done) // 2] if done else None  # the later half's median: the steady state
        print("a fresh worker's first jobs, its start done (seconds from the handler's call; the job's own timings;"
              " against the later half's median, the steady state):")
        for n, job in enumerate(jobs, 1):
            if job["error"]:
                print(f"  job {n}: failed: {job['error']}")
                continue
            t = job["timings"]
            over = f", {job['to_result'] / steady - 1:+.0%} of steady" if steady else ""
            print(f"  job {n}: first audio {job['to_first_audio']:.3f} (timings {t.get('first_audio', 0):.3f}), "
                  f"result {job['to_result']:.3f} (timings {t.get('total', 0):.3f}, normalize "
                  f"{t.get('normalize', 0):.3f}){over}")
