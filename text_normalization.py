"""Written forms to spoken words before chunking: numbers, money, dates, times, units, symbols,
abbreviations, URLs and e-mail addresses. F5-TTS was trained on spoken-form text: it skips or
garbles "$3.50", "1990s" and "9:30 pm".

English and Chinese are read by WeTextProcessing's grammars (weighted finite-state transducers,
compiled into `<models>/f5-tts/tn/`, loaded once per worker and only when a text needs them), after
a pre-pass for what those grammars read wrongly (money with cents, decades, phone numbers, some
units and abbreviations, URLs). Any other language gets its numbers read by num2words, and nothing
else changes.

A grammar's time grows faster than the length of its input (tens of milliseconds for a short
sentence), so only the words around each number or symbol reach it, in pieces of bounded length;
a text with no digit, symbol or known abbreviation is returned as it came, at the cost of a regex.
A number alone in a piece is said in our own words, and a long one reaches the grammar as a
two-digit stand-in (english_numbers): a grammar's costliest input, digits, costs it no more than
words do, about 2 to 3 ms a character on a 2-core CPU. Reading stops at the first piece whose words
take the spoken form past its limit (`Reading.max_spoken_chars`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import english_numbers
import number_words
from atomic import temp_name
from errors import LimitExceeded, WorkerSetupError, preview

log = logging.getLogger("f5worker.text_normalization")

#: The grammars' own languages; any other code must be one num2words speaks.
GRAMMAR_LANGUAGES = ("en", "zh")
WETEXT_VERSION = "1.2.0"
#: Built into the Chinese grammar: its defaults delete 儿 and interjections (啊) and rewrite
#: full-width punctuation, and it ignores these options when compiled files already exist.
ZH_OPTIONS = dict(remove_erhua=False, remove_interjections=False, full_to_half=False,
                  traditional_to_simple=False, remove_puncts=False)
GRAMMAR_FILES = {lang: (f"{lang}_tn_tagger.fst", f"{lang}_tn_verbalizer.fst") for lang in GRAMMAR_LANGUAGES}

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: What sends a piece of text to a grammar: a digit of any script ("٣", "३", "３"), or a symbol.
TRIGGER = re.compile(r"[\d$€£¥￥₹%‰&@+=#°℃℉％＄＆＠＋＝＃<>←→↔⇒≤≥≠]")
FULLWIDTH_SYMBOLS = str.maketrans("％＄＆＠＋＝＃", "%$&@+=#")


class _AsciiDigits(dict):
    """`str.translate`'s table from any script's decimal digits to ASCII ones ("٣" and "३" are 3):
    Unicode has hundreds of them, so each character is looked up the first time it is met."""

    def __missing__(self, code: int) -> int:
        value = unicodedata.decimal(chr(code), None)
        self[code] = code if value is None else ord("0") + value
        return self[code]


DIGITS_ONLY = _AsciiDigits()
TOKEN = re.compile(rf"[{HAN}]|[^\s{HAN}]+")
SENTENCE_END = re.compile(r"[.!?;]+(?=\s)|[。！？；\n]+")
#: Digits past this many in one run are read one by one: a grammar's time and memory grow with one
#: unbroken token (2,000 digits took 23 s and 1 GB in the English grammar).
MAX_DIGIT_RUN = 15
#: A longer run of non-space characters (not a URL or an e-mail address) never reaches a grammar.
MAX_TOKEN_CHARS = 48
#: One grammar call's input at most, in characters.
MAX_PIECE_CHARS = 64
#: Words of context on each side of a number: a month before a day, "pm" after a time.
CONTEXT = {"en": 1, "zh": 3}

DIGITS = {"en": "zero one two three four five six seven eight nine".split(), "zh": list("零一二三四五六七八九")}
# Bounded by Latin letters and digits, not by \b: Han characters are word characters to `re`.
URL = re.compile(r"(?<![A-Za-z0-9])(?:https?://|www\.)[^\s<>\"\u3000-\u303f\uff00-\uffef]+", re.IGNORECASE)
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
                   r"(?![A-Za-z0-9-])")
#: Top-level domains that make a bare "docs.example.com" an address; those that are English words
#: (.in, .it, .me, .to) and file types (.py, .md, .sh) are left out.
TLDS = ("com|org|net|edu|gov|mil|int|io|ai|co|app|dev|info|biz|tv|uk|us|ca|de|fr|es|nl|eu|jp|cn|ru|br|au|ch|"
        "se|nz|ie|xyz|tech|online|site|store|blog|cloud|news")
#: A bare domain, "localhost" or an IPv4 address with a port, and what follows: "example.com/path",
#: "localhost:8080/api", "10.0.0.1:9090".
HOST = re.compile(rf"(?<![A-Za-z0-9@.\-/_])(?:localhost|\d{{1,3}}(?:\.\d{{1,3}}){{3}}(?=:\d)|"
                  rf"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+(?:{TLDS}))(?![A-Za-z0-9-])"
                  r"(?::\d{1,5}(?!\d))?(?:/[^\s<>\"\u3000-\u303f\uff00-\uffef]*)?")
URL_SYMBOLS = {".": "dot", "/": "slash", "-": "dash", "_": "underscore", "?": "question mark", "=": "equals",
               "&": "and", ":": "colon", "#": "hash", "%": "percent", "~": "tilde", "+": "plus", "@": "at"}


# --------------------------------------------------------------------------------------
# The grammars: compiled once onto the volume, loaded once per worker
# --------------------------------------------------------------------------------------


def grammar_root(models_dir: Path) -> Path:
    return Path(models_dir) / "f5-tts" / "tn"


def grammar_dir(root: Path, language: str) -> Path:
    """Where one language's compiled grammar lives: named by the library's version and the
    options it was built with, since WeText's file names record neither."""
    options = ZH_OPTIONS if language == "zh" else {}
    tag = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / f"wetext-{WETEXT_VERSION}" / f"{language}-{tag}"


def grammar_is_complete(folder: Path, language: str) -> bool:
    return (folder / "manifest.json").is_file() and all((folder / name).is_file() for name in GRAMMAR_FILES[language])


def _wetext_class(language: str):
    if language == "en":
        from tn.english.normalizer import Normalizer
    else:
        from tn.chinese.normalizer import Normalizer
    # Only after its import, which sets it to INFO: it logs every load through a handler of its own,
    # and once more through the root logger's.
    wetext = logging.getLogger("wetext")
    wetext.setLevel(logging.WARNING)
    wetext.propagate = False
    return Normalizer


