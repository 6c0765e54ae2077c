"""Numbers in num2words' languages (issue 24): every converter runs in a helper process with a
deadline, a number a converter cannot read never fails the job, the normaliser's budget counts the
digits that reach num2words, and a plain space joins digit groups only where nothing else is meant."""

import base64
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from num2words import CONVERTER_CLASSES, num2words

import number_words
import text_normalization as tn
from benchmarks.number_languages import sample
from conftest import REF_TEXT, REF_WAV, ROOT
from errors import LimitExceeded
from runpod_handler import Worker
from config import get_settings

#: Amharic's converter loops forever on this number (the red team's job: no answer in 190 s).
HANGS_IN_AMHARIC = "9852152"


def read(text, lang):
    return tn.numbers_in(text, lang)


@pytest.fixture
def reader():
    made = number_words.NumberReader(request_seconds=1.0)
    yield made
    made.close()


@pytest.fixture
def no_converter(monkeypatch):
    """num2words must not be reached: the helper process's entry point fails the test if called."""
    def refuse(lang, numbers):
        raise AssertionError(f"num2words was asked for {numbers[:3]} in {lang}")

    monkeypatch.setattr(number_words, "words", refuse)


def gone(pid: int) -> bool:
    """No such process any more, or only its exit status left for a parent to collect."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_until_gone(pid: int, seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if gone(pid):
            return True
        time.sleep(0.1)
    return gone(pid)


# --------------------------------------------------------------------------------------
# Item 1: a converter that never returns is stopped; the budget counts what reaches num2words
# --------------------------------------------------------------------------------------


def test_a_converter_that_never_returns_is_killed_by_the_deadline_and_the_next_request_is_served(reader):
    assert reader.words("de", ["5"]) == ["fünf"]
    hung = reader.pid
    with pytest.raises(LimitExceeded) as exc:
        reader.words("am", [HANGS_IN_AMHARIC])
    assert exc.value.message.startswith("Reading the numbers in 'am' took more than 1 s and was stopped")
    assert "normalize: false" in exc.value.message
    assert wait_until_gone(hung)
    assert reader.words("de", ["7", "-3.5"]) == ["sieben", "minus drei Komma fünf"]  # a fresh process
    assert reader.starts == 2 and reader.pid != hung


def test_the_deadline_grows_with_the_numbers_in_a_request(reader, monkeypatch):
    waited = []
    real = number_words._line
    monkeypatch.setattr(number_words, "_line", lambda child, deadline: waited.append(deadline - time.monotonic())
                        or real(child, deadline))
    reader.words("de", ["1"])
    reader.words("de", [str(n) for n in range(1000)])
    assert waited[-1] - waited[-2] == pytest.approx(999 * reader.per_number, abs=0.5)


@pytest.mark.usefixtures("tiny_model")
def test_a_job_whose_numbers_do_not_finish_fails_in_one_sentence_and_the_worker_serves_the_next(monkeypatch):
    """The red team's job: numbers a converter never finishes. It ends by the deadline with one
    sentence, and the next job is served (the helper process started afresh)."""
    class Hanging(number_words.NumberReader):
        def ask(self, lang, numbers):  # what Amharic does with this number, whatever the job's language
            return super().ask("am", [HANGS_IN_AMHARIC])

    hanging = Hanging(request_seconds=1.0)
    monkeypatch.setattr(number_words, "_reader", hanging)
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    job = {"voice_base64": base64.b64encode(REF_WAV.read_bytes()).decode(), "ref_text": REF_TEXT, "nfe_step": 4,
           "seed": 1, "text": "Selam 9852152.", "text_language": "de"}
    out = worker({"id": "hangs", "input": job})
    assert out["error"].startswith("Reading the numbers in 'am' took more than 1 s and was stopped"), out
    monkeypatch.setattr(number_words, "_reader", number_words.NumberReader())
    out = worker({"id": "after", "input": {**job, "text": "Ich habe 3 Katzen."}})
    assert out["normalized_text"] == "Ich habe drei Katzen.", out
    hanging.close()
    number_words._reader.close()


def test_amharic_is_not_offered_and_the_unsafe_list_names_real_converters():
    assert tn.UNSAFE_LANGUAGES and tn.UNSAFE_LANGUAGES <= set(CONVERTER_CLASSES)
    assert not any(tn.supported(lang) for lang in tn.UNSAFE_LANGUAGES)
    assert not tn.supported("am") and tn.supported("de") and tn.supported("hu") and tn.supported("ce")


def test_every_offered_language_reads_numbers_of_every_length_within_the_deadline():
    """The sweep's conclusion (benchmarks/number_languages.py) on a smaller sample: every language a
    job may name answers every length, sign and decimal it can be sent, in one request, by the
    worker's own deadline; a converter that hangs would raise LimitExceeded here."""
    numbers = sample(per_length=2, seed=7)
    lengths = {len(n.lstrip("-").split(".")[0]) for n in numbers}
    assert lengths == set(range(1, tn.MAX_DIGIT_RUN + 1)) and any("-" in n for n in numbers) \
        and any("." in n for n in numbers)
    reader = number_words.NumberReader()
    try:
        for lang in sorted(tn.num2words_languages() - set(tn.GRAMMAR_LANGUAGES)):
            said = reader.words(lang, numbers)
            assert len(said) == len(numbers) and said[numbers.index("7")], lang
    finally:
        reader.close()


