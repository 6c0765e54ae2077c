"""English numbers in words, as WeTextProcessing's English grammar says them ("one hundred and
twenty three", "one hundred twenty third", "nineteen oh five"), and stand-ins that spare the
grammar the numbers it is slowest at.

The grammar takes 5 to 10 ms a digit to read a number of three digits or more, and hardly longer
for "41" than for "4". So before a piece of text reaches it, each such number is replaced by a
two-digit stand-in that the grammar reads the same way (a cardinal, an ordinal with the same
suffix, a decimal's whole part or the digits after its point), and the stand-in's words in what
it says are then replaced by the number's own. Where the stand-in's words are not found exactly
once, the caller reads the piece as written. A fraction stands in the same way ("3/4 cup" reaches
the grammar as "41 cup"), and a number alone in a piece, with nothing beside it that changes its
reading, never reaches the grammar at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ("", "thousand", "million", "billion", "trillion")
#: The grammar reads a longer number digit by digit.
LARGEST = 10 ** 15 - 1
ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}


def _below_hundred(n: int) -> str:
    return ONES[n] if n < 20 else TENS[n // 10] + (" " + ONES[n % 10] if n % 10 else "")


def _groups(n: int) -> list[int]:
    """Groups of three digits, the lowest first."""
    groups = []
    while n:
        n, group = divmod(n, 1000)
        groups.append(group)
    return groups


def cardinal(n: int, with_and: bool = True) -> str:
    """`n` (0 to LARGEST) in words. `with_and`: the grammar's one "and", in the last group ("one
    hundred and one", "one thousand and one", but "one million one"); its ordinals have none."""
    if n == 0:
        return "zero"
    groups = _groups(n)
    words = []
    for scale in range(len(groups) - 1, -1, -1):
        hundreds, rest = divmod(groups[scale], 100)
        said = [ONES[hundreds] + " hundred"] if hundreds else []
        if rest:
            last = with_and and scale == 0
            said.append(("and " if last and (hundreds or len(groups) > 1 and groups[1]) else "") + _below_hundred(rest))
        if said:
            words.append(" ".join(said) + (" " + SCALES[scale] if scale else ""))
    return " ".join(words)


def ordinal(n: int) -> str:
    words = cardinal(n, with_and=False).split(" ")
    last = words[-1]
    words[-1] = ORDINAL_WORDS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(words)


def ordinal_suffix(n: int) -> str:
    if n % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def year(n: int) -> str:
    """A year of four digits: "nineteen oh five", "nineteen hundred", "two thousand five", "twenty ten"."""
    century, rest = divmod(n, 100)
    if century % 10 == 0 and rest < 10:
        return cardinal(n - rest) + (" " + ONES[rest] if rest else "")
    if rest == 0:
        return _below_hundred(century) + " hundred"
    return _below_hundred(century) + " " + ("oh " + ONES[rest] if rest < 10 else _below_hundred(rest))


def fraction_digits(digits: str) -> str:
    """The digits after a decimal point, as the grammar says them: "oh" for 0."""
    return " ".join("oh" if d == "0" else ONES[int(d)] for d in digits)


# --------------------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------------------


#: A number with what may follow it: an ordinal suffix, or a point and digits. Not one inside a
#: word, a time, a date, a path, a range, a version or an address ("1.2.3", "12/25", "5-7").
NUMBER = re.compile(r"(?<![\w.,:/])(?<![\w.,:/][-+\u2212])(?P<whole>[1-9]\d{0,2}(?:,\d{3})+|\d+)"
                    r"(?:(?P<suffix>st|nd|rd|th)|\.(?P<fraction>\d+))?(?![\w:/]|[.,:/-]\d)")
#: A fraction, after a whole number or not: "3/4", "2 1/2" (not a date: "12/25/2024").
FRACTION = re.compile(r"(?<![\w.,:/])(?<![\w.,:/][-+\u2212])(?:(?P<whole>\d+) )?(?P<top>\d+)/(?P<bottom>\d+)"
                      r"(?![\w:/]|[.,:/-]\d)")
#: Before a number of four digits, what makes it an amount and not a year: "$1999", "-1999".
AMOUNT_BEFORE = "$€£¥₹-+\u2212"
#: Two-digit numbers said in two words, none a day of a month or an hour.
CARDINAL_STAND_INS = tuple(n for n in range(41, 100) if n % 10) + tuple(n for n in range(32, 40))
ORDINAL_STAND_INS = {suffix: tuple(n for n in CARDINAL_STAND_INS if ordinal_suffix(n) == suffix)
                     for suffix in ("st", "nd", "rd", "th")}
#: The digit after a point that stands in for a longer fraction.
POINT_STAND_INS = "5789642"
#: Fewer digits after a point cost the grammar less than looking for the stand-in's words.
MIN_FRACTION_DIGITS = 3
FRACTION_WORDS = {2: ("half", "halves"), 4: ("quarter", "quarters")}


