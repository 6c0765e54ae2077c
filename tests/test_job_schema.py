"""parse_job_input alone (no model, no worker): what a job's input may hold, and what its errors
quote of it. Every echo of caller input is at most errors.PREVIEW_CHARS characters, with the
characters a reader would not see written as code points; invisible characters that mean
nothing are dropped from what is spoken."""

import logging

import pytest

from config import Settings
from errors import PREVIEW_CHARS, JobError
from job_schema import parse_job_input
from config import get_settings

VOICE = {"voice_base64": "AAAA"}  # never decoded here
HUGE = 1_000_000
#: The longest error message, and the longest log record of a failed job.
MAX_MESSAGE, MAX_LOG_RECORD = 400, 500


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.from_env({"RUNPOD_VOLUME": str(tmp_path_factory.mktemp("volume")), "MAX_VOICES": "64"})


def error_of(raw, settings) -> str:
    with pytest.raises(JobError) as err:
        parse_job_input(raw, settings)
    return err.value.message


def cut(ch: str) -> str:
    """How a long run of `ch` is quoted."""
    return ch * (PREVIEW_CHARS - 1) + "…"


# (id, input, what the error says): a million-character name in every place a name can be
ECHOES = [
    ("top-level-field", {"text": "Hi.", **VOICE, "x" * HUGE: 1}, cut("x") + ": is not a known field"),
    ("voices-key", {"voices": {"v" * HUGE: VOICE}, "text": "[a] Hi."}, f"voices: '{cut('v')}' is not a voice name"),
    ("voices-key-without-source", {"voices": {"v" * HUGE: {}}, "text": "[a] Hi."},
     f"voices.{cut('v')}: give exactly one of voice_name, voice_url, voice_base64"),
    ("field-inside-a-voice", {"voices": {"a": {**VOICE, "k" * HUGE: 1}}, "text": "[a] Hi."},
     f"voices.a.{cut('k')}: is not a known field"),
    ("field-inside-a-segment", {"voices": {"a": VOICE}, "segments": [{"voice": "a", "text": "Hi.", "s" * HUGE: 1}]},
     f"segments.0.{cut('s')}: is not a known field"),
    ("five-top-level-fields", {"text": "Hi.", **VOICE, **{f"{n}" + "f" * HUGE: 1 for n in range(5)}},
     "is not a known field; 1" + "f" * (PREVIEW_CHARS - 2) + "…"),
    ("five-fields-in-five-voices", {"voices": {f"{n}" + "v" * HUGE: {**VOICE, "k" * HUGE: 1} for n in range(5)},
                                    "text": "[a] Hi."}, "more)."),
    ("text-before-the-first-tag", {"voices": {"a": VOICE}, "text": "t" * HUGE + " [a] Hi."},
     f"text: '{cut('t')}' comes before the first [voice] tag"),
    ("text-language", {"text": "Hi.", **VOICE, "text_language": "q" * 8}, "text_language: 'qqqqqqqq' is not"),
    ("voice-names-listed", {"voices": {f"{n:02}" + "n" * 30: VOICE for n in range(64)},
                            "segments": [{"voice": "nobody", "text": "Hi."}]},
     "segments.0.voice names no voice of voices (00" + "n" * 30 + ", 01nnn…)"),
]


@pytest.mark.parametrize("raw, expected", [c[1:] for c in ECHOES], ids=[c[0] for c in ECHOES])
def test_an_error_quotes_at_most_a_preview_of_any_name(settings, raw, expected):
    message = error_of(raw, settings)
    assert expected in message
    assert len(message) < MAX_MESSAGE, len(message)


@pytest.mark.usefixtures("tiny_model")
def test_no_log_record_of_a_failed_job_quotes_a_whole_name(caplog):
    from runpod_handler import Worker

    worker = Worker(get_settings().model_copy(update={"max_voices": 64}))
    with caplog.at_level(logging.DEBUG):
        for case_id, raw, expected in ECHOES:
            assert expected in worker({"id": f"echo-{case_id}", "input": raw})["error"], case_id
    assert len(caplog.records) >= len(ECHOES)
    assert max(len(r.getMessage()) for r in caplog.records) < MAX_LOG_RECORD


