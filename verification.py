"""Speech that is checked (a job's `verify`): each chunk's audio heard back by Whisper as soon as
its batch is decoded, compared with the text it should say, sampled again with the next seed when
words were dropped, repeated or changed, and its words timed from what was heard.

F5-TTS's known failures are wrong words rather than noise (a dropped or repeated word, the first
word of a short phrase lost, a sudden end, the reference's transcript leaking in), which a caller
otherwise finds only by listening. The comparison is a word error rate (a character error rate
for Chinese and Japanese, which are written without spaces), computed by jiwer on both texts
brought to one form: numbers and symbols read as words, in context, by the same normaliser that
wrote the spoken text (Whisper writes "2023" for "twenty twenty-three"), Traditional Chinese
characters as Simplified (Whisper writes either for Mandarin), case and punctuation folded away,
and each CJK character a token of its own.

Seeds: attempt 0 of every chunk is the job's seed (a verified job whose chunks all pass is the
unverified job's audio, bit for bit); attempt k is `attempt_seed(seed, k)`, the same for every
chunk of the job, so a verified job is reproducible from its seed.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

#: Characters written without spaces between words: a chunk mostly of these is compared by
#: characters, and each of them is a word of the word timings.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: A spoken unit: one CJK character, or a run of other non-space characters (punctuation stays
#: with the word it follows or precedes, as a caption shows it).
_UNIT = re.compile(f"[{_CJK}][^\\s{_CJK}\\w]*|[^\\s{_CJK}]+")
_KANA = re.compile("[\u3040-\u30ff]")
_CJK_CHAR = re.compile(f"[{_CJK}]")


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of a chunk's `attempt`-th sampling (0: the job's own)."""
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0]) & 0x7FFF_FFFF


@dataclass(frozen=True)
class Heard:
    """What the ASR heard in one chunk's audio: its text, and its words with their times (seconds
    in that audio; an end may be None, for the audio's end)."""

    text: str
    words: list[tuple[str, float, float | None]]


@dataclass(frozen=True)
class Word:
    """A word of the spoken text, timed in its chunk's audio (seconds). `interpolated`: the ASR did
    not hear it; its time lies between its neighbours'. `spaced`: a space came before it in the text."""

    word: str
    start: float
    end: float
    interpolated: bool = False
    spaced: bool = True


@dataclass
class Check:
    """One chunk's verdict: what was heard in the audio kept, its error, how many samplings were
    made of it, the seed of the one kept, and its words' times."""

    index: int
    heard: str
    error: float
    metric: str  # wer or cer
    seed: int
    words: list[Word]
    attempts: int = 1

    def report(self) -> dict:
        return {"index": self.index, "heard": self.heard, "error": round(self.error, 4), "metric": self.metric,
                "attempts": self.attempts, "seed": self.seed}


def units(text: str) -> list[tuple[str, bool]]:
    """The words of `text` as timed: (word, whether a space came before it). Punctuation standing
    alone joins the word it touches ("「你好」"), else the word before it ("Well — yes")."""
    found = [(m.group(), m.start(), m.end()) for m in _UNIT.finditer(text)]
    words: list[list] = []  # [word, spaced]
    carried, carried_spaced = "", True  # punctuation that leads the next word, and its spacing
    for n, (unit, start, end) in enumerate(found):
        spaced = start == 0 or text[start - 1].isspace()
        if any(ch.isalnum() for ch in unit):
            words.append([carried + unit, spaced if not carried else carried_spaced])
            carried = ""
        elif words and not (n + 1 < len(found) and found[n + 1][1] == end):  # touches no word after it
            words[-1][0] += (" " if spaced else "") + unit
        else:
            if not carried:
                carried_spaced = spaced
            carried += unit + ("" if n + 1 < len(found) and found[n + 1][1] == end else " ")
    if carried and words:
        words[-1][0] += " " + carried.strip()
    return [(word, spaced) for word, spaced in words]