@dataclass(frozen=True)
class StandIn:
    said: str  # the stand-in's words in what the grammar says
    own: str  # the number's own words


def stand_ins(piece: str) -> tuple[str, list[StandIn]]:
    """`piece` with its long numbers and its fractions replaced by stand-ins, and what to put back."""
    chosen = _StandIns(piece)
    piece = FRACTION.sub(chosen.fraction, piece)
    return NUMBER.sub(chosen.number, piece), chosen.found


class _StandIns:
    """The stand-ins of one piece: none whose digits or words are in it already, none twice."""

    def __init__(self, piece: str):
        self.piece, self.found, self.used = piece, [], set()
        self.words = set(re.findall(r"[a-z]+", piece.lower()))
        self.points = set(re.findall(r"\.(\d)", piece))

    def _free(self, candidates) -> int | None:
        for n in candidates:
            if n not in self.used and str(n) not in self.piece and TENS[n // 10] not in self.words:
                self.used.add(n)
                return n
        return None

    def fraction(self, m: re.Match) -> str:
        whole, top, bottom = m.group("whole"), int(m.group("top")), int(m.group("bottom"))
        if bottom == 0 or top <= 12 and 1000 <= bottom <= 2099 and not whole:  # "3/2024": a month and a year
            return m.group()
        stand_in = self._free(CARDINAL_STAND_INS)
        if stand_in is None:
            return m.group()
        said = fraction(top, bottom)
        if whole:
            said = cardinal(int(whole)) + " and " + ("a half" if (top, bottom) == (1, 2) else said)
        self.found.append(StandIn(cardinal(stand_in), said))
        return str(stand_in)

    def number(self, m: re.Match) -> str:
        whole, suffix, digits = m.group("whole"), m.group("suffix"), m.group("fraction")
        n = int(whole.replace(",", ""))
        if suffix and suffix != ordinal_suffix(n) or n > LARGEST or whole.startswith("0") and len(whole) > 1:
            return m.group()
        before = m.string[m.start() - 1] if m.start() else ""
        amount = before in AMOUNT_BEFORE or suffix or digits or m.string.startswith("%", m.end())
        if (n >= 100 or "," in whole) and (len(whole) != 4 or amount):  # not "March 5, 2024": the grammar's year
            stand_in = self._free(ORDINAL_STAND_INS[suffix] if suffix else CARDINAL_STAND_INS)
            if stand_in is not None:
                self.found.append(StandIn(ordinal(stand_in) if suffix else cardinal(stand_in),
                                          ordinal(n) if suffix else cardinal(n)))
                whole = str(stand_in)
        if digits and len(digits) >= MIN_FRACTION_DIGITS:
            point = next((d for d in POINT_STAND_INS if d not in self.points), None)
            if point is not None:
                self.points.add(point)
                self.found.append(StandIn(f"point {ONES[int(point)]}", "point " + fraction_digits(digits)))
                digits = point
        return whole + (suffix or "") + ("." + digits if digits else "")


def fraction(top: int, bottom: int) -> str:
    """"three quarters", "one twenty fifth", "five over one hundred and twenty": the grammar's words for
    a small fraction, and "over" for a large one (where it says "five one hundred twentieths")."""
    if bottom == 1 or bottom > 100 or top >= 1000:
        return f"{cardinal(top)} over {cardinal(bottom)}"
    if bottom in FRACTION_WORDS:
        return f"{cardinal(top)} {FRACTION_WORDS[bottom][top != 1]}"
    return f"{cardinal(top, with_and=False)} {ordinal(bottom)}{'s' if top != 1 else ''}"


#: A piece that is one number and perhaps a point after it: "254.", "1,234", "22nd", "3.14159".
LONE_NUMBER = re.compile(r"(0|[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d*)(?:(st|nd|rd|th)|\.(\d+))?([.,;:!?]?)")


def lone_number(piece: str) -> str | None:
    """The piece in words where it is a number alone, as the grammar would say it; else None. Four
    digits alone are the grammar's: it reads them as a year or not by their value."""
    m = LONE_NUMBER.fullmatch(piece)
    if m is None:
        return None
    written, suffix, digits, end = m.groups()
    n = int(written.replace(",", ""))
    if n > LARGEST or len(written) == 4 and not suffix and not digits:
        return None
    if suffix:
        return ordinal(n) + end if suffix == ordinal_suffix(n) else None
    return cardinal(n) + (" point " + fraction_digits(digits) if digits else "") + end


def put_back(said: str, found: list[StandIn]) -> str | None:
    """What the grammar said with each stand-in's words replaced by its number's; None where a
    stand-in's words are not there exactly once (the grammar read it some other way)."""
    if not found:
        return said
    own = {stand_in.said: stand_in.own for stand_in in found}
    words = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, own)) + r")(?![\w-])")
    if sorted(words.findall(said)) != sorted(own):
        return None
    return words.sub(lambda m: own[m.group()], said)
