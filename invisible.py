"""Characters that show nothing: written as their code points where a message quotes caller text,
and dropped from what is spoken where they carry no meaning.

A byte order mark, a zero-width space or a bidi mark pasted in with a text is invisible to the
person who reads the error about it ("'' comes before the first [voice] tag"), and to the model
it is an unknown character, read as a space.
"""

from __future__ import annotations

import re
import unicodedata

#: Controls, format characters (BOM, zero-width space and joiners, bidi marks, tags), surrogates,
#: private-use and unassigned code points, line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Blank letters and marks of other categories: Hangul fillers, Khmer inherent vowels, the
#: braille blank, the combining grapheme joiner, Mongolian and Unicode variation selectors.
_BLANK = frozenset(map(chr, (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800,
                             0x3164, 0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))))

#: Meaningless in a text to be spoken wherever they are: the byte order mark (also a
#: zero-width no-break space), the zero-width space, the word joiner, the soft hyphen, and the
#: bidi marks, embeddings, overrides and isolates (they change how a text is shown, not what it says).
_NEVER_SPOKEN = re.compile("[\ufeff\u200b\u2060\u00ad\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]+")
#: The zero-width joiner and non-joiner join (or keep apart) the characters either side: they
#: carry meaning inside a word (Persian, Indic scripts, emoji sequences), none at its edge.
_JOINER_AT_AN_EDGE = re.compile(r"(?:^|(?<=\s))[\u200c\u200d]+|[\u200c\u200d]+(?=\s|$)")


def is_hidden(ch: str) -> bool:
    """True for a character a reader would not see, or would take for a plain space."""
    category = unicodedata.category(ch)
    return category in _HIDDEN_CATEGORIES or (category == "Zs" and ch != " ") or ch in _BLANK


def shown(ch: str) -> str:
    """The character itself, or its code point (<U+FEFF>) when it would not be seen."""
    return f"<U+{ord(ch):04X}>" if is_hidden(ch) else ch


def without_invisible(text: str) -> str:
    """`text` without the invisible characters that mean nothing in it (see above)."""
    return _JOINER_AT_AN_EDGE.sub("", _NEVER_SPOKEN.sub("", text))
