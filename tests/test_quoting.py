"""How caller input is quoted in errors and log lines (errors.preview: at most PREVIEW_CHARS
characters, each one visible), and the invisible characters dropped from what is spoken."""

import pytest

from config import Settings
from errors import PREVIEW_CHARS, LimitExceeded, preview
from invisible import is_hidden, without_invisible
from transcripts import Transcripts
from voices import S3Sidecar, StagedVoice


@pytest.mark.parametrize("value, quoted", [
    ("a" * PREVIEW_CHARS, "a" * PREVIEW_CHARS),  # what fits is quoted whole
    ("a" * (PREVIEW_CHARS + 1), "a" * (PREVIEW_CHARS - 1) + "…"),
    ("\ufeffalice", "<U+FEFF>alice"),
    ("two\nlines\r", "two<U+000A>lines<U+000D>"),
    ("\u202eevil", "<U+202E>evil"),
    ("a\u00a0b\u3000c", "a<U+00A0>b<U+3000>c"),  # spaces a reader takes for plain ones
    ("\ud800", "<U+D800>"),  # a lone surrogate (JSON allows one) could not even be encoded
    ("\U000e0041\ue000\U0010ffff", "<U+E0041><U+E000><U+10FFFF>"),  # a tag, private use, unassigned
    ("Grüße, 東京, مرحبا, 👋", "Grüße, 東京, مرحبا, 👋"),  # what shows is left as it is
    (12, "12"),
])
def test_preview_shows_every_character_it_quotes(value, quoted):
    assert preview(value) == quoted


def test_preview_counts_code_points_towards_its_limit_and_never_cuts_one():
    quoted = preview("\u200b" * 1_000_000)
    assert len(quoted) <= PREVIEW_CHARS and quoted.endswith("<U+200B>…")
    assert quoted == "<U+200B>" * ((PREVIEW_CHARS - 1) // 8) + "…"
    assert preview("a" * 35 + "\u200b") == "a" * 35 + "…"  # 35 + 8 would not fit


@pytest.mark.parametrize("ch", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u061c",
                                "\u2066", "\x00", "\x7f", "\u2028", "\u3164", "\u2800", "\ufe0f", "\u034f"])
def test_characters_that_show_nothing_are_hidden(ch):
    assert is_hidden(ch)


@pytest.mark.parametrize("ch", [" ", "a", "ß", "東", "ا", "\u0301", "👋", "-", "…"])
def test_characters_that_show_are_not(ch):
    assert not is_hidden(ch)


@pytest.mark.parametrize("text, kept", [
    ("\ufeff\ufeffHi", "Hi"),
    ("a\u200d\u200b b", "a b"),  # a joiner left at a word's edge once a zero-width space is gone
    ("\u200d", ""),
    ("👩\u200d💻 codes", "👩\u200d💻 codes"),
    ("no\u200cjoin", "no\u200cjoin"),
])
def test_without_invisible(text, kept):
    assert without_invisible(text) == kept


class OneSidecar:
    """Storage holding one transcript beside the voice."""

    def __init__(self, key: str, text: str):
        self.key, self.text = key, text

    def read_text(self, key):
        return (self.text, {}) if key == self.key else None


def sidecar_transcript(tmp_path, name: str, text: str):
    settings = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path)})
    voice = StagedVoice(tmp_path / "voice", "name", S3Sidecar(OneSidecar(f"voices/{name}.txt", text),
                                                              f"voices/{name}.txt", f"voices/{name}.wav", "etag"))
    return Transcripts(settings).find(None, None, voice, None, 24_000)


def test_a_stored_transcript_is_read_without_its_byte_order_mark(tmp_path):
    """As a text editor on Windows saves it."""
    found = sidecar_transcript(tmp_path, "nia", "\ufeffSome call me nature.\r\n")
    assert (found.text, found.source) == ("Some call me nature.", "sidecar")


def test_a_long_voice_name_is_quoted_as_a_preview_by_the_storage_and_the_transcripts(tmp_path, caplog):
    from s3_utils import S3Storage

    name = "n" * 200  # the longest voice_name
    with pytest.raises(LimitExceeded) as err:
        sidecar_transcript(tmp_path, name, "word " * 1000)
    assert err.value.message == f"The transcript voices/{'n' * 32}… is over 2000 characters."
    storage = object.__new__(S3Storage)  # no client: only its message is wanted
    storage.bucket = "b"
    assert storage._fail("lookup", f"voices/{name}.wav", TimeoutError()).message == (
        f"S3 lookup of 'voices/{'n' * 32}…' failed (TimeoutError).")
    assert max(len(r.getMessage()) for r in caplog.records) < 100


class Refusing:
    """A grammar that cannot parse anything, and says so quoting all of it."""

    def normalize(self, text):
        raise ValueError(f"cannot parse {text!r}")


def test_a_piece_the_grammar_cannot_read_is_logged_as_a_preview(caplog):
    import text_normalization

    piece = "12\n" + "9" * 3000
    text_normalization.read_pieces(piece, [(0, len(piece))], Refusing(), "en")  # spoken as written
    (record,) = [r for r in caplog.records if r.name == "f5worker.text_normalization"]
    assert "'12<U+000A>999" in record.getMessage() and "\n" not in record.getMessage()
    assert len(record.getMessage()) < 200
