"""Captions of a result: one per chunk of text, timed to the sample in the returned audio, and the
same as an SRT or WebVTT subtitle file; for a verified job, also WebVTT with each word's time
inside its cue (vtt_words)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from errors import os_error

#: captions_format -> content type of the subtitle file.
FORMATS = {"srt": "application/x-subrip", "vtt": "text/vtt", "vtt_words": "text/vtt"}
#: captions_format -> the subtitle file's extension.
EXTENSIONS = {"srt": "srt", "vtt": "vtt", "vtt_words": "vtt"}


@dataclass(frozen=True)
class CueWord:
    """A word of a cue, when it begins (seconds in the audio), and whether a space comes before it."""

    text: str
    start_s: float
    spaced: bool = True


def timed(texts: list[str], spans: list[tuple[int, int]], rate: int, voices: list[str] | None = None) -> list[dict]:
    """`{"start_s", "end_s", "text"}` per chunk, and its `voice` where `voices` names each chunk's;
    `spans` in samples. Times to the microsecond, so a caption's span is its chunk's audio to the
    sample; neighbours in one voice overlap by their cross-fade, where both sound."""
    captions = [{"start_s": round(start / rate, 6), "end_s": round(end / rate, 6), "text": " ".join(text.split())}
                for text, (start, end) in zip(texts, spans)]
    for caption, voice in zip(captions, voices or []):
        caption["voice"] = voice
    return captions


def subtitles(captions: list[dict], fmt: str, words: list[list[CueWord]] | None = None) -> str:
    """The captions as an SRT or WebVTT file: each cue its number (SRT), its timing line and one
    line of text (`cue_text`); a caption with no visible text has no cue. vtt_words: WebVTT whose
    cues hold each word's time (`words`: each caption's) as WebVTT's cue timestamps
    ("<00:00:01.250>word"), with which browsers mark the words said so far; a player that does not
    read them shows the cue as plain WebVTT."""
    cues = []
    for n, caption in enumerate(captions):
        text = cue_text(caption["text"])
        if not text:
            continue
        if fmt != "srt":
            timed_words = words[n] if fmt == "vtt_words" and words is not None else None
            text = _timed_words(timed_words, caption["start_s"], caption["end_s"]) if timed_words else _escaped(text)
            if "voice" in caption:  # WebVTT's voice span; SRT has no speaker field, its text stays the chunk's
                text = f"{_voice_tag(caption['voice'])}{text}"
        times = f"{_clock(caption['start_s'], fmt)} --> {_clock(caption['end_s'], fmt)}"
        cues.append(f"{len(cues) + 1}\n{times}\n{text}\n" if fmt == "srt" else f"{times}\n{text}\n")
    return ("WEBVTT\n\n" if fmt != "srt" else "") + "\n".join(cues)


def _timed_words(words: list[CueWord], start_s: float, end_s: float) -> str:
    """A cue's text, each word after the first led by its time. WebVTT wants each such time after
    the cue's start and every time before it, and before the cue's end: a word whose time is not
    (it begins with the one before it, to the millisecond) follows without one."""
    parts, last, end = [], round(start_s * 1000), round(end_s * 1000)
    for word in words:
        text = _escaped(cue_text(word.text))
        if not text:
            continue
        at = round(word.start_s * 1000)
        tag = f"<{_clock(at / 1000, 'vtt')}>" if parts and last < at < end else ""
        last = at if tag else last
        parts.append((" " if parts and word.spaced else "") + tag + text)
    return "".join(parts)


#: Dash characters a reader may take for the hyphens of "-->".
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
#: A dash, then any dashes and spaces, then ">": "-->", "--->", "- ->", "–>" ... (readers differ
#: in what they take for the arrow of a timing line; the srt library accepts "- >").
_ARROW = re.compile(f"[{_DASHES}][{_DASHES} ]*>")
#: A colon between digits, as every timestamp has: some readers (pysubs2) take any line holding
#: two timestamps for a timing line, with or without an arrow.
_TIME_COLON = re.compile(r"(?<=\d):(?=\d)")
_WORD_JOINER = "\u2060"  # shows nothing and keeps the digits either side together
#: Kept: the zero-width joiner and non-joiner shape emoji sequences and Persian and Indic words.
_JOINERS = frozenset("\u200c\u200d")


def cue_text(text: str) -> str:
    """`text` as one line of a cue that no reader can take for anything but text.

    Line breaks, controls (NUL included) and other spaces become one space, so the text cannot
    end its cue or begin a line of its own (a cue number, a timing line); format characters
    (byte order marks, bidi overrides, zero-width spaces) and lone surrogates (which UTF-8
    cannot hold) are dropped. Every arrow (`_ARROW`) becomes "→", in one pass that leaves none
    behind, and a word joiner follows each colon between digits, so that "00:00:05,000" shows as
    written and reads as no timestamp."""
    shown = "".join(_visible_or_space(ch) for ch in text)
    one_line = " ".join(shown.split())
    return _TIME_COLON.sub(":" + _WORD_JOINER, _ARROW.sub("→", one_line))


def _visible_or_space(ch: str) -> str:
    category = unicodedata.category(ch)
    if category in ("Cc", "Zl", "Zp"):
        return " "
    if category in ("Cf", "Cs") and ch not in _JOINERS:
        return ""
    return ch


def _escaped(text: str) -> str:
    """WebVTT text: & and < begin markup, and > ends it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _voice_tag(voice: str) -> str:
    """`<v name>`; a name ending in "-" gets a space before the ">" (which the voice span ignores),
    or "<v a-->" would hold the arrow of a timing line."""
    name = _escaped(cue_text(voice))
    return f"<v {name} >" if name.endswith("-") else f"<v {name}>"


def write_subtitles(captions: list[dict], fmt: str, path: Path, words: list[list[CueWord]] | None = None) -> str:
    """The subtitle file at `path`; returns its content type."""
    try:
        path.write_text(subtitles(captions, fmt, words), encoding="utf-8")
    except OSError as exc:
        raise os_error(exc, "the captions", "JOB_TMP_DIR", path) from None
    return FORMATS[fmt]


def _clock(seconds: float, fmt: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if fmt == 'srt' else '.'}{ms:03d}"
