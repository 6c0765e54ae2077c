"""Text normalisation: the grammars' compile and load times, and the time to normalise texts.

Stock f5-tts has no normalisation (it speaks "$3.50" as written), so there is no stock column: the
figures are what a job pays for reading numbers right. Loading happens once per worker, at the
first job with a number or symbol in it; text without any costs a regex scan. The worst case per
character through a grammar, the slowest of dense texts of one form repeated, times
MAX_NORMALIZE_CHARS is the most one job's normalising can take.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.inputs import LONG_TEXT
from config import get_settings

#: The long text with a number, a date, money, a time or a unit in every sentence.
NUMBERED_TEXT = " ".join([
    "On March 5, 2024, the old clockmaker Elias opened his workshop at 7:30 am, as he had done since 1987.",
    "His 240 clocks told the hour, the phase of the moon and the tides, and each one cost at least $149.99.",
    "One evening a stranger arrived with a watch that had stopped at 11:58 pm on the 3rd of December.",
    "Elias weighed its 12 gears, 48.5 grams in all, and found that 1/3 of them were made of an unknown metal.",
    "He worked for 14 hours, until the temperature in the shop fell to -2°C and his lamp had burned 0.75 litres.",
    "By dawn the watch ran again, 25% faster than any clock he owned, and its hands moved backwards.",
    "The stranger paid him £200, left a note with the number +44 20 7946 0958 and walked 5 km into the forest.",
    "In the 1990s the villagers still told the story, and Dr. Hale wrote it down in chapter 11 of his book.",
])
CHINESE_TEXT = ("2024年3月5日上午7点30分，老钟表匠打开了店门。他一共做了240个钟，每个至少卖1,500元。"
                "一天晚上，一位陌生人带来一块停在11:58的怀表。表里有12个齿轮，总重48.5克，其中1/3用的是未知的金属。"
                "他工作了14个小时，店里的温度降到了-2℃。天亮时，怀表走得比别的钟快了25%。"
                "陌生人付了200元，留下电话13812345678，然后走了5公里进了森林。")


def items(n: int) -> str:
    return " ".join(f"Item {k} costs ${k}." for k in range(1, n + 1))


#: Dense texts, each one form repeated: the worst case per character through a grammar is the
#: slowest of these (language, repeated form). The first two are issue 24's: 26 s and 21.8 s at
#: 3,000 characters before numbers alone were read without a grammar.
DENSE = {
    "15-digit numbers": (None, "123456789012345 "),
    "7-digit numbers": (None, "1111111 "),
    "one-digit numbers": (None, "1 "),
    "two-digit numbers": (None, "12 "),
    "three-digit numbers": (None, "123 "),
    "negative numbers": (None, "-12 "),
    "ordinals": (None, "12th "),
    "decimals": (None, "0.123456789012345 "),
    "money": (None, "$99.99 "),
    "long amounts": (None, "$123456789012345 "),
    "percentages": (None, "12% "),
    "dates": (None, "March 5, 2024 "),
    "times": (None, "3:30 pm "),
    "fractions with a unit": (None, "41/54 km "),
    "units": (None, "99 ft "),
    "numbers joined by commas": (None, "12,12,12,12,12,12,12,12,12,12,12,12,12,12,12,12 "),
    "numbers joined by hyphens": (None, "1-2-3-4-5-6-7-8-9-1-2-3-4-5-6-7-8-9-1-2-3-4-5-6 "),
    "versions": (None, "1.2.3 "),
    "symbols": (None, "$%&@ "),
    "sums": (None, "2 + 2 = 4 "),
    "letters and digits": (None, "x3 12 "),
    "Chinese numbers": ("zh", "1234567 "),
    "Chinese dates": ("zh", "2024年3月5日 "),
    "Chinese temperatures": ("zh", "-3℃ "),
}


def dense(form: str, language: str | None, grammar_chars: int) -> str:
    """`form` repeated until at least `grammar_chars` of it reach a grammar (or 40 times as many in all)."""
    import text_normalization as tn

    text = form
    while tn.grammar_chars(text, language) < grammar_chars and len(text) < 40 * grammar_chars:
        text += form
    return text


def worst_case(reading_of, runs: int, grammar_chars: int) -> dict:
    """Each dense text's time per character through a grammar, the slowest first: CPU seconds of
    the one thread that normalises (its wall time on an idle machine; on a busy one the wall time
    grows with the load, the CPU time hardly), the best of `runs`."""
    import text_normalization as tn

    rows = {}
    for name, (language, form) in DENSE.items():
        text = dense(form, language, grammar_chars)
        through = tn.grammar_chars(text, language)
        cpu, wall = min(_timed(lambda: tn.normalize(text, reading_of(language))) for _ in range(runs))
        rows[name] = {"chars": len(text), "grammar_chars": through, "cpu_s": cpu, "wall_s": wall,
                      "ms_per_char": cpu * 1000 / through if through else 0.0}
    return dict(sorted(rows.items(), key=lambda row: -row[1]["ms_per_char"]))


def _timed(work) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(args, models_dir: Path) -> dict:
    import text_normalization as tn

    root = tn.grammar_root(models_dir)
    result = {"compile_s": {}, "load_s": {}, "texts": {}}
    for language in tn.GRAMMAR_LANGUAGES:
        if not tn.grammar_is_complete(tn.grammar_dir(root, language), language):
            started = time.perf_counter()
            tn.build_grammar(root, language)
            result["compile_s"][language] = time.perf_counter() - started
    grammars = tn.Grammars(root, allow_build=False)
    for language in tn.GRAMMAR_LANGUAGES:
        started = time.perf_counter()
        grammars.get(language)  # import of the library and pynini included, for the first
        result["load_s"][language] = time.perf_counter() - started
    runs = args.runs or 5
    reading = tn.Reading(grammars, None, max_grammar_chars=10**9)
    cases = {"long text (bench.py's, no digits)": LONG_TEXT, "long text, a number in every sentence": NUMBERED_TEXT,
             "Chinese paragraph, numbers in every sentence": CHINESE_TEXT}
    for name, text in cases.items():
        times = []
        for _ in range(runs + 1):  # the first is a warm-up
            started = time.perf_counter()
            spoken = tn.normalize(text, reading)
            times.append(time.perf_counter() - started)
        result["texts"][name] = {"chars": len(text), "grammar_chars": tn.grammar_chars(text),
                                 "spoken_chars": len(spoken), "median_s": statistics.median(times[1:])}
    # A job at MAX_NORMALIZE_CHARS: the most grammar work one job can ask for.
    limit = get_settings().max_normalize_chars
    per_item = tn.grammar_chars(items(100)) / 100
    text = items(int(limit / per_item))
    started = time.perf_counter()
    tn.normalize(text, reading)
    result["at_limit"] = {"grammar_chars": tn.grammar_chars(text), "seconds": time.perf_counter() - started}
    # The worst case per character, and what it makes of the limit: the bound on one job's normalising.
    fill = max(40, min(600, limit // 5))
    rows = worst_case(lambda language: tn.Reading(grammars, language, max_grammar_chars=10**9), min(runs, 2), fill)
    name, worst = next(iter(rows.items()))
    result["dense"] = rows
    result["worst"] = {"text": name, "ms_per_char": worst["ms_per_char"], "max_normalize_chars": limit,
                       "bound_s": worst["ms_per_char"] * limit / 1000}
    return result


def report(result: dict) -> None:
    print("text normalisation (stock f5-tts: none; it reads digits and symbols as written)")
    for language, seconds in result["compile_s"].items():
        print(f"  compiled the {language} grammar in {seconds:.1f} s (prefetch does this once per volume)")
    for language, seconds in result["load_s"].items():
        print(f"  load {language} grammar: {seconds:.2f} s (once per worker, at the first job that needs it)")
    for name, r in result["texts"].items():
        print(f"  {name}: {r['chars']} chars, {r['grammar_chars']} through a grammar -> {r['spoken_chars']} "
              f"spoken; {r['median_s'] * 1000:.1f} ms")
    limit = result["at_limit"]
    print(f"  about the most one job may ask at MAX_NORMALIZE_CHARS ({limit['grammar_chars']} characters "
          f"through a grammar): {limit['seconds']:.2f} s")
    print("  dense texts, one form repeated (time per character through a grammar, the slowest first):")
    for name, r in result["dense"].items():
        print(f"    {name}: {r['chars']} chars, {r['grammar_chars']} through a grammar, {r['cpu_s'] * 1000:.0f} ms "
              f"CPU ({r['wall_s'] * 1000:.0f} ms wall)" + (f", {r['ms_per_char']:.2f} ms a character"
                                                          if r["grammar_chars"] else ""))
    worst = result["worst"]
    print(f"  worst case {worst['ms_per_char']:.2f} ms of CPU a character ({worst['text']}): at most about "
          f"{worst['bound_s']:.1f} s for a job at MAX_NORMALIZE_CHARS={worst['max_normalize_chars']}")