def build_grammar(root: Path, language: str) -> Path:
    """Compile one language's grammar into its folder under `root` (seconds to half a minute).
    WeText writes straight into the folder it is given, so it is given a temporary one that is
    renamed when whole: a worker never loads half a grammar, and one that finds the folder
    missing never writes into a folder another worker reads. Idempotent."""
    from filelock import FileLock

    folder = grammar_dir(root, language)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if grammar_is_complete(folder, language):
            return folder
        # A folder, not a file: atomic.write_atomic replaces files (os.replace cannot put a folder
        # over one that exists), so the whole folder is renamed here, under the lock.
        tmp = temp_name(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("compiling the %s text normalisation grammar into %s (once per volume: seconds to half a minute)",
                 language, folder)
        try:
            started = time.perf_counter()
            _wetext_class(language)(cache_dir=str(tmp), overwrite_cache=True,
                                    **(ZH_OPTIONS if language == "zh" else {}))
            (tmp / "manifest.json").write_text(json.dumps(
                {"library": "WeTextProcessing", "version": WETEXT_VERSION, "language": language,
                 "options": ZH_OPTIONS if language == "zh" else {},
                 "seconds": round(time.perf_counter() - started, 1)}, indent=1), encoding="utf-8")
            if folder.exists():  # a half-made folder from a crash, or another host's
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("compiled the %s text normalisation grammar into %s", language, folder)
    return folder


def grammar_status(models_dir: Path) -> list[tuple[str, Path, bool]]:
    """Each language's compiled grammar under the models dir: (language, its folder, whether it is
    complete there). What `prefetch` and `status` ask."""
    root = grammar_root(models_dir)
    return [(language, grammar_dir(root, language), grammar_is_complete(grammar_dir(root, language), language))
            for language in GRAMMAR_LANGUAGES]


def compile_grammar(models_dir: Path, language: str) -> Path:
    """Compile one language's grammar onto the models dir unless it is there (`build_grammar`)."""
    return build_grammar(grammar_root(models_dir), language)


class Grammars:
    """The loaded grammars of one folder; each loaded on first use and kept."""

    def __init__(self, root: Path, allow_build: bool = True):
        self.root, self.allow_build = Path(root), allow_build
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, language: str):
        with self._lock:
            if language not in self._loaded:
                self._loaded[language] = self._load(language)
            return self._loaded[language]

    def _load(self, language: str):
        folder = grammar_dir(self.root, language)
        if not grammar_is_complete(folder, language):
            if not self.allow_build:
                raise WorkerSetupError(f"The {language} text normalisation grammar is not in {folder} and "
                                       "ALLOW_MODEL_DOWNLOAD=false keeps the worker from compiling it; run "
                                       "`python model_cache.py prefetch`, or send normalize: false.")
            try:
                build_grammar(self.root, language)
            except OSError as exc:
                raise WorkerSetupError(f"Could not compile the {language} text normalisation grammar into "
                                       f"{folder}: {type(exc).__name__}: {exc}") from exc
        started = time.perf_counter()
        # With both files present WeText only reads them (it writes nothing, whatever the options).
        grammar = _wetext_class(language)(cache_dir=str(folder))
        log.info("loaded the %s text normalisation grammar in %.2f s", language, time.perf_counter() - started)
        return grammar


_shared: dict[Path, Grammars] = {}
_shared_lock = threading.Lock()


def grammars(root: Path, allow_build: bool = True) -> Grammars:
    """The worker's grammars of `root`: loaded once per process, whichever job asks first."""
    with _shared_lock:
        found = _shared.get(Path(root))
        if found is None or found.allow_build != allow_build:
            found = _shared[Path(root)] = Grammars(root, allow_build)
        return found


# --------------------------------------------------------------------------------------
# Languages
# --------------------------------------------------------------------------------------


#: num2words languages a job may not name: found by `python -m benchmarks.number_languages`, which
#: reads 1,153 numbers of 1 to 15 digits (negatives, decimals) in each language, each with a 2 s
#: deadline. Amharic's converter never returned on 3 of the first 7-digit ones (9999999, 3085807,
#: 5972538; the red team's 9852152 too); every other language answered every number, the slowest
#: in 40 ms, most in under 0.5 ms.
UNSAFE_LANGUAGES = frozenset({"am"})


@functools.cache
def num2words_languages() -> frozenset[str]:
    from num2words import CONVERTER_CLASSES

    return frozenset(CONVERTER_CLASSES) - UNSAFE_LANGUAGES


def supported(language: str) -> bool:
    return language in GRAMMAR_LANGUAGES or language in num2words_languages()


#: num2words languages whose decimal mark is a point; the others write "3,5".
DECIMAL_POINT = {"en", "en_IN", "en_NG", "ja", "ko", "he", "th", "te", "kn", "bn", "am", "ar", "fa", "cy"}


def script_language(sentence: str) -> str | None:
    """"zh", "en", None (mostly another script: left as it is), or "" (no letters: as its
    neighbours)."""
    han = latin = other = 0
    for ch in sentence:
        if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff":
            han += 1
        elif ch.isascii() and ch.isalpha() or "\u00c0" <= ch <= "\u024f":
            latin += 1
        elif ch.isalpha():
            other += 1
    if han and han * 3 >= latin and han >= other:  # a Han character says about what three letters do
        return "zh"
    if latin and latin >= other:
        return "en"
    if not other and any("\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uff0f" for ch in sentence):
        return "zh"  # "3+2=5。": no letters, but Chinese punctuation
    return None if other else ""


def sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for end in SENTENCE_END.finditer(text):
        spans.append((start, end.end()))
        start = end.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


# --------------------------------------------------------------------------------------
# The job's entry point
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """How a text is read: `language` None chooses English or Chinese per sentence from its
    script; `max_grammar_chars` bounds the characters a text may send through the grammars, and
    `max_spoken_chars` (None: no bound) the length of what is said, checked as it is read."""

    grammars: Grammars
    language: str | None = None
    max_grammar_chars: int = 10_000
    max_spoken_chars: int | None = None


class SpokenLength:
    """The spoken form's length as it is read: first what is known before any grammar runs, then
    each piece as the grammar says it. Reading stops at the piece that takes it past the limit:
    a text of 3,000 long numbers is refused after the grammar has read a few hundred of them."""

    def __init__(self, limit: int | None, pieces: int):
        self.limit, self.total, self.pieces = limit, 0, pieces

    def add(self, chars: int, piece: bool = False) -> None:
        self.total += chars
        self.pieces -= piece
        if self.limit is not None and self.total > self.limit:
            raise LimitExceeded(
                f"text is {'at least ' if self.pieces else ''}{self.total} characters once its numbers and symbols "
                f"are written as words; at most {self.limit} are accepted (MAX_TEXT_CHARS). Send it in parts.")