def test_digits_past_the_budget_are_refused_before_any_converter_runs(no_converter):
    """The red team's 20,000 characters of 15-digit numbers in German: refused at once, as the
    grammars' characters are, instead of 14.6 s of converting first."""
    text = " ".join(["123456789012345"] * 1250)
    assert tn.grammar_chars(text, "de") == len(text)
    with pytest.raises(LimitExceeded) as exc:
        tn.normalize_all([text], tn.Reading(None, "de", 3_000))
    assert "at most 3000 are accepted per job (MAX_NORMALIZE_CHARS)" in exc.value.message
    with pytest.raises(LimitExceeded):  # counted across a job's texts, like the grammars'
        tn.normalize_all(["Zimmer 12345."] * 700, tn.Reading(None, "de", 3_000))


def test_the_budget_counts_the_characters_of_each_number():
    assert tn.grammar_chars("Zimmer 12 und 345, -7 Grad, 1.234,5 Euro.", "de") == 2 + 3 + 2 + 7
    assert tn.grammar_chars("Die Zimmer 101 102 103 sind frei.", "de") == len("101 102 103")
    assert tn.grammar_chars("Keine Zahlen & kein Ende.", "de") == 0


def test_a_text_without_digits_never_reaches_num2words(no_converter):
    for text in ("Hallo & Tschüss!", "Nur Wörter hier.", "% mehr? Nein: fünfzig."):
        assert tn.normalize(text, tn.Reading(None, "de")) == text


def test_two_threads_never_read_each_others_answers():
    """Two jobs at once (the HTTP front door) share one helper process: their requests do not interleave."""
    reader, failures = number_words.NumberReader(), []

    def job(offset):
        for k in range(15):
            numbers = [str(offset + k * 10 + n) for n in range(1 + k % 4)]
            if reader.words("de", numbers) != [num2words(int(n), lang="de") for n in numbers]:
                failures.append(numbers)

    threads = [threading.Thread(target=job, args=(1000 * t,)) for t in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        reader.close()
    assert failures == [] and reader.starts == 1


def test_the_helper_process_ends_at_the_end_of_its_input(reader):
    reader.words("de", ["1"])
    child = reader._child
    child.stdin.close()
    assert child.wait(timeout=30) == 0


SCRIPT = """
import os, signal, sys, threading, time
sys.path.insert(0, {root!r})
import number_words
reader = number_words.reader()
reader.words("de", ["1"])
print(reader.pid, flush=True)
threading.Thread(target=reader.words, args=("am", [{number!r}]), daemon=True).start()
time.sleep(0.5)  # the helper is now looping in Amharic's converter
{end}
"""


@pytest.mark.parametrize("end", ["os.kill(os.getpid(), signal.SIGKILL)", "sys.exit(0)"], ids=["killed", "exits"])
def test_the_helper_process_never_outlives_its_worker_even_while_a_converter_loops(end):
    """Killed (nothing of the worker runs: the helper sees its parent gone) or exiting normally with a
    request in flight (the worker kills it at exit, without waiting out the deadline)."""
    code = textwrap.dedent(SCRIPT).format(root=str(ROOT), number=HANGS_IN_AMHARIC, end=end)
    worker = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    helper = int(worker.stdout.split()[0])
    assert helper != os.getpid()
    assert wait_until_gone(helper), f"the helper process {helper} outlived its worker"


# --------------------------------------------------------------------------------------
# Item 2: a number a converter cannot read never fails the job
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang, written, spoken", [
    # the red team's cases: each was "Internal error" with a traceback
    ("ce", "-5 и 3,5", "-пхиъ и кхоъ, пхиъ"),  # KeyError on negatives and decimals: the parts it reads
    ("hu", "1.000.000.000.000.000.000 forint", "egy " + "nulla " * 18 + "forint"),  # past 15 digits: one by one
    ("az", "1.000.000.000.000.000.000 manat", "bir " + "sıfır " * 18 + "manat"),
    ("bn", "1000000000000000", "এক" + " শূন্য" * 15),  # NumberTooLargeError
    ("fa", "3.14159265358979", "سه. یک چهار یک پنج نه دو شش پنج سه پنج هشت نه هفت نه"),  # IndexError
    # a sweep's findings: negatives (cs, pl, sk, vi), decimals (it, tr), more than 10 digits (en_IN, kn, te)
    ("pl", "Było -5 stopni.", "Było -pięć stopni."),
    ("tr", "8,1 kilo", "sekiz, bir kilo"),
    ("it", "Sono 3619879,7 metri.",
     "Sono tre milioni e seicentodiciannovemilaottocentosettantanove, sette metri."),
    ("en_IN", "12345678901 rupees", "one two three four five six seven eight nine zero one rupees"),
], ids=lambda v: v if len(v) <= 8 else None)
def test_a_number_a_converter_cannot_read_is_read_in_parts(lang, written, spoken):
    assert read(written, lang) == spoken


