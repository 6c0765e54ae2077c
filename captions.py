"""Captions of a result: one per chunk of text, timed to the sample in the returned audio, and the
same as an SRT or WebVTT subtitle file."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from errors import os_error

#: captions_format -> content type of the subtitle file.
FORMATS = {"srt": "application/x-subrip", "vtt": "text/vtt"}


def timed(texts: list[str], spans: list[tuple[int, int]], rate: int, voices: list[str] | None = None) -> list[dict]:
    """`{"start_s", "end_s", "text"}` per chunk, and its `voice` where `voices` names each chunk's;
    `spans` in samples. Times to the microsecond, so a caption's span is its chunk's audio to the
    sample; neighbours in one voice overlap by their cross-fade, where both sound."""
    captions = [{"start_s": round(start / rate, 6), "end_s": round(end / rate, 6), "text": " ".join(text.split())}
                for text, (start, end) in zip(texts, spans)]
    for caption, voice in zip(captions, voices or []):
        caption["voice"] = voice
    return captions


def subtitles(captions: list[dict], fmt: str) -> str:
    """The captions as an SRT or WebVTT file: each cue its number (SRT), its timing line and one
    line of text (`cue_text`); a caption with no visible text has no cue."""
    cues = []
    for caption in captions:
        text = cue_text(caption["text"])
        if not text:
            continue
        if fmt == "vtt":
            text = _escaped(text)
            if "voice" in caption:  # WebVTT's voice span; SRT has no speaker field, its text stays the chunk's
                text = f"{_voice_tag(caption['voice'])}{text}"
        times = f"{_clock(caption['start_s'], fmt)} --> {_clock(caption['end_s'], fmt)}"
        cues.append(f"{len(cues) + 1}\n{times}\n{text}\n" if fmt == "srt" else f"{times}\n{text}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)


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


def write_subtitles(captions: list[dict], fmt: str, path: Path) -> str:
    """The subtitle file at `path`; returns its content type."""
    try:
        path.write_text(subtitles(captions, fmt), encoding="utf-8")
    except OSError as exc:
        raise os_error(exc, "the captions", "JOB_TMP_DIR", path) from None
    return FORMATS[fmt]


def _clock(seconds: float, fmt: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if fmt == 'srt' else '.'}{ms:03d}"