def normalize(text: str, reading: Reading) -> str:
    """`text` with its written forms spoken; unchanged where there is nothing to say differently."""
    return normalize_all([text], reading)[0]


def normalize_all(texts: list[str], reading: Reading) -> list[str]:
    """Each text normalised; the grammars' bound holds for all of them together (a job's segments)."""
    plans = [_plan(text, reading.language) for text in texts]
    needed = sum(_grammar_chars(plan) for plan in plans)
    if needed > reading.max_grammar_chars:
        raise LimitExceeded(
            f"text has {needed} characters of numbers and symbols to read (with the words beside them); at most "
            f"{reading.max_grammar_chars} are accepted per job (MAX_NORMALIZE_CHARS). Send it in parts, or with "
            "normalize: false.")
    parts = [(i, j, lang, part, spans)
             for i, plan in enumerate(plans) for j, (lang, part, spans) in enumerate(plan or ())]
    spoken = SpokenLength(reading.max_spoken_chars, sum(len(spans) for _, _, lang, _, spans in parts
                                                       if lang in GRAMMAR_LANGUAGES))
    spoken.add(sum(len(text) for text, plan in zip(texts, plans) if plan is None)
               + sum(len(part) - _span_chars(spans) for _, _, lang, part, spans in parts if lang in GRAMMAR_LANGUAGES))
    said = {}
    for i, j, lang, part, spans in parts:  # first what needs no grammar: num2words' languages
        if lang not in GRAMMAR_LANGUAGES:
            said[i, j] = _read_without_grammar(lang, part)
            spoken.add(len(said[i, j]))
    for i, j, lang, part, spans in parts:
        if lang in GRAMMAR_LANGUAGES:
            said[i, j] = read_pieces(part, spans, reading.grammars.get(lang), lang, spoken) if spans else part
    return [text if plan is None else "".join(said[i, j] for j in range(len(plan)))
            for i, (text, plan) in enumerate(zip(texts, plans))]


def grammar_chars(text: str, language: str | None = None) -> int:
    """The characters of `text` a grammar would read: what MAX_NORMALIZE_CHARS bounds."""
    return _grammar_chars(_plan(text, language))


def _grammar_chars(plan: list[tuple] | None) -> int:
    return sum(_span_chars(spans) for _, _, spans in plan or ())


def _span_chars(spans: list[tuple[int, int]]) -> int:
    return sum(b - a for a, b in spans)


def _plan(text: str, language: str | None) -> list[tuple] | None:
    """The text's language runs, each prepared, with the spans its grammar must read; None: nothing to do."""
    if not TRIGGER.search(text) and not ABBREVIATION.search(text) \
            and not URL.search(text) and not HOST.search(text):
        return None
    plan = []
    for lang, part in language_groups(text, language):
        if lang in GRAMMAR_LANGUAGES:
            part = prepare(part, lang)
            plan.append((lang, *_lone_numbers_read(part, grammar_pieces(part, lang), lang)))
        else:
            plan.append((lang, part, number_spans(part, lang) if lang else []))
    return plan


def _lone_numbers_read(part: str, spans: list[tuple[int, int]], lang: str) -> tuple[str, list[tuple[int, int]]]:
    """The English pieces that are a number alone ("254.", "1,234", "22nd") said in our own words, as
    the grammar would say them: they never reach it, nor count against MAX_NORMALIZE_CHARS."""
    if lang != "en":
        return part, spans
    out, kept, at, shift = [], [], 0, 0
    for a, b in spans:
        said = english_numbers.lone_number(part[a:b])
        if said is None:
            kept.append((a + shift, b + shift))
        else:
            out.append(part[at:a] + said)
            at = b
            shift += len(said) - (b - a)
    return "".join(out) + part[at:], kept


def _read_without_grammar(lang: str | None, part: str) -> str:
    """A part in num2words' languages (its numbers read), or in another script (left as it is)."""
    return numbers_in(part, lang) if lang else part


def language_groups(text: str, language: str | None) -> list[tuple[str | None, str]]:
    """The text cut into runs of sentences of one language, each with it."""
    if language is not None:
        return [(language, text)]
    spans = sentences(text)
    langs = [script_language(text[a:b]) for a, b in spans]
    runs: list[list] = []  # [language, start, end]
    for (a, b), lang in zip(spans, langs):
        if lang == "":  # no letters: as the sentence before, else as the text as a whole
            whole = script_language(text) if not runs else None
            lang = runs[-1][0] if runs else "en" if whole == "" else whole  # "en": the model's first language
        if runs and runs[-1][0] == lang:
            runs[-1][2] = b
        else:
            runs.append([lang, a, b])
    return [(lang, text[a:b]) for lang, a, b in runs]


# --------------------------------------------------------------------------------------
# Pre-pass: what the grammars read wrongly, and what must never reach them
# --------------------------------------------------------------------------------------


def prepare(text: str, lang: str) -> str:
    text = text.translate(DIGITS_ONLY)  # what follows reads ASCII digits: "٣" is read, never dropped
    text = URL.sub(lambda m: _spelled_out(m, URL_READING, lang), text)
    text = EMAIL.sub(lambda m: _spelled_out(m, EMAIL_READING, lang), text)
    text = HOST.sub(lambda m: _spelled_out(m, URL_READING, lang), text)
    text = text.translate(FULLWIDTH_SYMBOLS)
    text = LONG_TOKEN.sub(lambda m: _token_fallback(m.group(), lang), text)
    text = DIGIT_RUN.sub(lambda m: digit_by_digit(m.group(), lang), text)
    if lang == "en":
        for pattern, spoken in ENGLISH:
            text = pattern.sub(spoken, text)
    elif lang == "zh":
        text = THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
        text = LETTER_HYPHEN_DIGIT.sub(" ", text)
        text = FRACTION.sub(r"\2分之\1", text)  # the grammar reads "约1/3" as "三分之约一"
    return text


LONG_TOKEN = re.compile(rf"[^\s{HAN}]{{{MAX_TOKEN_CHARS + 1},}}")
DIGIT_RUN = re.compile(rf"[0-9]{{{MAX_DIGIT_RUN + 1},}}")
THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
LETTER_HYPHEN_DIGIT = re.compile(r"(?<=[A-Za-z])-(?=\d)")
FRACTION = re.compile(r"(?<![\d/.])(\d{1,6})/(\d{1,6})(?![\d/.])")
TRAILING = ".,;:!?)]}'\""
URL_READING, EMAIL_READING = "url", "email"


