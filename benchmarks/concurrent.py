"""Concurrent clients through real HTTP: the worker started as a load-balancing endpoint starts
it (`SERVE=http python runpod_handler.py`), short texts (one or two sentences) sent as streamed
`pcm` speech by 1, 4 and 16 clients at once, against the same requests one at a time.

Aggregate throughput is seconds of audio per second of wall time; time to first byte is from a
request's send to its first audio byte in the client's hands (p50 / p95 over the requests).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.inputs import REF_TEXT, ROOT, TWO_SENTENCES

SHORT_TEXTS = (TWO_SENTENCES, "Your table for four is ready, please follow me.",
               "The train to the airport leaves from platform two in ten minutes.")
RATE = 24_000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict, device: str, levels: list[int], voices_dir: Path):
    """The worker as an HTTP door, its base URL once /ping says it is ready."""
    import httpx

    port = free_port()
    child = {**os.environ, **env, "SERVE": "http", "PORT": str(port), "DEVICE": device, "S3_BUCKET": "",
             "VOICES_DIR": str(voices_dir), "WRITE_LOCAL_OUTPUT": "false", "WARMUP": "true",
             "MAX_CONCURRENT_REQUESTS": str(max(levels)), "LOG_LEVEL": "WARNING",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(ROOT / "runpod_handler.py")], cwd=ROOT, env=child,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 600
    while time.time() < deadline:
        try:
            code = httpx.get(f"{url}/ping").status_code
        except httpx.TransportError:
            code = None
        if code == 200:
            return proc, url
        if code == 503 or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the HTTP worker did not get ready: {proc.communicate()[1][-2000:]}")


def speak(url: str, text: str, nfe: int, seed: int) -> dict:
    """One streamed pcm request: its time to first byte, total time and seconds of audio."""
    import httpx

    body = {"model": "f5-tts", "voice": "bench", "input": text, "response_format": "pcm", "nfe_step": nfe,
            "seed": seed}
    sent, first, size = time.perf_counter(), None, 0
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read()[:300]!r}")
        for block in response.iter_bytes():
            if first is None and block:
                first = time.perf_counter()
            size += len(block)
    done = time.perf_counter()
    return {"sent": sent, "ttfb": first - sent, "done": done, "total": done - sent, "audio_s": size / 2 / RATE}


def requests_for(clients: int) -> list[tuple[str, int]]:
    return [(SHORT_TEXTS[n % len(SHORT_TEXTS)], n) for n in range(clients)]


def at_once(url: str, asks: list[tuple[str, int]], nfe: int) -> list[dict]:
    results, barrier = [None] * len(asks), threading.Barrier(len(asks))

    def client(n: int, text: str, seed: int):
        barrier.wait()
        results[n] = speak(url, text, nfe, seed)

    threads = [threading.Thread(target=client, args=(n, *ask)) for n, ask in enumerate(asks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summary(results: list[dict], wall: float) -> dict:
    ttfb = sorted(r["ttfb"] for r in results)
    p95 = ttfb[min(len(ttfb) - 1, round(0.95 * (len(ttfb) - 1)))]
    audio = sum(r["audio_s"] for r in results)
    return {"requests": len(results), "audio_s": audio, "wall_s": wall, "audio_per_s": audio / wall,
            "ttfb_p50": statistics.median(ttfb), "ttfb_p95": p95}


def measure(args, arch: str, env: dict) -> dict:
    import torch

    from benchmarks.warm import describe_device

    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    levels = [int(n) for n in (args.levels or "1,4,16").split(",")]
    rounds = args.runs or (3 if device == "cuda" else 1)
    voices_dir = Path(tempfile.mkdtemp(prefix="f5-bench-voices-"))
    proc, url = start_server(env, device, levels, voices_dir)
    try:
        import httpx

        import checkpoints

        reference = checkpoints.f5_package_dir() / "infer" / "examples" / "basic" / "basic_ref_en.wav"
        stored = httpx.post(f"{url}/v1/audio/voices", data={"name": "bench", "consent": "bench", "ref_text": REF_TEXT},
                            files={"audio_sample": ("ref.wav", reference.read_bytes())}, timeout=60)
        stored.raise_for_status()
        speak(url, SHORT_TEXTS[0], args.nfe, 0)  # warm-up: this length's kernels and graphs
        rows = []
        for clients in levels:
            asks = requests_for(clients)
            together, alone = [], []
            for _ in range(rounds):
                results = at_once(url, asks, args.nfe)
                together.append(summary(results, max(r["done"] for r in results) - min(r["sent"] for r in results)))
                results = [speak(url, text, args.nfe, seed) for text, seed in asks]
                alone.append(summary(results, sum(r["total"] for r in results)))
            pick = lambda runs: min(runs, key=lambda r: r["wall_s"])  # noqa: E731 - the best round of each
            rows.append({"clients": clients, "rounds": rounds, "concurrent": pick(together), "serial": pick(alone)})
    finally:
        proc.terminate()
        proc.wait(30)
    return {"device": describe_device(device), "arch": arch, "nfe": args.nfe, "rows": rows}


def report(result: dict) -> None:
    print(f"\n{result['arch']} on {result['device']}, nfe {result['nfe']}: streamed pcm speech over HTTP, "
          "short texts; concurrent clients against the same requests one at a time")
    head = (f"{'clients':>7} {'audio':>7} {'audio/s at once':>15} {'one at a time':>13} {'ratio':>6} "
            f"{'TTFB p50':>9} {'p95':>7} {'alone p50':>9}")
    print(head)
    print("-" * len(head))
    for row in result["rows"]:
        c, s = row["concurrent"], row["serial"]
        print(f"{row['clients']:7d} {c['audio_s']:6.1f}s {c['audio_per_s']:14.2f}  {s['audio_per_s']:12.2f} "
              f"{c['audio_per_s'] / s['audio_per_s']:5.2f}x {c['ttfb_p50']:8.3f}s {c['ttfb_p95']:6.3f}s "
              f"{s['ttfb_p50']:8.3f}s")
    print("audio/s: seconds of audio per second of wall time (the best of the rounds); ratio: at once / one at a "
          "time (the issue's goal on a GPU: 2.5x at 8 clients); TTFB: send to first audio byte")