def metric_of(text: str) -> str:
    """cer for a text mostly in CJK characters, else wer."""
    letters = [ch for ch in text if ch.isalnum()]
    cjk = sum(1 for ch in letters if _CJK_CHAR.match(ch))
    return "cer" if letters and cjk * 2 >= len(letters) else "wer"


def whisper_language(text: str, text_language: str | None) -> str | None:
    """The language to tell Whisper a chunk is in: the job's text_language (its ISO 639-1 part), or,
    when the job names none, the script's (Chinese, Japanese, else English: the languages the
    normaliser chooses between by itself). None: let Whisper detect it."""
    if text_language:
        code = re.split(r"[_-]", text_language)[0].lower()
        return code if len(code) == 2 else None
    if _KANA.search(text):
        return "ja"
    return "zh" if metric_of(text) == "cer" else "en"


def _folded(text: str) -> list[str]:
    """The tokens compared: case and punctuation folded away, Traditional Chinese characters as
    Simplified, each CJK character a token of its own (the text says 写代码, Whisper may hear 寫代碼)."""
    import zhconv

    if _CJK_CHAR.search(text):
        text = zhconv.convert(text, "zh-cn")
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(f" {ch} " if _CJK_CHAR.match(ch) else ch if unicodedata.category(ch)[0] in "LNM" else " "
                   for ch in text).split()


def _needs_reading(text: str) -> bool:
    return any(ch.isdigit() or unicodedata.category(ch)[0] == "S" for ch in text)


class Comparer:
    """Both sides of a comparison in one form. `read(texts)`: the normaliser that wrote the spoken
    text, in the job's language (digits, money, symbols as words); asked only of what holds them."""

    def __init__(self, read: Callable[[list[str]], list[str]]):
        self.read = read

    def tokens(self, texts: list[str], metric: str) -> list[list[str]]:
        todo = [n for n, text in enumerate(texts) if _needs_reading(text)]
        texts = list(texts)
        if todo:
            for n, said in zip(todo, self.read([texts[n] for n in todo])):
                texts[n] = said
        words = [_folded(text) for text in texts]
        if metric == "cer":  # characters are the tokens; spaces are not compared
            return [[ch for word in ws for ch in word] for ws in words]
        return words

    def error(self, text: str, heard: str, metric: str) -> float:
        """The error rate of `heard` against `text`, each read whole: a number's reading depends on
        its neighbours ("in 2023" is "in twenty twenty-three", "2023" alone "two thousand and
        twenty-three")."""
        import jiwer

        ref, hyp = (t for [t] in (self.tokens([text], metric), self.tokens([heard], metric)))
        if not ref:
            return 0.0
        if not hyp:
            return 1.0
        return float(jiwer.process_words(" ".join(ref), " ".join(hyp)).wer)

    def compare(self, text: str, heard: Heard, duration: float) -> tuple[float, str, list[Word]]:
        """The error of `heard` against `text`, and each word of `text` timed by what was heard:
        the spoken words and the heard ones aligned word by word (a number read alone may read
        otherwise than in its sentence, and goes untimed at worst: its time is then interpolated)."""
        import jiwer

        metric = metric_of(text)
        spoken = units(text)
        ref_tokens = self.tokens([w for w, _ in spoken], metric)
        hyp_tokens = self.tokens([w for w, _, _ in heard.words], metric)
        ref = [(u, tok) for u, toks in enumerate(ref_tokens) for tok in toks]
        hyp = []  # (token, start, end): a heard word of several tokens shares its span among them
        for (_, start, end), toks in zip(heard.words, hyp_tokens):
            end = duration if end is None else end
            step = (end - start) / max(len(toks), 1)
            hyp += [(tok, start + k * step, start + (k + 1) * step) for k, tok in enumerate(toks)]
        times: list[list[float]] = [[] for _ in spoken]
        if ref and hyp:
            out = jiwer.process_words(" ".join(t for _, t in ref), " ".join(t for t, _, _ in hyp))
            for chunk in out.alignments[0]:
                if chunk.type in ("equal", "substitute"):
                    for r, h in zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                                    range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                        times[ref[r][0]] += [hyp[h][1], hyp[h][2]]
        return self.error(text, heard.text, metric), metric, _filled(spoken, times, duration)


