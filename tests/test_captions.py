"""Captions: one per chunk, timed to the sample in the returned audio (cross-fades and shortened
pauses included), and the same as SRT or WebVTT files delivered beside the audio."""

import base64
import html
import io
import random
import re

import numpy as np
import pysubs2
import pytest
import soundfile as sf
import srt
from conftest import BUCKET, REF_TEXT, REF_WAV, job_dirs

import audio_io
import captions
import loaded_model
import synthesis
from runpod_handler import Worker
from synthesis import SynthesisParams
from config import get_settings

LONG = " ".join(f"Sentence number {n} of a text long enough to need several chunks." for n in range(6))
VOICE = base64.b64encode(REF_WAV.read_bytes()).decode()


def job(**fields):
    return {"id": "captions-" + ("-".join(sorted(fields)) or "plain"),
            "input": {"text": LONG, "voice_base64": VOICE, "ref_text": REF_TEXT, "nfe_step": 4, "seed": 2, **fields}}


@pytest.mark.usefixtures("tiny_model")
@pytest.mark.parametrize("fade", [0.0, 0.15])
def test_each_caption_spans_its_chunks_audio_to_the_sample(monkeypatch, fade):
    model = loaded_model.get_model(get_settings())
    reference, _ = sf.read(REF_WAV, dtype="float32")
    params = SynthesisParams(nfe_step=4, seed=1, cross_fade_duration=fade)
    plan = synthesis.plan_synthesis(model, len(reference), REF_TEXT, LONG, params, 4_000)
    decoded, real = [], model.vocoder.decode
    monkeypatch.setattr(model.vocoder, "decode", lambda mel: decoded.append(real(mel)) or decoded[-1])
    result = synthesis.run(model, reference, plan, params)
    order = [c.index for batch in plan.batches for c in batch]  # the order the chunks were decoded in
    waves = {i: w.squeeze(0).numpy() for i, w in zip(order, decoded)}
    n = int(fade * model.sample_rate)
    assert len(result.spans) == len(plan.chunks) >= 3
    for i, (start, end) in enumerate(result.spans):
        wave = waves[i]
        assert end - start == len(wave)
        inner = slice(n if i else 0, len(wave) - (n if i < len(waves) - 1 else 0))  # outside the cross-fades
        assert np.array_equal(result.audio[start:end][inner], wave[inner])
    assert result.spans[0][0] == 0 and result.spans[-1][1] == len(result.audio)
    assert all(b[0] == a[1] - n for a, b in zip(result.spans, result.spans[1:]))  # neighbours share the fade


def test_cut_pauses_move_the_captions_with_the_audio():
    rng = np.random.default_rng(0)
    rate = 24_000
    sound, pause = rng.uniform(-0.5, 0.5, rate).astype(np.float32), np.zeros(3 * rate, np.float32)
    audio = np.concatenate([sound, pause, sound, pause, sound])
    cuts = audio_io.long_pauses(audio, rate)
    shorter = audio_io.without(audio, cuts)
    assert len(cuts) == 2 and len(shorter) == len(audio) - sum(b - a for a, b in cuts)
    assert len(shorter) / rate == pytest.approx(1 + 1 + 1 + 1 + 1, abs=0.05)  # each 3 s pause now 1 s
    for position in [0, rate - 1, rate + 10, 5 * rate, 7 * rate + 5, len(audio) - 1]:
        if not any(a <= position < b for a, b in cuts):  # a kept sample is where the map says
            assert shorter[audio_io.after_cuts(position, cuts)] == audio[position]
    assert audio_io.after_cuts(len(audio), cuts) == len(shorter)


SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n([^\n]+)\n")
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n([^\n]+)\n")


def seconds(h, m, s, ms):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_subtitle_files_are_strictly_formed_and_escape_what_would_break_them():
    timed = [{"start_s": 0.0, "end_s": 1.5, "text": "Hello --> there"},
             {"start_s": 3661.25, "end_s": 3662.0004, "text": "Fish & <chips>"}]
    srt = captions.subtitles(timed, "srt")
    cues = SRT_CUE.findall(srt)
    assert "\n".join(SRT_CUE.sub("CUE", srt).split("\n")) == "CUE\nCUE"  # nothing but cues, one blank line apart
    assert [c[0] for c in cues] == ["1", "2"] and cues[0][9] == "Hello → there"
    assert seconds(*cues[1][1:5]) == 3661.25 and seconds(*cues[1][5:9]) == 3662.0
    vtt = captions.subtitles(timed, "vtt")
    assert vtt.startswith("WEBVTT\n\n") and VTT_CUE.sub("CUE", vtt[8:]) == "CUE\nCUE"
    assert VTT_CUE.findall(vtt)[1][8] == "Fish &amp; &lt;chips&gt;"


