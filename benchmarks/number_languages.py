"""Every num2words language over many numbers of every length a job can send it: hangs, exceptions,
the slowest call. What `text_normalization.UNSAFE_LANGUAGES` is made from.

    python -m benchmarks.number_languages                 # all converters, 40 numbers per length
    python -m benchmarks.number_languages --per-length 5 --languages de,am --json out.json
    python -m benchmarks.number_languages --cost          # the helper process: start, requests, memory

Each number goes alone to num2words' helper process (number_words.py), with a deadline of its own:
a converter that does not finish is a hang (the helper is killed and started again), and after
`--hangs` of them a language is not tried further. The times are round trips from the worker's
side, a tenth of a millisecond of them the pipe's. Numbers are what `text_normalization.numbers_in`
sends: 1 to 15 digits (grouped ones, "1.234.567" or "1 234 567", arrive as their digits), the same
negative, decimals of up to MAX_DECIMAL_DIGITS digits in all, and the ten digits.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import number_words  # noqa: E402
import text_normalization as tn  # noqa: E402
from errors import LimitExceeded  # noqa: E402

#: One number slower than this makes a language unsafe: most take under 0.5 ms and the slowest
#: seen 40 ms (on a loaded 2-core CPU), so a converter past it is looping, not reading.
SLOW_SECONDS = 0.25


def sample(per_length: int, seed: int = 0) -> list[str]:
    """Numbers as numbers_in sends them: every length, the edges of each (10..0, 99..9), negatives,
    decimals, the digits."""
    rng = random.Random(seed)
    numbers = [str(d) for d in range(10)]
    for length in range(1, tn.MAX_DIGIT_RUN + 1):
        low, high = 10 ** (length - 1) if length > 1 else 0, 10 ** length - 1
        picked = [low, high, low + 1] + [rng.randint(low, high) for _ in range(per_length)]
        numbers += [str(n) for n in picked] + [f"-{n}" for n in picked[::2]]
        if length < tn.MAX_DECIMAL_DIGITS:
            fraction = tn.MAX_DECIMAL_DIGITS - length
            numbers += [f"{rng.randint(low, high)}.{rng.randint(0, 10 ** rng.randint(1, fraction) - 1)}"
                        for _ in range(max(1, per_length // 2))]
            numbers.append(f"-{rng.randint(low, high)}.5")
    return list(dict.fromkeys(numbers))


def sweep_language(lang: str, numbers: list[str], hang_seconds: float, max_hangs: int) -> dict:
    reader = number_words.NumberReader(request_seconds=hang_seconds, per_number=0.0)
    found = {"numbers": 0, "hangs": [], "exceptions": {}, "slowest_s": 0.0, "slowest": None, "times_s": []}
    try:
        reader.ask("en", ["1"])  # started before the clock runs: its start is measured by --cost
        for number in numbers:
            started = time.perf_counter()
            try:
                _, errors = reader.ask(lang, [number])
            except LimitExceeded:
                found["hangs"].append(number)
                if len(found["hangs"]) >= max_hangs:
                    break
                continue
            took = time.perf_counter() - started
            found["numbers"] += 1
            found["times_s"].append(took)
            if took > found["slowest_s"]:
                found["slowest_s"], found["slowest"] = took, number
            for _, error in errors:
                examples = found["exceptions"].setdefault(error, [])
                examples.append(number)
    finally:
        reader.close()
    times = found.pop("times_s")
    found["median_ms"] = round(statistics.median(times) * 1000, 3) if times else None
    found["unsafe"] = bool(found["hangs"]) or found["slowest_s"] > SLOW_SECONDS
    return found


def sweep(languages: list[str], per_length: int, hang_seconds: float, max_hangs: int) -> dict:
    numbers = sample(per_length)
    result = {"numbers_per_language": len(numbers), "hang_seconds": hang_seconds, "slow_seconds": SLOW_SECONDS,
              "languages": {}}
    for lang in languages:
        result["languages"][lang] = sweep_language(lang, numbers, hang_seconds, max_hangs)
    result["unsafe"] = sorted(lang for lang, found in result["languages"].items() if found["unsafe"])
    return result


def report(result: dict) -> None:
    print(f"{result['numbers_per_language']} numbers per language, {result['hang_seconds']} s each before it counts "
          f"as a hang; unsafe past {result['slow_seconds'] * 1000:.0f} ms for one number")
    print(f"{'lang':7} {'read':>5} {'hangs':>5} {'median ms':>9} {'slowest ms':>10}  slowest number / exceptions")
    for lang, found in result["languages"].items():
        errors = ", ".join(f"{name} x{len(examples)} (e.g. {examples[0]})"
                           for name, examples in found["exceptions"].items())
        print(f"{lang:7} {found['numbers']:5d} {len(found['hangs']):5d} {found['median_ms'] or 0:9.3f} "
              f"{found['slowest_s'] * 1000:10.1f}  {found['slowest']}  {errors}"
              + (f"  HANGS on {', '.join(found['hangs'][:3])}" if found["hangs"] else ""))
    print("unsafe:", ", ".join(result["unsafe"]) or "none")


def measure_cost(runs: int) -> dict:
    """The helper process's start, a request of 1, 10 and 100 numbers (15-digit German ones, the
    slowest kind), and its memory."""
    reader = number_words.NumberReader()
    started = time.perf_counter()
    reader.words("de", ["1"])
    cost = {"start_s": time.perf_counter() - started, "request_ms": {}}
    rng = random.Random(1)
    for count in (1, 10, 100):
        for digits in (3, 15):
            numbers = [str(rng.randint(10 ** (digits - 1), 10 ** digits - 1)) for _ in range(count)]
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                reader.words("de", numbers)
                times.append(time.perf_counter() - started)
            cost["request_ms"][f"{count} x {digits} digits"] = statistics.median(times) * 1000
    status = Path(f"/proc/{reader.pid}/status").read_text()
    cost["helper_rss_mb"] = int(status.split("VmRSS:")[1].split()[0]) / 1024
    reader.close()
    return cost


def report_cost(cost: dict) -> None:
    print(f"helper process: started and first answer in {cost['start_s']:.3f} s, RSS {cost['helper_rss_mb']:.1f} MB")
    for case, ms in cost["request_ms"].items():
        print(f"  request of {case}: {ms:.2f} ms")


def main() -> None:
    from num2words import CONVERTER_CLASSES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--languages", help="comma-separated (default: every num2words converter but the grammars')")
    p.add_argument("--per-length", type=int, default=40, help="random numbers of each length (default 40)")
    p.add_argument("--hang-seconds", type=float, default=2.0, help="a number unanswered this long is a hang")
    p.add_argument("--hangs", type=int, default=3, help="hangs after which a language is not tried further")
    p.add_argument("--cost", action="store_true", help="measure the helper process instead")
    p.add_argument("--runs", type=int, default=20, help="with --cost: runs of each request (median)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.cost:
        result = measure_cost(args.runs)
        report_cost(result)
    else:
        languages = args.languages.split(",") if args.languages else \
            sorted(set(CONVERTER_CLASSES) - set(tn.GRAMMAR_LANGUAGES))
        result = sweep(languages, args.per_length, args.hang_seconds, args.hangs)
        report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