def digit_by_digit(digits: str, lang: str) -> str:
    if lang in DIGITS:
        words = [DIGITS[lang][int(d)] for d in digits]
        return ("" if lang == "zh" else " ").join(words)
    wanted = sorted(set(digits))
    said = dict(zip(wanted, number_words.words(lang, [_ascii(d) for d in wanted])))
    return " ".join(said[d] or d for d in digits)


def _spelled_out(match: re.Match, kind: str, lang: str) -> str:
    """A URL or an e-mail address as one says it: "example dot com slash news"."""
    whole = match.group()
    body = whole.rstrip(TRAILING)
    tail = whole[len(body):]
    if kind == URL_READING:
        body = re.sub(r"^https?://", "", body, flags=re.IGNORECASE).rstrip("/")
        body = re.sub(r"^www\.", "w w w.", body, flags=re.IGNORECASE)
    words = []
    for part in re.findall(r"[^\W\d_]+|[0-9]+|[^\w\s]|_", body):
        if part.isdigit():
            words.append(digit_by_digit(part, lang))
        elif part in URL_SYMBOLS:
            words.append(URL_SYMBOLS[part])
        elif part.isalpha():
            words.append(part)
    return " ".join(words) + tail


def _token_fallback(token: str, lang: str) -> str:
    """A run of non-space characters too long for a grammar: its words kept (letters with their
    marks, numbers of every kind), its digits read one by one, its symbols left out (nobody wants
    "dollar percent" read a thousand times)."""
    spaced = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in token)
    parts = re.findall(r"[0-9]+|[^\s0-9]+", spaced)
    said = [digit_by_digit(p, lang) if p[0] in "0123456789" else p for p in parts]
    return " ".join(said) if said else " "


def _plural(words: str) -> str:
    last = words.rsplit(" ", 1)
    word = last[-1]
    word = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return (last[0] + " " + word) if len(last) == 2 else word


def _decade(m: re.Match) -> str:
    from num2words import num2words

    return _plural(num2words(int(m.group(1)), to="year", lang="en"))


def _phone(m: re.Match) -> str:
    """Digit by digit, a comma between groups: "plus one, four one five, five five five, ..."."""
    groups = re.findall(r"\d+", m.group())
    said = ", ".join(digit_by_digit(g, "en") for g in groups)
    return ("plus " if m.group().lstrip().startswith("+") else "") + said


MINOR = {"$": ("cent", "cents"), "€": ("cent", "cents"), "£": ("penny", "pence")}


def _money(m: re.Match) -> str:
    symbol, major, minor = m.group(1), m.group(2), int(m.group(3))
    if minor == 0:
        return f"{symbol}{major}"
    unit = MINOR[symbol][0 if minor == 1 else 1]
    return f"{minor} {unit}" if major == "0" else f"{symbol}{major} and {minor} {unit}"


UNITS = {"m/s": ("meter per second", "meters per second"), "mph": ("mile per hour", "miles per hour"),
         "min": ("minute", "minutes"), "mins": ("minute", "minutes"), "hr": ("hour", "hours"),
         "hrs": ("hour", "hours"), "sec": ("second", "seconds"), "secs": ("second", "seconds"),
         "lb": ("pound", "pounds"), "lbs": ("pound", "pounds")}


def _unit(m: re.Match) -> str:
    number, unit = m.group(1), m.group(2)
    return f"{number} {UNITS[unit][0 if number == '1' else 1]}"


ABBREVIATIONS = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "Jr": "Junior",
                 "Sr": "Senior", "Mt": "Mount", "Ave": "Avenue", "vs": "versus", "etc": "et cetera",
                 "approx": "approximately", "e.g": "for example", "i.e": "that is", "Jan": "January",
                 "Feb": "February", "Aug": "August", "Sept": "September", "Oct": "October", "Nov": "November",
                 "Dec": "December"}
#: Said differently by place: "Dr. Smith" / "Mulholland Dr.", "St. Louis" / "Baker St.".
PLACES = {"Dr": ("Doctor", "Drive"), "St": ("Saint", "Street")}
ABBREVIATION = re.compile(r"(?<![\w.])(Mr|Mrs|Ms|Prof|Jr|Sr|Mt|Ave|vs|etc|approx|e\.g|i\.e|Jan|Feb|Aug|Sept|Oct|Nov"
                          r"|Dec|Dr|St)\.(?=\s|$|,)|(?<![\w.])No\.(?=\s?\d)")


def _abbreviation(m: re.Match) -> str:
    word = m.group(1)
    if word is None:  # "No. 1"
        return "number"
    text, end = m.string, m.end()
    follows = text[end:end + 3]
    sentence_ends = end == len(text) or re.match(r"\s+[A-Z]", text[end:end + 3]) is not None
    if word in PLACES:  # "Baker St." and "Mulholland Dr. is": after a name, before no other
        before = re.search(r"(\S+)\s+$", text[max(0, m.start() - 40):m.start()])
        street = before is not None and before.group(1)[0].isupper() and not re.match(r"\s+[A-Z]", follows)
        return PLACES[word][1 if street else 0] + ("." if street and sentence_ends else "")
    spoken = ABBREVIATIONS[word]
    # "... pears, etc." ends the sentence: its point stays one
    return spoken + ("." if word in ("etc", "Jr", "Sr", "Ave") and sentence_ends else "")


def _spaced(word: str, m: re.Match) -> str:
    """`word` in place of a symbol, with a space on each side that does not have one."""
    text = m.string
    left = "" if m.start() == 0 or text[m.start() - 1].isspace() else " "
    right = "" if m.end() == len(text) or text[m.end()].isspace() else " "
    return left + word + right


def _hyphenated_name(m: re.Match) -> str:
    """"F5-TTS", "GPT-4o", "COVID-19", "Llama-3.1-8B": a name with digits is said in parts."""
    name = m.group()
    return name.replace("-", " ") if any(ch.isdigit() for ch in name) else name


def _signed_amount(m: re.Match) -> str:
    return _spaced("plus" if m.group() == "+" else "minus", m)


SCALE_LETTERS = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
                 "b": "billion", "B": "billion", "bn": "billion", "T": "trillion", "tn": "trillion"}