@pytest.mark.usefixtures("tiny_model")
def test_captions_come_with_every_result_and_a_subtitle_file_to_s3(s3):
    out = Worker(get_settings())(job(captions_format="srt"))
    assert "error" not in out, out
    caps = out["captions"]
    # the captions say what was spoken: the normalised text ("Sentence number 0" read as "... zero")
    assert out["normalized_text"] == " ".join(f"Sentence number {n} of a text long enough to need several chunks."
                                              for n in ("zero", "one", "two", "three", "four", "five"))
    assert len(caps) == out["chunks"] and " ".join(c["text"] for c in caps).split() == out["normalized_text"].split()
    assert caps[0]["start_s"] == 0 and caps[-1]["end_s"] == pytest.approx(out["duration_s"], abs=1e-3)
    assert all(round((c["end_s"] - c["start_s"]) * 24_000) % 256 == 0 for c in caps)  # whole mel frames
    key = out["captions_s3_key"]
    assert key == f"output/{job(captions_format='srt')['id']}.srt" and "Signature" in out["captions_url"]
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    assert obj["ContentType"] == "application/x-subrip"
    cues = SRT_CUE.findall(obj["Body"].read().decode())
    assert [c[9] for c in cues] == [c["text"] for c in caps]
    assert [seconds(*c[1:5]) for c in cues] == [round(c["start_s"], 3) for c in caps]
    assert "captions_text" not in out and job_dirs() == []


@pytest.mark.usefixtures("tiny_model")
def test_without_s3_the_subtitles_come_inline_and_to_the_local_folder():
    out = Worker(get_settings().model_copy(update={"s3_bucket": None}))(job(captions_format="vtt"))
    assert "error" not in out, out
    assert out["captions_text"].startswith("WEBVTT\n\n") and len(VTT_CUE.findall(out["captions_text"])) == out["chunks"]
    with open(out["captions_local_path"], encoding="utf-8") as fh:
        assert fh.read() == out["captions_text"]
    audio, rate = sf.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert out["captions"][-1]["end_s"] == pytest.approx(len(audio) / rate, abs=1e-5)


@pytest.mark.usefixtures("tiny_model")
def test_a_streamed_job_has_the_captions_of_its_pieces():
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None, "stream": True}))
    *parts, done = worker.stream(job())
    pieces = [p for p in parts if p["part"] == 0]  # a piece over PART_SECONDS comes in parts, each with its text
    assert [c["text"] for c in done["captions"]] == [p["text"] for p in pieces]
    assert [c["start_s"] for c in done["captions"]] == pytest.approx([p["start_s"] for p in pieces], abs=2e-3)
    assert done["captions"][-1]["end_s"] == pytest.approx(parts[-1]["start_s"] + parts[-1]["duration_s"], abs=2e-3)


@pytest.mark.usefixtures("tiny_model")
def test_an_unknown_captions_format_is_refused():
    out = Worker(get_settings().model_copy(update={"s3_bucket": None}))(job(captions_format="ass"))
    assert out == {"error": "Invalid input: captions_format: input should be 'srt', 'vtt' or 'vtt_words'."}


@pytest.mark.usefixtures("tiny_model")
def test_shortened_pauses_move_the_captions(monkeypatch):
    """The tiny model makes no pauses: one is declared in the second chunk, 0.5 s long."""
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    plain = worker(job())["captions"]
    cut = round(plain[0]["end_s"] * 24_000) + 3000  # inside the second chunk, past the first one's end
    monkeypatch.setattr(audio_io, "long_pauses", lambda audio, rate: [(cut, cut + 12_000)])
    out = worker(job(remove_silence=True))
    assert "error" not in out, out
    moved = out["captions"]
    assert moved[0] == plain[0] and moved[1]["start_s"] == plain[1]["start_s"]
    assert moved[1]["end_s"] == pytest.approx(plain[1]["end_s"] - 0.5, abs=1e-6)
    assert all(m["start_s"] == pytest.approx(p["start_s"] - 0.5, abs=1e-6) for m, p in zip(moved[2:], plain[2:]))
    assert moved[-1]["end_s"] == pytest.approx(out["duration_s"], abs=1e-3)