def _filled(spoken: list[tuple[str, bool]], times: list[list[float]], duration: float) -> list[Word]:
    """Words timed by what matched them; a word nothing matched gets an equal share of the gap
    between its timed neighbours (the chunk's start and end at the edges). Times never go back
    and stay within the chunk's audio."""
    spans: list[tuple[float, float] | None] = [(min(t), max(t)) if t else None for t in times]
    words, n = [], 0
    last_end = 0.0
    while n < len(spoken):
        if spans[n] is not None:
            start, end = spans[n]
            start = min(max(start, last_end), duration)
            end = min(max(end, start), duration)
            words.append(Word(spoken[n][0], start, end, False, spoken[n][1]))
            last_end = end
            n += 1
            continue
        gap_end = n
        while gap_end < len(spoken) and spans[gap_end] is None:
            gap_end += 1
        until = duration if gap_end == len(spoken) else min(max(spans[gap_end][0], last_end), duration)
        share = (until - last_end) / (gap_end - n)
        for k in range(n, gap_end):
            start = last_end + (k - n) * share
            words.append(Word(spoken[k][0], start, start + share, True, spoken[k][1]))
        last_end, n = until, gap_end
    return words


#: Chunks heard in one ASR call at most. Each is padded to Whisper's 30 s, and word timestamps
#: keep every decoding step's cross-attention: whisper-large-v3-turbo's 4 layers x 20 heads x
#: 1500 frames, 0.24 MB a token in fp16, so 16 chunks of 60 tokens hold 0.23 GB (a batch of short
#: chunks of a dialogue may hold 40 and more).
HEAR_BATCH = 16
#: `hear(waves, rate, language)`: what the ASR heard in each wave.
Hear = Callable[[list[np.ndarray], int, "str | None"], list[Heard]]
#: `resample(chunks, seed)`: the chunks sampled again with `seed`, their waves in that order.
Resample = Callable[[list, int], list[np.ndarray]]