def _scale_letter(m: re.Match) -> str:
    """"1.6k" is 1.6 thousand, "$2.5m" 2.5 million; "5m" alone is five meters, and without a
    currency "M" and "B" are scales only before a plural or the end of a clause ("2M users", not
    "an 8B model")."""
    currency, number, letter = m.group(1) or "", m.group(2), m.group(3)
    if not currency and (letter in ("m", "b", "T") or letter in ("M", "B") and _word_after(m.string, m.end())
                         and not _counted(_word_after(m.string, m.end()))):
        return m.group()
    return f"{currency}{number} {SCALE_LETTERS[letter]}"


#: Arrows and comparisons: never a bare symbol in what is said. "<3" is a heart unless a unit or
#: a plural follows ("<3 km", "<3 days").
SYMBOL_WORDS = {"<->": "to and from", "↔": "to and from", "-->": "to", "->": "to", "→": "to", "<--": "from",
                "<-": "from", "←": "from", "==>": "implies", "=>": "implies", "⇒": "implies",
                "<=": "less than or equal to", "≤": "less than or equal to", ">=": "greater than or equal to",
                "≥": "greater than or equal to", "!=": "not equal to", "≠": "not equal to", "==": "equals",
                "<": "less than", ">": "greater than"}
HEART = re.compile(r"(?<![\w<])<3(?![\d.,])(?!\s?(?:%|[a-z]+s\b|(?:km|kg|cm|mm|mi|ft|lb|h|m|s|g|l)\b))")
ANGLE_BRACKETS = re.compile(r"<([^\s<>]+)>")
SYMBOL = re.compile(r"<->|-->|<--|==>|->|<-|=>|<=|>=|!=|==|[↔→←⇒≤≥≠]|"
                    r"(?<![^\s(])[<>](?=\s|[-+]?[\d$€£¥.])|(?<=[\w)])\s?[<>](?=\s?[-+]?\d)")


def _symbol(m: re.Match) -> str:
    return _spaced(SYMBOL_WORDS[m.group().strip()], m)


def _word_before(text: str, at: int) -> str:
    found = re.search(r"(\S+)\s+$", text[max(0, at - 30):at])
    return found.group(1).strip("([\"'").lower() if found else ""


def _word_after(text: str, at: int) -> str:
    """The word right after `at`, as written ("" where punctuation ends the clause first)."""
    found = re.match(r"\s+([^\s,.;:!?]+)", text[at:at + 30])
    return found.group(1) if found else ""


#: Words after which four digits are a year: "in 1999", "since 2001", "the 1999 season".
YEAR_BEFORE = {"in", "since", "from", "until", "till", "by", "year", "circa", "c.", "ca.", "during", "before",
               "after", "through", "between", "around", "of", "spring", "summer", "autumn", "fall", "winter",
               "early", "late", "mid", "fiscal", "fy", "vintage"}
DETERMINERS = {"the", "this", "that", "last", "next", "its", "his", "her", "their", "our", "my", "your"}
#: Between two years: "from 1905 to 1999", "1999 and 2024".
JOINS = {"to", "and", "or", "through", "until", "till", "&", "-", "–"}
ERAS = {"ad", "bc", "bce", "ce"}
NOT_PLURAL = {"is", "was", "has", "as", "its", "his", "this", "thus", "us", "yes", "does", "plus", "less",
              "always", "perhaps", "across", "unless", "whereas", "besides", "towards", "afterwards"}
IRREGULAR_PLURALS = {"people", "men", "women", "children", "feet", "teeth", "mice", "geese", "sheep", "fish"}
MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
          "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
#: Four digits after a month, or a month and a day, are the grammar's: a date.
DATE_BEFORE = re.compile(rf"\b(?:{MONTHS})\.?,?\s+(?:\d{{1,2}}(?:st|nd|rd|th)?,?\s+)?$", re.IGNORECASE)


def _counted(word: str) -> bool:
    """Whether `word` is a plural noun, in lower case: what makes the number before it a count
    ("1035 cans", not "the 2024 Olympics")."""
    return word in IRREGULAR_PLURALS or (len(word) > 2 and word.isalpha() and word.islower() and word.endswith("s")
                                         and not word.endswith("ss") and word not in NOT_PLURAL)


def _says_year(text: str, start: int, end: int) -> bool:
    before, after = _word_before(text, start), _word_after(text, end).replace(".", "")
    if after.lower() in ERAS or text[start - 1:start] == "(" and text[end:end + 1] == ")":
        return True
    if _counted(after):
        return False
    if before in YEAR_BEFORE or before in DETERMINERS and after:
        return True
    if before in JOINS:  # a year when the number before the join is one
        earlier = re.search(r"(?<![\w.,])(\d{4})[,]?\s+\S+\s+$", text[max(0, start - 40):start])
        if earlier:
            at = max(0, start - 40) + earlier.start(1)
            return _word_before(text, at) in YEAR_BEFORE
    return False


def _four_digits(m: re.Match) -> str:
    """Four digits alone: a year where the words around say so ("in 1999" as nineteen ninety nine),
    else a number (the grammar reads "bought 1035 cans" as ten thirty five cans without the comma)."""
    text, digits = m.string, m.group()
    if DATE_BEFORE.search(text[max(0, m.start() - 30):m.start()]):
        return digits
    if _says_year(text, m.start(), m.end()):
        return english_numbers.year(int(digits))
    return f"{digits[0]},{digits[1:]}"


def _year_range(m: re.Match) -> str:
    """"1990-1999", "2024-25": years from one to the other; "1000-2000 people" is left a range of numbers."""
    first, second = int(m.group(1)), m.group(2)
    if (int(second) <= first if len(second) == 4 else int(second) <= first % 100) \
            or _counted(_word_after(m.string, m.end())):
        return m.group()
    said = english_numbers.year(int(second)) if len(second) == 4 else \
        "oh " + english_numbers.ONES[int(second)] if int(second) < 10 else english_numbers.cardinal(int(second))
    return f"{english_numbers.year(first)} to {said}"


def _spelled_digits(m: re.Match) -> str:
    """Digits the grammar would read one by one anyway, or slowly: ours, one by one, with their dots."""
    return " dot ".join(digit_by_digit(group, "en") for group in re.findall(r"\d+", m.group()))


MONTH_NAMES = "january february march april may june july august september october november december".split()


def _date(year: int, month: int, day: int) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31 and 1000 <= year <= 9999):
        return None
    return f"the {english_numbers.ordinal(day)} of {MONTH_NAMES[month - 1]} {english_numbers.year(year)}"


def _date_year_first(m: re.Match) -> str:
    """"2024-03-05" as the grammar says it, the fifth of march twenty twenty four, at no cost."""
    return _date(int(m.group(1)), int(m.group(3)), int(m.group(4))) or m.group()