def test_a_failed_subtitle_upload_fails_the_job_and_leaves_no_local_copies(tmp_path):
    from delivery import Delivery

    class Storage:  # the audio goes up, the subtitle file does not
        def upload(self, path, key, content_type):
            if key.endswith(".srt"):
                raise ConnectionError("connection reset")

        def presign(self, key, expires):
            return f"https://bucket.test/{key}?X-Amz-Signature=x"

    settings = get_settings().model_copy(update={"output_dir": tmp_path / "out", "write_local_output": True})
    audio, text = tmp_path / "j.wav", tmp_path / "j.srt"
    audio.write_bytes(b"RIFF" + bytes(100))
    text.write_text("1\n00:00:00,000 --> 00:00:01,000\nHi\n")
    with pytest.raises(ConnectionError):
        Delivery(settings, Storage()).deliver(audio, "output/j.wav", "audio/wav", False,
                                              (text, "output/j.srt", "application/x-subrip"))
    assert list((tmp_path / "out").iterdir()) == []
    out = Delivery(settings, None).deliver(audio, "output/j.wav", "audio/wav", False,
                                           (text, "output/j.srt", "application/x-subrip"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["j.srt", "j.wav"]
    assert out["captions_text"] == text.read_text() and out["captions_local_path"].endswith("j.srt")


# --- cue text that no reader takes for anything but text (issue 24, item 6) ----------------------

WJ = "\u2060"  # the word joiner that follows a colon between digits


@pytest.mark.parametrize("text, expected", [
    # the cases: "--->" became "-->" after one pass of str.replace
    ("00:00:05,000 ---> 00:00:59,000 INJECTED cue text here.",
     f"00:{WJ}00:{WJ}05,000 → 00:{WJ}00:{WJ}59,000 INJECTED cue text here."),
    ("Hello ---> world", "Hello → world"),
    ("Hello --> there -> here", "Hello → there → here"),
    ("a - - > b, c --  > d", "a → b, c → d"),  # the srt library reads "- >" as an arrow too
    ("en\u2013> em\u2014\u2014> minus\u2212\u2212> wide\uff0d\uff0d>", "en→ em→ minus→ wide→"),
    # a cue boundary and a forged cue of its own: everything on one line
    ("one\n\n2\n00:00:01,000 --> 00:00:02,000\ntwo", f"one 2 00:{WJ}00:{WJ}01,000 → 00:{WJ}00:{WJ}02,000 two"),
    ("NUL\x00here\r\nand\u2028there\u2029now\x85end\tok\x0b\x0c\x1c.", "NUL here and there now end ok ."),
    ("\ufeffbidi \u202eevil\u202c zero\u200bwidth\u00ad", "bidi evil zerowidth"),
    ("lone \ud800 surrogate", "lone surrogate"),  # UTF-8 cannot hold it: the file could not be written
    ("\U0001F468\u200d\U0001F469 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
     "\U0001F468\u200d\U0001F469 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),  # joiners kept
    ("Fish & <chips> at 3:15, \u0661:\u0662", f"Fish & <chips> at 3:{WJ}15, \u0661:{WJ}\u0662"),
    ("\n\x00 \u200b\r\n", ""),
])
def test_cue_text_is_one_line_with_no_arrow_and_no_timestamp(text, expected):
    assert captions.cue_text(text) == expected
    assert captions.cue_text(expected) == expected  # what it writes it leaves as it is


#: Pieces of hostile text: arrows whole and in parts, line breaks of every kind, NUL, digits and the
#: separators of timestamps, and whole forged cues in each format.
HOSTILE_PIECES = ["-", "-", "--", ">", ">", " ", " ", "\n", "\n\n", "\r", "\r\n", "\x00", "\t", "\x85", "\u2028",
                  "\u2029", "\ufeff", "\u200b", "\u2013", "\u2212", "0", "1", "5", "9", "00", "59", ":", ":", ",", ".",
                  "-->", "--->", "- >", "->", "<", "&", "WEBVTT", "NOTE", "a", "Hi", "\u00e9",
                  "\n\n7\n00:00:05,000 --> 00:00:59,000\nINJECTED", "\n\n00:05.000 --> 00:59.000\nINJECTED",
                  "00:00:05,000 00:00:59,000", "00:05.000 00:59.000", "1:2:3,4"]


def hostile_files(count, seed=24):
    """`count` caption lists of one to four cues each, every text a random run of hostile pieces."""
    rng = random.Random(seed)
    for _ in range(count):
        start, caps = 0.0, []
        for _ in range(rng.randint(1, 4)):
            text = "".join(rng.choice(HOSTILE_PIECES) for _ in range(rng.randint(1, 30)))
            end = start + rng.randint(1, 9000) / 1000
            caps.append({"start_s": start, "end_s": end, "text": text})
            start = end + rng.choice([0, 0.25])
        yield caps


def ours(caps):
    """(start ms, end ms, text) of each cue the file should hold: captions with visible text."""
    return [(round(c["start_s"] * 1000), round(c["end_s"] * 1000), captions.cue_text(c["text"]))
            for c in caps if captions.cue_text(c["text"])]


def as_ms(delta):
    return round(delta.total_seconds() * 1000)


def test_no_text_makes_a_cue_of_its_own_in_srt():
    """Parsed by the srt library (strict: a file it cannot read whole raises) and by pysubs2
    (lenient: any line with two timestamps, arrow or not, begins a cue): the cues are ours."""
    files = list(hostile_files(150))
    assert sum(len(caps) for caps in files) >= 300
    for caps in files:
        text, expected = captions.subtitles(caps, "srt"), ours(caps)
        parsed = [(s.index, as_ms(s.start), as_ms(s.end), s.content) for s in srt.parse(text)]
        assert parsed == [(n, *cue) for n, cue in enumerate(expected, 1)], text
        lenient = pysubs2.SSAFile.from_string(text, format_="srt", keep_html_tags=True)
        assert [(e.start, e.end, e.text) for e in lenient] == expected, text
        blocks = text.split("\n\n")  # and as written: number, timing line, one line of text
        assert [block.rstrip("\n").count("\n") for block in blocks] == [2] * len(expected), text


def test_no_text_makes_a_cue_of_its_own_in_webvtt():
    """WebVTT ends a cue's text at a blank line or at a line holding "-->" (a timing line)."""
    for caps in hostile_files(150, seed=25):
        for n, caption in enumerate(caps):  # some cues in a voice, some without
            if n % 2:
                caption["voice"] = random.Random(n).choice(["alice", "bob-", "x--", "a_b"])
        text, expected = captions.subtitles(caps, "vtt"), ours(caps)
        lenient = pysubs2.SSAFile.from_string(text, format_="vtt", keep_html_tags=True)
        assert [(e.start, e.end) for e in lenient] == [cue[:2] for cue in expected], text
        spoken = [re.sub(r"^<v [^>]*>", "", e.text) for e in lenient]
        assert [html.unescape(s) for s in spoken] == [cue[2] for cue in expected], text
        lines = text.split("\n")
        assert lines[:2] == ["WEBVTT", ""] and lines[-1] == ""
        cues = [lines[i:i + 3] for i in range(2, len(lines) - 1, 3)]
        assert len(cues) == len(expected) and all(c[0].count("-->") == 1 and c[2] == "" for c in cues), text
        assert all(c[1].strip() and "-->" not in c[1] for c in cues), text


@pytest.mark.parametrize("voice, tag", [("alice", "<v alice>"), ("x--", "<v x-- >"), ("a-", "<v a- >")])
def test_a_voice_name_ending_in_dashes_does_not_close_its_tag_into_an_arrow(voice, tag):
    vtt = captions.subtitles([{"start_s": 0.0, "end_s": 1.0, "text": "Hi.", "voice": voice}], "vtt")
    assert vtt == f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{tag}Hi.\n"


def test_a_caption_with_nothing_to_show_has_no_cue_and_the_numbers_stay_in_order(tmp_path):
    caps = [{"start_s": 0.0, "end_s": 1.0, "text": "One."}, {"start_s": 1.0, "end_s": 2.0, "text": "\u200b\n\x00"},
            {"start_s": 2.0, "end_s": 3.0, "text": "Three \ud800."}]
    path = tmp_path / "c.srt"
    assert captions.write_subtitles(caps, "srt", path) == "application/x-subrip"
    assert path.read_text(encoding="utf-8") == ("1\n00:00:00,000 --> 00:00:01,000\nOne.\n\n"
                                                "2\n00:00:02,000 --> 00:00:03,000\nThree .\n")


@pytest.mark.parametrize("text, normalize, fmt", [
    ("00:00:05,000 ---> 00:00:59,000 INJECTED cue text here.", False, "srt"),
    ("Hello ---> world.\n\n3\n00:00:05,000 --> 00:00:59,000\nINJECTED", True, "srt"),
])
@pytest.mark.usefixtures("tiny_model")
def test_a_job_cannot_forge_a_cue(text, normalize, fmt):
    """The issue's jobs: a reader of the subtitle file saw a cue from 5 to 59 s (WebVTT held; its
    files are read over many more texts above)."""
    worker = Worker(get_settings().model_copy(update={"s3_bucket": None}))
    out = worker(job(text=text, normalize=normalize, captions_format=fmt))
    assert "error" not in out, out
    file = pysubs2.SSAFile.from_string(out["captions_text"], format_=fmt, keep_html_tags=True)
    assert [(e.start, e.end) for e in file] == [(round(c["start_s"] * 1000), round(c["end_s"] * 1000))
                                                for c in out["captions"]]
    assert "-->" not in "".join(e.text for e in file) and file[-1].end < 59_000
    if fmt == "srt":
        assert [s.content for s in srt.parse(out["captions_text"])] == [captions.cue_text(c["text"])
                                                                         for c in out["captions"]]