def test_a_long_list_of_problems_says_how_many_more(settings):
    message = error_of({"text": "Hi.", **VOICE, **{f"{n}" + "f" * HUGE: 1 for n in range(50)}}, settings)
    assert message.endswith(" more).") and len(message) < MAX_MESSAGE
    shown = message.count(": is not a known field")
    assert 1 <= shown <= 5 and f"(and {50 - shown} more)" in message


@pytest.mark.parametrize("raw, expected", [
    ({"voices": {"alice": VOICE}, "text": "\x01[alice] Hello."}, "text: '<U+0001>' comes before the first [voice] tag"),
    ({"voices": {"a\u200b": VOICE}, "text": "[a] Hi."}, "voices: 'a<U+200B>' is not a voice name"),
    ({"voices": {"a\u202e": VOICE}, "text": "[a] Hi."}, "voices: 'a<U+202E>' is not a voice name"),
    ({"text": "Hi.", **VOICE, "text_language": "en\u200b"}, "text_language: 'en<U+200B>' is not a language"),
    ({"text": "Hi.", **VOICE, "\ufeff": 1}, "Invalid input: <U+FEFF>: is not a known field."),
    ({"text": "Hi.", **VOICE, "evil\nINFO job done": 1}, "evil<U+000A>INFO job done: is not a known field"),
    ({"text": "Hi.", **VOICE, "\u3164": 1}, "<U+3164>: is not a known field"),  # a Hangul filler: a blank letter
], ids=["control", "zero-width-space", "bidi-override", "in-a-language", "bom-field", "newline", "blank-letter"])
def test_a_quoted_character_that_shows_nothing_is_shown_by_its_code_point(settings, raw, expected):
    message = error_of(raw, settings)
    assert expected in message
    assert "\n" not in message and all(ch not in message for ch in "\x01\u200b\u202e\ufeff\u3164")


def test_a_byte_order_mark_before_the_first_tag_is_not_text(settings):
    job = parse_job_input({"voices": {"alice": VOICE}, "text": "\ufeff[alice] Hello."}, settings)
    assert [(s.voice, s.text) for s in job.segments_in_order()] == [("alice", "Hello.")]


@pytest.mark.parametrize("sent, spoken", [
    ("\ufeffHello there.", "Hello there."),
    ("Hel\u200blo\u2060 there\u00ad.", "Hello there."),
    ("\u200e\u202bHello\u202c there.\u200f", "Hello there."),
    ("\u200dHello \u200cthere.\u200d", "Hello there."),  # joiners at a word's edge join nothing
    ("Family: 👨\u200d👩\u200d👧.", "Family: 👨\u200d👩\u200d👧."),  # an emoji sequence keeps its joiners
    ("من می\u200cخواهم.", "من می\u200cخواهم."),  # Persian keeps its non-joiner
    ("क्\u200dष", "क्\u200dष"),  # so does Devanagari its joiner
])
def test_invisible_characters_that_mean_nothing_are_not_spoken(settings, sent, spoken):
    assert parse_job_input({"text": sent, **VOICE}, settings).text == spoken
    assert parse_job_input({"text": "Hi.", **VOICE, "ref_text": sent}, settings).ref_text == spoken
    dialogue = parse_job_input({"voices": {"a": {**VOICE, "ref_text": sent}},
                                "segments": [{"voice": "a", "text": sent}]}, settings)
    assert dialogue.segments_in_order()[0].text == spoken and dialogue.voices["a"].ref_text == spoken
    tagged = parse_job_input({"voices": {"a": VOICE}, "text": "[a] " + sent}, settings)
    assert tagged.segments_in_order()[0].text == spoken


@pytest.mark.parametrize("raw, expected", [
    ({"text": "\ufeff\u200b", **VOICE}, "text: has nothing to speak"),
    ({"text": "Hi.", **VOICE, "ref_text": "\ufeff \u200b"}, "ref_text: has no letters or digits"),
    ({"voices": {"a": VOICE}, "segments": [{"voice": "a", "text": "\u200b"}]}, "segments.0.text: has nothing to speak"),
])
def test_a_text_of_nothing_but_invisible_characters_is_refused_not_taken_for_blank(settings, raw, expected):
    assert expected in error_of(raw, settings)


def test_a_blank_ref_text_still_means_transcribe_it(settings):
    assert parse_job_input({"text": "Hi.", **VOICE, "ref_text": "  "}, settings).ref_text == ""