def _date_year_last(m: re.Match) -> str:
    """"12/25/2024" and "25.12.2024": the month first where it can be, as the grammar reads them."""
    first, second, year = int(m.group(1)), int(m.group(3)), int(m.group(4))
    return (_date(year, first, second) if first <= 12 else _date(year, second, first)) or m.group()


def _duration(m: re.Match) -> str:
    """"1:02:03" is one hour two minutes and three seconds; before "pm" it is the grammar's time."""
    if re.match(r"\s?[ap]\.?m\b", m.string[m.end():m.end() + 5], re.IGNORECASE):
        return m.group()
    h, mins, secs = (int(g) for g in m.groups())
    said = [f"{english_numbers.cardinal(n)} {unit}{'' if n == 1 else 's'}"
            for n, unit in ((h, "hour"), (mins, "minute"), (secs, "second"))]
    return f"{said[0]} {said[1]} and {said[2]}"


def _number_chain(m: re.Match) -> str:
    """"12-34-56", "1,2,3": numbers one after another (the grammar takes twice as long over one token)."""
    chain = m.group()
    if m.group(1) == "," and re.fullmatch(r"\d{1,3}(?:,\d{3})+", chain):
        return chain
    return chain.replace("-", " ") if m.group(1) == "-" else chain.replace(",", ", ")


def _big_ratio(m: re.Match) -> str:
    if len(m.group(1)) < 3 and len(m.group(2)) < 3:  # a time, a verse, "16:9"
        return m.group()
    return f"{m.group(1)} to {m.group(2)}"


#: Not inside a word or another number: before, no letter, digit, point, comma, colon, slash,
#: hyphen or currency; after, no letter or digit, and no point, comma, colon, slash or hyphen
#: followed by a digit.
FREE_BEFORE = r"(?<![\w.,:/$€£¥₹#+\u2212-])"
FREE_AFTER = r"(?![\w/]|[.,:/\-–]\d)"

ENGLISH = [
    (ABBREVIATION, _abbreviation),
    # names with digits: "F5-TTS" is F five TTS, "COVID-19" COVID nineteen ("4-year-old" stays)
    (re.compile(r"(?<![\w-])[A-Z][A-Za-z0-9.]*(?:-[A-Za-z0-9.]+)+"), _hyphenated_name),
    (re.compile(r"(?<=\d)-(?=[A-Z])"), " "),
    # dates of digits only, and durations, in our own words: the grammar's, at no cost
    (re.compile(FREE_BEFORE + r"(\d{4})([-/])(\d{1,2})\2(\d{1,2})" + FREE_AFTER), _date_year_first),
    (re.compile(FREE_BEFORE + r"(\d{1,2})([/.])(\d{1,2})\2(\d{4})" + FREE_AFTER), _date_year_last),
    (re.compile(FREE_BEFORE + r"(\d{1,2}):([0-5]\d):([0-5]\d)" + FREE_AFTER), _duration),
    # a sign before a currency: "-$6.9 million" loses six point nine million dollars, "+€3" gains three euros
    (re.compile(r"(?<![\w.,])[-+\u2212](?=[$€£¥₹]\d)"), _signed_amount),
    # scale letters: "1.6k", "$5k", "2M", "3.5B", "$3bn", "$2.5m"
    (re.compile(r"(?<![\w.,])([$€£¥₹])?(\d+(?:\.\d+)?)(mn|bn|tn|[kKmMbBT])(?![\w'])"), _scale_letter),
    # the grammar says "$5 thousand" as five dollars thousand, "$5,000" rightly
    (re.compile(r"(?<![\w.,])([$€£¥₹]\d{1,3}) thousand\b"), r"\1,000"),
    # money with cents: "$3.50" is three dollars and fifty cents, not "three point five dollars"
    (re.compile(r"([$€£])(\d{1,3}(?:,\d{3})+|\d+)\.(\d\d)(?![\d.,]*\d)(?!\s*(?:[mbk]n?|million|billion|trillion|"
                r"thousand)\b)", re.IGNORECASE), _money),
    # decades: "1990s", not "one thousand nine hundred and ninety seconds"
    (re.compile(r"(?<![\d.,$€£])(1[1-9]\d0|20\d0)'?s\b"), _decade),
    # phone numbers, digit by digit
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]\(?\d{1,4}\)?){2,5}(?![\w.]*\d)"), _phone),
    (re.compile(r"(?<![\w(])\(\d{3}\)\s?\d{3}[ .-]\d{4}\b|(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}\b|"
                r"(?<![\w.-])\d{3}-\d{4}\b(?!-)"), _phone),
    (re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(m/s|mph|mins?|hrs?|secs?|lbs?)(?![\w/])"), _unit),
    (re.compile(r"(?<![\w.])(\d+)'(\d{1,2})\"(?!\w)"), r"\1 feet \2 inches"),
    # arrows and comparisons
    (HEART, lambda m: _spaced("heart", m)),
    (ANGLE_BRACKETS, r"\1"),
    (SYMBOL, _symbol),
    # three or more numbers joined by hyphens or commas (not thousands): said one after another
    (re.compile(r"(?<![\w.,:/-])\d+([-,])\d+(?:\1\d+)+" + FREE_AFTER), _number_chain),
    # ranges: of years ("1990-1999"), then of numbers ("10-20" is ten to twenty)
    (re.compile(FREE_BEFORE + r"(1\d{3}|20\d\d)[-–](\d{4}|\d\d)" + FREE_AFTER), _year_range),
    (re.compile(FREE_BEFORE + r"(\d[\d,]*\d|\d)[-–](\d[\d,]*\d|\d)" + FREE_AFTER), r"\1 to \2"),
    (re.compile(FREE_BEFORE + r"[1-9]\d{3}" + r"(?![\w,:/%°'’]|[.\-–]\d)"), _four_digits),
    # what the grammar reads slowly (5 to 10 ms a digit) and could not be given a stand-in
    # (english_numbers): ratios of long numbers, IPv4 addresses, long digit groups in versions,
    # numbers with leading zeros, serials, more digits than a number has
    (re.compile(FREE_BEFORE + r"(\d+):(\d+)" + FREE_AFTER), _big_ratio),
    (re.compile(r"(?<![\w.])(?:\d{1,3}(?:\.\d{1,3}){3}|(?=[\d.]*\d{4})\d+(?:\.\d+){2,})(?![\w]|\.\d)"),
     _spelled_digits),
    (re.compile(FREE_BEFORE + r"0\d{3,}" + FREE_AFTER), _spelled_digits),
    (re.compile(r"(?<=[A-Za-z])\d{5,}|\d{5,}(?=[A-Za-z])(?![a-z]{1,3}\b)"), lambda m: _spaced(_spelled_digits(m), m)),
    (re.compile(FREE_BEFORE + r"\d{1,3}(?:,\d{3}){5,}" + FREE_AFTER), _spelled_digits),
]