def test_what_no_part_of_can_be_read_is_left_as_written(reader, monkeypatch):
    """Amharic's converter raises TypeError on 8297 and 12925 (the red team's), and reads their digits;
    a converter that reads nothing leaves every number as written."""
    said, errors = reader.ask("am", ["8297", "12925", "5"])
    assert said[:2] == [None, None] and said[2] and [name for _, name in errors] == ["TypeError", "TypeError"]
    monkeypatch.setattr(number_words, "words", lambda lang, numbers: [None] * len(numbers))
    text = "Zimmer -12, 3,5 kg, 1.234 Euro, 12345678901234567 und x-1."
    assert read(text, "de") == text


def test_the_helper_survives_every_exception_a_converter_raises(reader):
    said, errors = reader.ask("ce", ["-1", "3.5", "7"])
    assert said[2] and {name for _, name in errors} == {"KeyError"}
    said, errors = reader.ask("xx", ["1"])  # num2words' own NotImplementedError
    assert said == [None] and errors == [(0, "NotImplementedError")]
    assert reader.words("de", ["2"]) == ["zwei"] and reader.starts == 1


# --------------------------------------------------------------------------------------
# Item 3: three numbers stay three; a grouped number is one where nothing else is meant
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang, text", [
    ("de", "Die Zimmer {} sind frei."), ("fr", "Les chambres {} sont libres."),
    ("es", "Las habitaciones {} están libres."), ("hu", "A {} szobák szabadok."), ("az", "{} otaq boşdur."),
])
def test_numbers_apart_by_a_space_are_read_apart(lang, text):
    """As the English and Chinese grammars read "101 102 103": three numbers."""
    apart = " ".join(num2words(n, lang=lang) for n in (101, 102, 103))
    assert read(text.format("101 102 103"), lang) == text.format(apart)
    assert read(text.format("2023 2024 2025"), lang) == text.format(" ".join(num2words(n, lang=lang)
                                                                             for n in (2023, 2024, 2025)))


@pytest.mark.parametrize("lang, written, value", [
    ("de", "1 000 000", 1_000_000),  # a group that starts with 0: no number is written so
    ("fr", "100 000", 100_000),
    ("ru", "250 000", 250_000),
    ("fr", "12 345", 12_345),  # a first group of one or two digits
    ("fr", "1 234 567", 1_234_567),
    ("fr", "101\u00a0102", 101_102),  # a no-break space, a narrow one, a thin one: typeset thousands
    ("fr", "1\u202f000\u202f000", 1_000_000),
    ("pl", "2\u2009500", 2_500),
    ("de", "1.234.567", 1_234_567),  # the language's own group mark
])
def test_digit_groups_are_one_number_where_nothing_else_is_meant(lang, written, value):
    assert read(f"Es sind {written} Leute.", lang) == f"Es sind {num2words(value, lang=lang)} Leute."


@pytest.mark.parametrize("lang, written, parts", [
    ("de", "123 456", [123, " ", 456]),  # two plain groups of three: as likely two numbers
    ("de", "1 2 3", [1, " ", 2, " ", 3]),
    ("de", "123 4567", [123, " ", 4567]),
    ("de", "12 3456", [12, " ", 3456]),
    ("fr", "1 000\u00a0000", [1000, "\u00a0", 0]),  # not the same separator throughout
])
def test_digit_groups_that_may_be_several_numbers_are_read_apart(lang, written, parts):
    assert read(written, lang) == "".join(p if isinstance(p, str) else num2words(p, lang=lang) for p in parts)


def test_decimals_signs_and_long_numbers(monkeypatch):
    assert read("Ich habe 3 Äpfel und 1.234,5 Euro, -7 Grad.", "de") == \
        "Ich habe drei Äpfel und eintausendzweihundertvierunddreißig Komma fünf Euro, minus sieben Grad."
    assert read("(-7) und 5-3 und x-3 und −2", "de") == "(minus sieben) und fünf-drei und x-drei und minus zwei"
    assert read("Il pèse 1 234,5 kg.", "fr") == "Il pèse mille deux cent trente-quatre virgule cinq kg."
    # as many digits as num2words reads exactly through its float, then the fraction digit by digit
    assert read("123456,789012", "de").endswith("Komma sieben acht neun null eins zwei")
    assert read("1234567,890123", "de") == \
        "eine Million zweihundertvierunddreißigtausendfünfhundertsiebenundsechzig, acht neun null eins zwei drei"
    assert read("abc12345678901234567def", "de") == \
        "abc eins zwei drei vier fünf sechs sieben acht neun null eins zwei drei vier fünf sechs sieben def"
    assert read("٣ و ١٢", "ar") == "ثلاثة و اثنا عشر"  # any script's digits
    assert tn.digit_by_digit("305", "de") == "drei null fünf"


def test_reading_twice_changes_nothing():
    for lang, text in [("de", "Die Zimmer 101 102 103 sind frei."), ("fr", "Il y a 12 345 habitants."),
                       ("pl", "Było -5 stopni.")]:
        once = read(text, lang)
        assert read(once, lang) == once
