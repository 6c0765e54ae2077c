"""Text normalisation: the grammars' compile and load times, and the time to normalise texts.

Stock f5-tts has no normalisation (it speaks "$3.50" as written), so there is no stock column: the
figures are what a job pays for reading numbers right. Loading happens once per worker, at the
first job with a number or symbol in it; text without any costs a regex scan.
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
    per_item = tn.grammar_chars(items(100)) / 100
    text = items(int(get_settings().max_normalize_chars / per_item))
    started = time.perf_counter()
    tn.normalize(text, reading)
    result["at_limit"] = {"grammar_chars": tn.grammar_chars(text), "seconds": time.perf_counter() - started}
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