# --------------------------------------------------------------------------------------
# The grammar's part: bounded pieces around each number and symbol
# --------------------------------------------------------------------------------------


#: English words that change how a number beside them is read: a month makes a date, a scale word
#: an amount ("$2.5 million"). Short words are mostly units and abbreviations (km, ft, am, MB) and
#: cost little; other words are left out of a piece, since a grammar's time grows with its input.
READS_WITH = {"january", "february", "march", "april", "june", "july", "august", "september", "october",
              "november", "december", "thousand", "million", "billion", "trillion"}


def _context(text: str, span: tuple[int, int], lang: str) -> bool:
    word = text[span[0]:span[1]].strip(".,;:!?()[]'\"").lower()
    return lang != "en" or len(word) <= 4 or word in READS_WITH


def grammar_pieces(text: str, lang: str) -> list[tuple[int, int]]:
    """Spans of `text` to read with the grammar: each number or symbol with up to `CONTEXT[lang]`
    words on either side (in English only words that change its reading), overlapping ones
    merged, none longer than MAX_PIECE_CHARS."""
    tokens = [m.span() for m in TOKEN.finditer(text)]
    k = CONTEXT[lang]
    spans: list[list[int]] = []  # token index ranges
    for i, (a, b) in enumerate(tokens):
        if TRIGGER.search(text, a, b):
            lo = i
            while lo > max(0, i - k) and _context(text, tokens[lo - 1], lang):
                lo -= 1
            hi = i
            while hi < min(len(tokens) - 1, i + k) and _context(text, tokens[hi + 1], lang):
                hi += 1
            if spans and lo <= spans[-1][1]:
                spans[-1][1] = max(hi, spans[-1][1])
            else:
                spans.append([lo, hi])
    pieces = []
    for lo, hi in spans:
        start = lo
        for i in range(lo, hi + 1):  # cut where the next token would pass the bound
            if tokens[i][1] - tokens[start][0] > MAX_PIECE_CHARS and i > start:
                pieces.append((tokens[start][0], tokens[i - 1][1]))
                start = i
        pieces.append((tokens[start][0], tokens[hi][1]))
    return pieces


SENTENCE_FOLLOWS = re.compile(r"\s*$|\s+[A-Z]")
AM_PM = re.compile(r"\d\s*[ap]\.?\s?m\b", re.IGNORECASE)
SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def read_pieces(text: str, pieces: list[tuple[int, int]], grammar, lang: str,
                spoken: SpokenLength | None = None) -> str:
    """`text` with each of its pieces as the grammar says it; `spoken` counts each as it is said."""
    out, at = [], 0
    for a, b in pieces:
        out.append(text[at:a])
        said = read_piece(text[a:b], grammar, lang)
        if lang == "en":
            said = SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(said.split()))
            if AM_PM.search(text, a, b):
                said = re.sub(r"\b([AP])M\b", lambda m: m.group(1).lower() + " m", said)
        else:
            said = said.replace("第两", "第二")
        if text[b - 1] in ".!?" and not said.endswith(text[b - 1]) and SENTENCE_FOLLOWS.match(text, b):
            said += text[b - 1]  # "after 6 p.m.": the grammar took the sentence's point as the abbreviation's
        out.append(said)
        if spoken is not None:
            spoken.add(len(said), piece=True)
        at = b
    out.append(text[at:])
    return "".join(out)


def read_piece(piece: str, grammar, lang: str) -> str:
    """One piece as the grammar says it; in English its long numbers through stand-ins, which the
    grammar reads in a fraction of the time (english_numbers)."""
    if lang == "en":
        stood, found = english_numbers.stand_ins(piece)
        if found:
            said = _said_by(grammar, stood, quiet=True)
            said = None if said is None else english_numbers.put_back(said, found)
            if said is not None:
                return said
    return _said_by(grammar, piece)


def _said_by(grammar, piece: str, quiet: bool = False) -> str | None:
    """What the grammar says; where it cannot parse the piece, the piece as written (None if `quiet`)."""
    try:
        return grammar.normalize(piece)
    except Exception as exc:  # noqa: BLE001 - a piece the grammar cannot parse is spoken as written
        if quiet:
            return None
        log.warning("text normalisation left '%s' as written: %s: %s", preview(piece), type(exc).__name__,
                    preview(exc))
        return piece


# --------------------------------------------------------------------------------------
# Other languages: numbers only, by num2words
# --------------------------------------------------------------------------------------


#: What typesetting puts between groups of thousands: never between two numbers.
NO_BREAK_SPACES = "\u00a0\u202f\u2009"
#: Significant digits of a decimal that num2words reads exactly: it goes through a float, whose last
#: digits are wrong past 14 (a sweep of 4,200 German decimals); past this the fraction's digits are
#: read one by one.
MAX_DECIMAL_DIGITS = 12
MINUS = "-\u2212"
#: What may stand before a minus that makes a number negative: "-7", "(-7)", not "5-7" or "a-7".
BEFORE_A_SIGN = " \t\n([{\"'«„“‘"


@functools.cache
def _number_pattern(point: str) -> re.Pattern:
    """A run of digit groups with their separators, a sign before and a fraction after; or a run of
    more digits than one number holds, anywhere. How a run splits into numbers is decided in
    `_numbers_of`: where the rule reads plainly, and in one pass."""
    group = "," if point == "." else "."
    p, g = re.escape(point), re.escape(group)
    # bounded by Latin letters and digits only: "5つ", "5个" are numbers too
    return re.compile(rf"(?<![0-9A-Za-z{p}{g}])(?P<sign>[{MINUS}])?(?P<groups>\d+(?:[{g} {NO_BREAK_SPACES}]\d+)*)"
                      rf"(?:{p}(?P<fraction>\d+))?(?![0-9A-Za-z])|(?P<run>\d{{{MAX_DIGIT_RUN + 1},}})")


def _point(lang: str) -> str:
    return "." if lang in DECIMAL_POINT else ","


def number_spans(text: str, lang: str) -> list[tuple[int, int]]:
    """The spans of `text` whose digits reach num2words: what MAX_NORMALIZE_CHARS counts for `lang`."""
    return [m.span() for m in _number_pattern(_point(lang)).finditer(text.translate(DIGITS_ONLY))]