@dataclass
class Verifier:
    """Checks a job's chunks as their batches are decoded (`synthesis.pieces` calls it with each
    batch's waves, and a way to sample chunks again), keeps each chunk's best attempt, and then
    reports on the job."""

    hear: Hear
    comparer: Comparer
    rate: int
    seed: int
    max_error: float
    attempts: int
    text_language: str | None = None
    asr_model: str = ""
    checks: dict[int, Check] = field(default_factory=dict)
    seconds: float = 0.0  # checking and re-sampling, all batches
    hearing_seconds: float = 0.0  # of which the ASR's

    def settle(self, chunks: list, waves: list[np.ndarray], resample: Resample) -> Iterator[list[tuple]]:
        """The chunks of one batch as they are settled, in groups of (chunk, the wave kept): first
        those heard right at once, then after each re-sampling those it put right (and, after the
        last allowed, the rest with their best attempts). A stream sends a chunk once it and those
        before it are settled: it never waits for the retries of a chunk after it."""
        clock = time.perf_counter()
        waves = list(waves)
        best = dict(zip(range(len(chunks)), self._checked(chunks, waves, self.seed)))
        failing = [n for n, check in best.items() if check.error > self.max_error]
        for attempt in range(1, self.attempts + 1):
            settled = [n for n in best if n not in failing] if attempt == 1 else \
                [n for n in failing_before if n not in failing]
            if attempt == self.attempts:
                settled += failing  # no attempt left: their best attempts
                failing = []
            for n in settled:
                self.checks[chunks[n].index] = best[n]
            if settled:
                self.seconds += time.perf_counter() - clock
                yield [(chunks[n], waves[n]) for n in settled]
                clock = time.perf_counter()
            if not failing:
                break
            seed = attempt_seed(self.seed, attempt)
            again = resample([chunks[n] for n in failing], seed)  # batched together, in one request
            for n, wave, check in zip(failing, again, self._checked([chunks[n] for n in failing], again, seed)):
                check.attempts = best[n].attempts = attempt + 1
                if check.error < best[n].error:  # a tie keeps the earlier attempt
                    best[n], waves[n] = check, wave
            failing_before, failing = failing, [n for n in failing if best[n].error > self.max_error]
        self.seconds += time.perf_counter() - clock

    def _checked(self, chunks: list, waves: list[np.ndarray], seed: int) -> list[Check]:
        groups: dict[str | None, list[int]] = {}
        for n, chunk in enumerate(chunks):
            groups.setdefault(whisper_language(chunk.text, self.text_language), []).append(n)
        heard: dict[int, Heard] = {}
        started = time.perf_counter()
        for language, members in groups.items():  # batched, HEAR_BATCH chunks at a time, per language
            for at in range(0, len(members), HEAR_BATCH):
                some = members[at:at + HEAR_BATCH]
                for n, said in zip(some, self.hear([waves[n] for n in some], self.rate, language)):
                    heard[n] = said
        self.hearing_seconds += time.perf_counter() - started
        checks = []
        for n, chunk in enumerate(chunks):
            error, metric, words = self.comparer.compare(chunk.text, heard[n], len(waves[n]) / self.rate)
            checks.append(Check(chunk.index, heard[n].text, error, metric, seed, words))
        return checks

    def summary(self) -> dict:
        """The job's verdict: whether every chunk met the bound, its worst chunk, what was re-sampled."""
        checks = [self.checks[i] for i in sorted(self.checks)]
        worst = max(checks, key=lambda c: c.error)
        return {
            "passed": all(c.error <= self.max_error for c in checks), "max_error": self.max_error,
            "worst_chunk": worst.index, "worst_error": round(worst.error, 4),
            "chunks_resampled": sum(c.attempts > 1 for c in checks), "samplings": sum(c.attempts for c in checks),
            "asr_model": self.asr_model, "chunks": [c.report() for c in checks],
        }


@dataclass(frozen=True)
class PlacedWord:
    """A word in the whole audio's timeline (samples), with its chunk and voice."""

    word: str
    start: int
    end: int
    interpolated: bool
    spaced: bool
    chunk: int
    voice: str | None = None


def placed(checks: dict[int, Check], spans: list[tuple[int, int]], rate: int,
           voices: list[str] | None = None) -> list[PlacedWord]:
    """Every chunk's words moved into the whole audio: from where its own audio begins, within its
    span. Neighbouring chunks overlap by their cross-fade, where both sound: a word there begins
    once the one before it has ended, so that times never go back."""
    words, last = [], 0
    for index, (start, end) in enumerate(spans):
        for w in checks[index].words:
            a = min(max(start + round(w.start * rate), last), end)
            b = max(a, min(start + round(w.end * rate), end))
            words.append(PlacedWord(w.word, a, b, w.interpolated, w.spaced, index, voices[index] if voices else None))
            last = b
    return words


def word_dicts(words: list[PlacedWord], rate: int) -> list[dict]:
    """The result's `words`: {"word", "start_s", "end_s"}, with `interpolated` where the ASR did not
    hear the word, and `voice` in a dialogue."""
    out = []
    for w in words:
        item = {"word": w.word, "start_s": round(w.start / rate, 6), "end_s": round(w.end / rate, 6)}
        if w.interpolated:
            item["interpolated"] = True
        if w.voice is not None:
            item["voice"] = w.voice
        out.append(item)
    return out
