"""Captions of a result: one per chunk of text, timed to the sample in the returned audio, and the
same as an SRT or WebVTT subtitle file."""

from __future__ import annotations

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
    """The captions as an SRT or WebVTT file."""
    cues = []
    for number, caption in enumerate(captions, 1):
        # "-->" would read as a timing line; in WebVTT, & and < begin markup.
        text = caption["text"].replace("-->", "->")
        if fmt == "vtt":
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            if "voice" in caption:  # WebVTT's voice span; SRT has no speaker field, its text stays the chunk's
                text = f"<v {caption['voice']}>{text}"
        times = f"{_clock(caption['start_s'], fmt)} --> {_clock(caption['end_s'], fmt)}"
        cues.append(f"{number}\n{times}\n{text}\n" if fmt == "srt" else f"{times}\n{text}\n")
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)


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