def numbers_in(text: str, lang: str) -> str:
    """`text` with its numbers in `lang`'s words, asked of num2words' helper process all at once (and
    once more for the parts of those its converter could not read); a text without a number never
    reaches it."""
    text = text.translate(DIGITS_ONLY)
    point = _point(lang)
    pieces: list[tuple[str, str | None]] = []  # (as written, the number to say instead, or None)
    at = 0
    for m in _number_pattern(point).finditer(text):
        pieces.append((text[at:m.start()], None))
        pieces.extend(_numbers_of(m, point))
        at = m.end()
    pieces.append((text[at:], None))
    keys = list(dict.fromkeys(key for _, key in pieces if key is not None))
    if not keys:
        return text
    said = _ask(lang, [number for key in keys for number in _asked(key)], {})
    failed = [key.removeprefix(IN_PARTS) for key in keys if _reading(key, said, point) is None]
    said = _ask(lang, [number for key in failed for number in _parts(key)], said)
    return "".join(written if key is None else _reading(key, said, point) or written for written, key in pieces)


#: Before a number num2words would not read exactly (too many digits): it is read in parts only.
IN_PARTS = "parts:"


def _ask(lang: str, numbers: list[str], said: dict[str, str | None]) -> dict[str, str | None]:
    wanted = list(dict.fromkeys(number for number in numbers if number not in said))
    return said | dict(zip(wanted, number_words.words(lang, wanted))) if wanted else said


def _fits(number: str) -> bool:
    """Whether num2words reads `number` ("-123.45") exactly: an integer of up to 15 digits, a decimal
    of up to MAX_DECIMAL_DIGITS."""
    whole, _, fraction = number.lstrip("-").partition(".")
    return len(whole) <= MAX_DIGIT_RUN and (not fraction or len(whole) + len(fraction) <= MAX_DECIMAL_DIGITS)


def _asked(key: str) -> list[str]:
    return _parts(key.removeprefix(IN_PARTS)) if key.startswith(IN_PARTS) else [key]


def _parts(number: str) -> list[str]:
    """What `_reading` may need to read `number` in parts."""
    if number.startswith("-"):
        return [number[1:]] * _fits(number[1:]) + _parts(number[1:])
    if "." in number:
        whole, fraction = number.split(".")
        return [whole] * _fits(whole) + _parts(whole) + list(fraction)
    return list(number) if len(number) > 1 else []


def _reading(key: str, said: dict[str, str | None], point: str) -> str | None:
    """A number in words: as its converter said it or, where that raised (or the number has more
    digits than it reads exactly), in parts it can read: a negative's minus and then its value ("-5"
    in Polish), a decimal's whole part and then the fraction's digits ("8,1" in Turkish), an
    integer's digits (past ten digits in Kannada). None where a part cannot be read either: the
    number is then left as written."""
    number = key.removeprefix(IN_PARTS)
    if key == number and said.get(number):
        return said[number]
    if number.startswith("-"):
        value = _reading(number[1:], said, point)
        return "-" + value if value else None
    if "." in number:
        whole, fraction = number.split(".")
        parts = [_reading(whole, said, point)] + [said.get(d) for d in fraction]
        return f"{parts[0]}{point} " + " ".join(parts[1:]) if all(parts) else None
    digits = [said.get(d) for d in number] if len(number) > 1 else [None]
    return " ".join(digits) if all(digits) else None


def _numbers_of(m: re.Match, point: str) -> list[tuple[str, str | None]]:
    """One match as pieces (as written, its number's key): its groups cut into numbers, the
    separators between them kept, the sign on the first and the fraction on the last."""
    text = m.string
    if m.group("run"):
        return _padded([(m.group("run"), IN_PARTS + _ascii(m.group("run")))], text, m.start(), m.end())
    groups = [g.span() for g in re.finditer(r"\d+", m.group("groups"))]
    groups = [(a + m.start("groups"), b + m.start("groups")) for a, b in groups]
    sign = m.group("sign") or ""
    negative = bool(sign) and (m.start() == 0 or text[m.start() - 1] in BEFORE_A_SIGN)
    pieces = [] if negative or not sign else [(sign, None)]  # "x-5": the mark is not a minus
    numbers = _grouping(text, groups)
    for n, (first, last) in enumerate(numbers):
        if n:
            pieces.append((text[groups[first - 1][1]:groups[first][0]], None))
        written = text[groups[first][0]:groups[last][1]]
        fraction = m.group("fraction") if n == len(numbers) - 1 else None
        number = "-" * (negative and not n) + _ascii(re.sub(r"\D", "", written)) + \
            ("." + _ascii(fraction) if fraction else "")
        written = sign * (negative and not n) + written + (point + fraction if fraction else "")
        pieces.append((written, number if _fits(number) else IN_PARTS + number))
    return pieces


def _grouping(text: str, groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Which digit groups make one number: (first, last) indices into `groups`. A separator joins
    groups of exactly three digits after a first of one to three, the same separator throughout;
    a plain space only where no other reading is likely: after a first group of one or two digits
    ("12 345"), or where a group starts with 0 ("100 000"). "101 102 103" is three numbers, as the
    English and Chinese grammars read it."""
    numbers, i = [], 0
    while i < len(groups):
        j = i
        separator = text[groups[i][1]:groups[i + 1][0]] if i + 1 < len(groups) else None
        if groups[i][1] - groups[i][0] <= 3:
            while j + 1 < len(groups) and groups[j + 1][1] - groups[j + 1][0] == 3 \
                    and text[groups[j][1]:groups[j + 1][0]] == separator:
                j += 1
        if j > i and separator == " " and groups[i][1] - groups[i][0] == 3 \
                and not any(_ascii(text[a]) == "0" for a, _ in groups[i + 1:j + 1]):
            j = i
        numbers.append((i, j))
        i = j + 1
    return numbers


def _padded(pieces: list, text: str, start: int, end: int) -> list:
    """Digits read one by one inside a word ("abc1234567890123456"): a space on each side that
    touches a letter, or the words would run into it."""
    before = [(" ", None)] if start and text[start - 1].isalnum() else []
    after = [(" ", None)] if end < len(text) and text[end].isalnum() else []
    return before + pieces + after


def _ascii(digits: str) -> str:
    """Any script's decimal digits ("٣", "५") as ASCII ones, leading zeros kept."""
    return digits if digits.isascii() else "".join(str(int(d)) for d in digits)
