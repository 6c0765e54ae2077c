"""Resampling a 15 s voice to 24 kHz: torchaudio (what stock and this worker used) against soxr,
at ordinary and awkward rates, each in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys


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


def measure(rates=RESAMPLE_RATES) -> dict:
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


def report(result):
    print(f"\nresampling {result['seconds_of_voice']} s of voice to 24 kHz on {result['device']} "
          "(fresh process each; address space capped at 16 GB)")
    print(f"{'rate':>8}  {'torchaudio':>22}  {'soxr':>20}  {'time ratio':>10}")
    show = lambda r: f"{r['s']:7.3f} s {r['extra_mb']:7.0f} MB" if not r.get("error") else f"failed: {r['error']}"
    for row in result["rows"]:
        t, x = row["torchaudio"], row["soxr"]
        ratio = f"{t['s'] / x['s']:9.0f}x" if not t.get("error") and not x.get("error") else "-"
        print(f"{row['rate']:>8}  {show(t):>22}  {show(x):>20}  {ratio:>10}")
