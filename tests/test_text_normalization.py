"""Text normalisation: written forms spoken as words, in English, Chinese and num2words' languages.

The grammars are the real WeTextProcessing ones, compiled into the session's models dir by the
code `prefetch` runs (conftest), and loaded once for the whole session.
"""

import base64
import re
import time

import pytest

import english_numbers
import model_cache
import synthesis
import text_normalization as tn
from conftest import REF_TEXT, REF_WAV, ROOT
from errors import LimitExceeded, WorkerSetupError
from runpod_handler import Worker
from config import get_settings
from conftest import STORE

pytestmark = pytest.mark.usefixtures("tiny_model")  # the session's grammars, and jobs

EN = [
    # cardinals, decimals, negatives, ordinals, fractions, percentages
    ("The city has 1,234,567 residents.",
     "The city has one million two hundred thirty four thousand five hundred and sixty seven residents."),
    ("We sold 12000 copies.", "We sold twelve thousand copies."),
    ("Chapter 11 starts on page 254.", "Chapter eleven starts on page two hundred and fifty four."),
    ("Pi is about 3.14159.", "Pi is about three point one four one five nine."),
    ("It grew by 0.5 points.", "It grew by zero point five points."),
    ("The balance is -42.", "The balance is negative forty two."),
    ("She finished 1st and he was 22nd.", "She finished first and he was twenty second."),
    ("They live on the 103rd floor.", "They live on the one hundred third floor."),
    ("Add 3/4 cup of sugar.", "Add three quarters cup of sugar."),
    ("The trip took 2 1/2 hours.", "The trip took two and a half hours."),
    ("About 1/3 of users left.", "About one third of users left."),
    ("Sales rose 15% this year.", "Sales rose fifteen percent this year."),
    ("The interest rate is 4.5%.", "The interest rate is four point five percent."),
    ("Prices fell by 0.25%.", "Prices fell by zero point two five percent."),
    # money, with minor units
    ("It costs $3.50.", "It costs three dollars and fifty cents."),
    ("A ticket is £12.", "A ticket is twelve pounds."),
    ("The bill was €1,200.99.", "The bill was one thousand two hundred euros and ninety nine cents."),
    ("Lunch cost ¥500 in Tokyo.", "Lunch cost five hundred yen in Tokyo."),
    ("The startup raised $2.5 million.", "The startup raised two point five million dollars."),
    ("Change: $0.99.", "Change: ninety nine cents."),
    ("A stamp costs £1.01.", "A stamp costs one pound and one penny."),
    ("It is $5.00 exactly.", "It is five dollars exactly."),
    # years and decades
    ("She was born in 1999.", "She was born in nineteen ninety nine."),
    ("In 2024 the law changed.", "In twenty twenty four the law changed."),
    ("The bridge opened in 1905.", "The bridge opened in nineteen oh five."),
    ("Music of the 1990s was great.", "Music of the nineteen nineties was great."),
    ("Back in the '90s we had pagers.", "Back in the nineties we had pagers."),
    ("The 2020s will be remembered.", "The twenty twenties will be remembered."),
    ("Life in the 1800s was hard.", "Life in the eighteen hundreds was hard."),
    # dates
    ("The deadline is 2024-03-05.", "The deadline is the fifth of march twenty twenty four."),
    ("It happened on March 5, 2024.", "It happened on the fifth of march, twenty twenty four."),
    ("It happened on 5 March 2024.", "It happened on the fifth of march twenty twenty four."),
    ("The flight is on Jan. 15.", "The flight is on the fifteenth of january."),
    ("The 3rd of July is a Wednesday.", "The third of July is a Wednesday."),
    # clock times
    ("The meeting is at 3:30 pm.", "The meeting is at three thirty p m."),
    ("The train leaves at 15:45.", "The train leaves at fifteen forty five."),
    ("Wake me at 7am.", "Wake me at seven a m."),
    ("Open 9am-5pm daily.", "Open nine a m to five p m daily."),
    ("Call after 6 p.m.", "Call after six p m."),
    ("Call after 6 p.m. today.", "Call after six p m today."),
    # units and temperatures
    ("We ran 5 km today.", "We ran five kilometers today."),
    ("The parcel weighs 3.2 kg.", "The parcel weighs three point two kilograms."),
    ("The wind blew at 10 m/s.", "The wind blew at ten meters per second."),
    ("He scored 3 goals in 90 mins.", "He scored three goals in ninety minutes."),
    ("It took 1 min.", "It took one minute."),
    ("He is 6 ft tall.", "He is six feet tall."),
    ("I'm 5'11\" tall.", "I'm five feet eleven inches tall."),
    ("The car did 60 mph.", "The car did sixty miles per hour."),
    ("It is 25°C outside.", "It is twenty five degrees Celsius outside."),
    ("Last night it was -3 °F.", "Last night it was negative three degrees Fahrenheit."),
    ("Set the oven to 180 °C.", "Set the oven to one hundred and eighty degrees Celsius."),
    # phone numbers and other digit strings, digit by digit
    ("Call +1 415 555 0134 now.", "Call plus one, four one five, five five five, zero one three four now."),
    ("Call 555-0199 now.", "Call five five five, zero one nine nine now."),
    ("Call (415) 555-0134 now.", "Call four one five, five five five, zero one three four now."),
    ("Dial 415-555-0134 today.", "Dial four one five, five five five, zero one three four today."),
    ("The code is 12345678901234567890.", "The code is one two three four five six seven eight nine zero one two "
                                          "three four five six seven eight nine zero."),
    # abbreviations
    ("Dr. Smith lives on Main St.", "Doctor Smith lives on Main Street."),
    ("Mr. Jones bought apples, pears, etc.", "Mister Jones bought apples, pears, et cetera."),
    ("Bring a tool, e.g. a hammer.", "Bring a tool, for example a hammer."),
    ("Mrs. Brown met Prof. White in St. Louis.", "Missus Brown met Professor White in Saint Louis."),
    ("It was Lakers vs. Celtics.", "It was Lakers versus Celtics."),
    ("She's the No. 1 player.", "She's the number one player."),
    # symbols, URLs, e-mail addresses
    ("Tom & Jerry is a cartoon.", "Tom and Jerry is a cartoon."),
    ("We know 2 + 2 = 4.", "We know two plus two equals four."),
    ("Meet me @ noon.", "Meet me at noon."),
    ("Visit https://www.example.com/news today.", "Visit w w w dot example dot com slash news today."),
    ("Write to john.doe@example.org today.", "Write to john dot doe at example dot org today."),
    ("The score was 3-2.", "The score was three to two."),
    ("A 4-year-old boy won.", "A four-year-old boy won."),
    # four digits: a number, unless the words around say year (the grammar read every one as a year)
    ("I bought 1035 cans of soda.", "I bought one thousand and thirty five cans of soda."),
    ("There are 1300 products left.", "There are one thousand three hundred products left."),
    ("She has 2048 followers.", "She has two thousand and forty eight followers."),
    ("Room 1005 is free.", "Room one thousand and five is free."),
    ("The 1999 season was long.", "The nineteen ninety nine season was long."),
    ("Prices have risen since 2001.", "Prices have risen since two thousand one."),
    ("Year 1999 and 2024 were good.", "Year nineteen ninety nine and twenty twenty four were good."),
    ("It ran from 1905 to 1999.", "It ran from nineteen oh five to nineteen ninety nine."),
    ("The 2024 Olympics were in Paris.", "The twenty twenty four Olympics were in Paris."),
    ("Rome fell in 1453 AD.", "Rome fell in fourteen fifty three AD."),
    ("The 1990-1999 decade.", "The nineteen ninety to nineteen ninety nine decade."),
    ("The 2024-25 season starts.", "The twenty twenty four to twenty five season starts."),
    ("We need 1000-2000 people.", "We need one thousand to two thousand people."),
    # scale letters
    ("He found 1.6k of the 10k bricks.", "He found one point six thousand of the ten thousand bricks."),
    ("The app has 2M users.", "The app has two million users."),
    ("They raised 3.5B dollars.", "They raised three point five billion dollars."),
    ("The prize is $5k.", "The prize is five thousand dollars."),
    ("Profits hit £3bn.", "Profits hit three billion pounds."),
    ("An 8B model runs here.", "An eight B model runs here."),
    # a sign before a currency
    ("It fell -$6.9 million.", "It fell minus six point nine million dollars."),
    ("It gained +€3 today.", "It gained plus three euros today."),
    ("He owes -$5 now.", "He owes minus five dollars now."),
    # bare domains, hosts with ports, paths
    ("Check docs.test.com today.", "Check docs dot test dot com today."),
    ("Visit google.com/search now.", "Visit google dot com slash search now."),
    ("Write to api.example.co.uk soon.", "Write to api dot example dot co dot uk soon."),
    ("Server at localhost:8080/api now.", "Server at localhost colon eight zero eight zero slash api now."),
    ("API at 192.168.1.1:8000 now.",
     "API at one nine two dot one six eight dot one dot one colon eight zero zero zero now."),
    ("Access 0.0.0.0:9090/test now.",
     "Access zero dot zero dot zero dot zero colon nine zero nine zero slash test now."),
    ("Server 192.168.100.200 is up.",
     "Server one nine two dot one six eight dot one zero zero dot two zero zero is up."),
    # names with digits
    ("F5-TTS is great.", "F five TTS is great."),
    ("GPT-4o is new.", "GPT four o is new."),
    ("COVID-19 spread fast.", "COVID nineteen spread fast."),
    ("Wi-Fi 6 is fast.", "Wi-Fi six is fast."),
    ("Llama-3.1 runs well.", "Llama three point one runs well."),
    # arrows and comparisons: no bare symbol left
    ("I <3 you.", "I heart you."),
    ("It goes a -> b.", "It goes a to b."),
    ("So x => y.", "So x implies y."),
    ("Keep x <= 5.", "Keep x less than or equal to five."),
    ("Keep y >= 2.", "Keep y greater than or equal to two."),
    ("It takes <3 days.", "It takes less than three days."),
    ("We know 3 < 5.", "We know three less than five."),
    ("Then a != b.", "Then a not equal to b."),
    # long numbers, fractions, dates and durations in our own words (the grammar's, where it had them right)
    ("It costs $123,456.", "It costs one hundred twenty three thousand four hundred and fifty six dollars."),
    ("We drove 1234567 km.",
     "We drove one million two hundred thirty four thousand five hundred and sixty seven kilometers."),
    ("She was the 1,234th visitor.", "She was the one thousand two hundred thirty fourth visitor."),
    ("It is 12345.6789 units.", "It is twelve thousand three hundred and forty five point six seven eight nine units."),
    ("The total is -1234.", "The total is negative one thousand two hundred and thirty four."),
    ("Add 3 1/2 cups.", "Add three and a half cups."),
    ("About 12/25 of them.", "About twelve twenty fifths of them."),
    ("It is 365/366 done.", "It is three hundred and sixty five over three hundred and sixty six done."),
    ("The date is 12/25/2024.", "The date is the twenty fifth of december twenty twenty four."),
    ("The date is 25.12.2024.", "The date is the twenty fifth of december twenty twenty four."),
    ("It lasted 1:02:03.", "It lasted one hour two minutes and three seconds."),
    ("Codes 12-34-56 and 1,2,3.", "Codes twelve thirty four fifty six and one, two, three."),
    ("Call 0123456 now.", "Call zero one two three four five six now."),
    ("Serial A123456 works.", "Serial A one two three four five six works."),
]

ZH = [
    ("我们一共等了3天。", "我们一共等了三天。"),
    ("我有2个苹果。", "我有两个苹果。"),
    ("他得了第2名。", "他得了第二名。"),
    ("他跑了第1。", "他跑了第一。"),
    ("一共4.5个小时。", "一共四点五个小时。"),
    ("大约1/3的人离开了。", "大约三分之一的人离开了。"),
    ("3+2=5。", "三加二等于五。"),
    ("GPT-4很好。", "GPT 四很好。"),
    # 年份
    ("从1905年到1999年。", "从一九零五年到一九九九年。"),
    ("他1990年出生。", "他一九九零年出生。"),
    ("我在2024年去了北京。", "我在二零二四年去了北京。"),
    ("今天是２０２４年。", "今天是二零二四年。"),
    # 金额
    ("价格是1,234,567元。", "价格是一百二十三万四千五百六十七元。"),
    ("他花了$2,000。", "他花了两千美元。"),
    ("这件衣服￥35.5。", "这件衣服三十五点五元。"),
    # 百分比
    ("增长了20%。", "增长了百分之二十。"),
    ("下降了0.5%。", "下降了百分之零点五。"),
    # 日期, 时间
    ("今天是2024年3月5日。", "今天是二零二四年三月五日。"),
    ("会议在下午3点开始。", "会议在下午三点开始。"),
    ("时间是9:30。", "时间是九点三十分。"),
    # 电话号码
    ("电话13812345678。", "电话幺三八幺二三四五六七八。"),
    ("请拨打010-12345678。", "请拨打零一零一二三四五六七八。"),
    # 单位, 温度, 比例
    ("温度是-3℃。", "温度是负三摄氏度。"),
    ("比例是3:2。", "比例是三比二。"),
    ("跑了10km。", "跑了十公里。"),
    ("体重65kg。", "体重六十五千克。"),
    ("风速10m/s。", "风速每秒十米。"),
    # the grammar is compiled to keep 儿, interjections and full-width punctuation
    ("这儿有一点儿水，我们玩儿一会儿吧。啊，好的！3个人。", "这儿有一点儿水，我们玩儿一会儿吧。啊，好的！三个人。"),
]

MIXED = [  # each sentence read in the language of its script
    ("I love 北京 in 2024. 我在2024年去了北京。", "I love 北京 in twenty twenty four. 我在二零二四年去了北京。"),
    ("He paid $5. 他付了5元。", "He paid five dollars. 他付了五元。"),
    ("访问https://example.com。", "访问example dot com。"),
    ("Привет, 5 друзей.", "Привет, 5 друзей."),  # another script: left alone unless text_language says
]

OTHER = [  # text_language: numbers in that language, nothing else
    ("de", "Ich habe 3 Äpfel und 1.234,5 Euro, -7 Grad.",
     "Ich habe drei Äpfel und eintausendzweihundertvierunddreißig Komma fünf Euro, minus sieben Grad."),
    ("fr", "Il a 21 ans et 3,5 kilos.", "Il a vingt et un ans et trois virgule cinq kilos."),
    ("es", "Tengo 15 gatos & 2 perros.", "Tengo quince gatos & dos perros."),
    ("ja", "5つのりんご", "五つのりんご"),
    ("ru", "Привет, 5 друзей.", "Привет, пять друзей."),
    ("en", "我有2个苹果。", "我有 two 个苹果。"),  # told English: read as English, whatever the script
]

PROSE = [  # nothing to say differently: returned as sent
    "Hello, world! How are you?",
    'He said "yes" -- and left; then (maybe) came back...',
    "CAPS LOCK IS ON, and so is the heating: it's cold.",
    "Über Äpfel und Birnen, à la carte, naïve café.",
    "这儿有一点儿水，我们玩儿一会儿吧。啊，好的！",
    "今天天气很好，我们去公园散步吧。",
    "  Leading and trailing spaces, and\ta tab.\n\nA new paragraph.  ",
]


@pytest.fixture(scope="module")
def grammars(tiny_model):
    return tn.grammars(tn.grammar_root(STORE.models_dir))


def say(text, grammars, language=None, limit=10_000):
    return tn.normalize(text, tn.Reading(grammars, language, limit))


def test_the_table_has_a_hundred_cases_in_every_category():
    assert len(EN) + len(ZH) + len(MIXED) + len(OTHER) >= 100
    assert len({written for written, _ in EN + ZH}) == len(EN) + len(ZH)


@pytest.mark.parametrize("written, spoken", EN + ZH + MIXED, ids=[w[:40] for w, _ in EN + ZH + MIXED])
def test_written_forms_are_spoken(grammars, written, spoken):
    assert say(written, grammars) == spoken


@pytest.mark.parametrize("language, written, spoken", OTHER, ids=[f"{lang}:{w[:30]}" for lang, w, _ in OTHER])
def test_text_language_reads_numbers_in_that_language(grammars, language, written, spoken):
    assert say(written, grammars, language) == spoken


def test_normalising_spoken_text_changes_nothing(grammars):
    for written, spoken in EN + ZH + MIXED:
        assert say(spoken, grammars) == spoken, written
    for language, _, spoken in OTHER:
        assert say(spoken, grammars, language) == spoken


def test_text_without_numbers_or_symbols_never_reaches_a_grammar(monkeypatch):
    from benchmarks.inputs import LONG_TEXT

    class NoGrammars:
        def get(self, language):
            raise AssertionError(f"the {language} grammar was asked for")

    for text in PROSE + [LONG_TEXT]:
        assert tn.normalize(text, tn.Reading(NoGrammars())) == text


def test_a_grammar_only_ever_sees_short_pieces(grammars):
    seen = []

    class Recording:
        def get(self, language):
            inner = grammars.get(language)

            class Grammar:
                def normalize(self, piece):
                    seen.append(piece)
                    return inner.normalize(piece)
            return Grammar()

    text = " ".join(f"Item {n} costs ${n}.99 on March {n % 28 + 1}, and then we walked a long way through the "
                    f"quiet old town. Its code was {'ab1' * 20}." for n in range(40))
    out = tn.normalize(text, tn.Reading(Recording()))
    assert "costs" in out and not any(ch.isdigit() for ch in out)
    assert "ab one ab one" in out  # a long token is read by our own code, never by a grammar
    assert seen and max(map(len, seen)) <= tn.MAX_PIECE_CHARS and not any("ab1" in piece for piece in seen)
    assert sum(map(len, seen)) < len(text) / 3  # the words between numbers stay out of the grammar


PATHOLOGICAL = {
    "20,000 digits": "7" * 20_000,
    "20,000 full-width digits": "７" * 20_000,
    "a run of symbols": "$%&@" * 5_000,
    "dotted digits": "1." * 10_000,
    "comma digits": "1," * 10_000,
    "hyphenated digits": "1-" * 10_000,
    "an endless URL": "http://" + "a." * 10_000,
    "an endless e-mail": "a." * 5_000 + "@" + "b." * 5_000,
    "at signs": "a@" * 10_000,
    "abbreviations": "Dr. " * 5_000,
    "open brackets": "(" * 20_000 + "1",
    "quotes and backslashes": '"\\' * 10_000 + "1",
    "Chinese digits": "年" + "5" * 20_000,
    "decades": "1990s" * 4_000,
    "money": "$1.00" * 4_000,
    "plus signs": "+1 " * 6_000,
}


#: An ordinary text of the pathological ones' size, a number in it: what any job's text costs.
ORDINARY = "The quick brown fox jumps over the lazy dog, and then it runs away. " * 150 + "It costs $5. " + \
    "The quick brown fox jumps over the lazy dog. " * 150
#: How many times the ordinary text's CPU time a pathological one may take: each takes at most
#: about 5 (most under 2); a catastrophic pattern, minutes, thousands of times it.
PATHOLOGICAL_FACTOR = 100


@pytest.fixture(scope="module")
def ordinary_cpu_s(grammars) -> float:
    """The CPU time (this thread's: other processes on the machine do not count) of normalising
    ORDINARY, the best of three; every language's grammar loaded first."""
    for language in (None, "zh", "de"):
        say("It costs $5.", grammars, language)

    def once():
        started = time.thread_time()
        say(ORDINARY, grammars, None, limit=5_000)
        return time.thread_time() - started

    return min(once() for _ in range(3))


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_text_takes_bounded_time(grammars, ordinary_cpu_s, name):
    """No input makes a regex backtrack or a grammar chew on one long token: each of these costs at
    most a few times an ordinary text of its size (or is refused at once); a catastrophic pattern
    would take minutes. CPU time, against a reference measured in the same process: a busy machine
    slows both alike and neither counts the time others take."""
    for language in (None, "zh", "de"):
        started = time.thread_time()
        try:
            out = say(PATHOLOGICAL[name], grammars, language, limit=5_000)
        except LimitExceeded as exc:
            assert "MAX_NORMALIZE_CHARS" in exc.message
        else:
            assert isinstance(out, str)
        took = time.thread_time() - started
        assert took < PATHOLOGICAL_FACTOR * max(ordinary_cpu_s, 0.01), (name, language, took, ordinary_cpu_s)


def test_numbers_and_symbols_past_the_limit_are_refused_before_any_grammar_runs():
    class NoGrammars:
        def get(self, language):
            raise AssertionError("a grammar ran")

    text = "Item 1 and item 2. " * 200
    with pytest.raises(LimitExceeded) as exc:
        tn.normalize(text, tn.Reading(NoGrammars(), None, 1_000))
    assert exc.value.message.startswith("text has ") and "at most 1000 are accepted per job (MAX_NORMALIZE_CHARS)" \
        in exc.value.message
    # the bound holds across a job's texts together, not per text
    with pytest.raises(LimitExceeded):
        tn.normalize_all(["Item 1 and item 2. " * 20] * 20, tn.Reading(NoGrammars(), None, 1_000))


class Recording:
    """The session's grammars, with every piece they are given kept."""

    def __init__(self, grammars):
        self.grammars, self.seen = grammars, []

    def get(self, language):
        inner, seen = self.grammars.get(language), self.seen

        class Grammar:
            def normalize(self, piece):
                seen.append(piece)
                return inner.normalize(piece)
        return Grammar()


def test_digits_of_any_script_are_read_in_every_path(grammars):
    """Arabic-Indic, Persian, Devanagari and full-width digits are the digits they stand for, in a
    sentence, in a token too long for a grammar, in an address; none is dropped."""
    assert say("I have ٣ apples, ۴ pears and ५ plums.", grammars) == "I have three apples, four pears and five plums."
    assert say("١" * 60 + "%", grammars) == " ".join(["one"] * 60)  # the long-token fallback dropped all 60
    assert say("١٢٣٤٥٦٧٨٩٠" * 5 + "#1", grammars) == \
        " ".join("one two three four five six seven eight nine zero".split() * 5 + ["one"])  # was "one"
    assert say("See www.example.com/٣ now.", grammars) == "See w w w dot example dot com slash three now."
    # another script with no text_language: left as it is, digits and all
    assert say("لدي ٣ تفاحات.", grammars) == "لدي ٣ تفاحات."


def test_a_token_too_long_for_a_grammar_keeps_every_letter_and_number(grammars):
    word = "नमस्ते"  # its vowel signs are marks, not letters
    out = say(word * 10 + "-5-Ⅻ-½-ab", grammars, "en")
    assert out == f"{word * 10} five Ⅻ ½ ab"


def test_reading_stops_at_the_piece_that_takes_the_spoken_form_past_its_limit(grammars):
    """A text whose spoken form is far past MAX_TEXT_CHARS is refused after the few pieces that take
    it there, not after all of them: counted in grammar calls."""
    recording = Recording(grammars)
    text = " ".join(f"Pay ${n}123456789 now." for n in range(1, 101))  # 100 pieces, each said in ~110 chars
    with pytest.raises(LimitExceeded) as exc:
        tn.normalize(text, tn.Reading(recording, None, 10_000, max_spoken_chars=3_000))
    assert exc.value.message.startswith("text is at least ") and exc.value.message.endswith(
        "characters once its numbers and symbols are written as words; at most 3000 are accepted (MAX_TEXT_CHARS). "
        "Send it in parts.")
    assert 10 <= len(recording.seen) <= 30, len(recording.seen)
    # what is known before any grammar runs can be past the limit already
    recording.seen.clear()
    with pytest.raises(LimitExceeded):
        tn.normalize("Read " * 700 + "www.example.com $1.", tn.Reading(recording, None, 10_000, max_spoken_chars=3_000))
    assert recording.seen == []


def test_a_spoken_form_past_its_limit_only_at_the_end_is_counted_exactly(grammars):
    with pytest.raises(LimitExceeded) as exc:
        tn.normalize_all(["It is 1234567 km.", "Hi."], tn.Reading(grammars, None, 10_000, max_spoken_chars=40))
    assert exc.value.message.startswith("text is 94 characters once")
    assert tn.normalize("It is 1234567 km.", tn.Reading(grammars, None, 10_000, max_spoken_chars=91)) == \
        "It is one million two hundred thirty four thousand five hundred and sixty seven kilometers."


def test_long_numbers_reach_the_grammar_only_as_two_digit_stand_ins(grammars):
    """The grammar takes 5 to 10 ms a digit over a number of three digits or more: it is given
    a stand-in ("41") it reads the same way, and says the same as it would have."""
    recording = Recording(grammars)
    written = ["It costs $123,456 now.", "We drove 1234567 km today.", "She was the 1,234th visitor.",
               "It is 12345.6789 units.", "Rates rose 123.25% this year.", "Add 3 1/2 cups.", "It is 365/366 done.",
               "They paid €9,876,543 for it.", "It weighs 250 kg now."]
    said = [say(text, recording) for text in written]
    assert recording.seen and not any(re.search(r"\d{3}", piece) for piece in recording.seen), recording.seen
    direct = [say(text, grammars) for text in written[:4]]  # through the same code: equal to itself
    assert said[:4] == direct
    assert said == [
        "It costs one hundred twenty three thousand four hundred and fifty six dollars now.",
        "We drove one million two hundred thirty four thousand five hundred and sixty seven kilometers today.",
        "She was the one thousand two hundred thirty fourth visitor.",
        "It is twelve thousand three hundred and forty five point six seven eight nine units.",
        "Rates rose one hundred and twenty three point two five percent this year.",
        "Add three and a half cups.",
        "It is three hundred and sixty five over three hundred and sixty six done.",
        "They paid nine million eight hundred seventy six thousand five hundred and forty three euros for it.",
        "It weighs two hundred and fifty kilograms now.",
    ]


def test_the_grammar_says_a_stand_in_as_it_says_the_number(grammars):
    """Our words for a number are the grammar's own, wherever it had them right: the grammar itself
    reads these (money, ordinals, years), and the words must match."""
    import random

    en = grammars.get("en")
    rng = random.Random(5)
    numbers = [rng.choice([rng.randint(100, 999), rng.randint(1000, 99_999), rng.randint(10 ** 5, 10 ** 9 - 1),
                           rng.randint(1, 999) * 1000 ** rng.randint(1, 2) + rng.randint(0, 99)]) for _ in range(12)]
    for n in numbers:
        assert en.normalize(f"${n:,}") == english_numbers.cardinal(n) + " dollars", n
        ordinal = f"{n:,}{english_numbers.ordinal_suffix(n)}"
        assert en.normalize(ordinal) == english_numbers.ordinal(n), ordinal
    for year in rng.sample(range(1000, 2100), 12) + [1900, 1905, 2000, 2005, 2010]:
        assert en.normalize(str(year)) == english_numbers.year(year), year


def test_a_stand_in_read_some_other_way_leaves_the_piece_to_the_grammar():
    class Garbling:
        def __init__(self):
            self.seen = []

        def get(self, language):
            return self

        def normalize(self, piece):
            self.seen.append(piece)
            return "four one" if piece == "is 41 km." else "as written"

    garbling = Garbling()
    assert tn.normalize("It is 1234567 km.", tn.Reading(garbling)) == "It as written."
    assert garbling.seen == ["is 41 km.", "is 1234567 km."]


def test_english_number_words():
    cardinal, ordinal, year = english_numbers.cardinal, english_numbers.ordinal, english_numbers.year
    assert cardinal(0) == "zero" and cardinal(101) == "one hundred and one" and cardinal(1001) == "one thousand and one"
    assert cardinal(1000) == "one thousand"  # the grammar says "thousand" for a bare "1,000"
    assert cardinal(1_000_001) == "one million one" and cardinal(100_001) == "one hundred thousand and one"
    # past a billion the grammar puts its "and" in odd places ("one hundred and billion fifty eight"): ours stay put
    assert cardinal(100_000_000_058) == "one hundred billion fifty eight"
    assert cardinal(552_000_000_158) == "five hundred fifty two billion one hundred and fifty eight"
    assert ordinal(103) == "one hundred third" and ordinal(1_000) == "one thousandth" and ordinal(12) == "twelfth"
    assert [year(y) for y in (1905, 1900, 2000, 2005, 2010, 1999)] == ["nineteen oh five", "nineteen hundred",
                                                                       "two thousand", "two thousand five",
                                                                       "twenty ten", "nineteen ninety nine"]
    assert english_numbers.fraction(3, 4) == "three quarters" and english_numbers.fraction(1, 2) == "one half"
    assert english_numbers.fraction(12, 25) == "twelve twenty fifths" and english_numbers.fraction(7, 100) == \
        "seven one hundredths"


def test_a_number_alone_in_a_piece_never_reaches_a_grammar_nor_counts():
    class NoGrammars:
        def get(self, language):
            raise AssertionError("a grammar ran")

    text = "123456789012345 " * 200 + "1111111 " * 375  # the texts: 26 s and 21.8 s of grammar
    assert tn.grammar_chars(text) == 0
    out = tn.normalize(text, tn.Reading(NoGrammars(), None, 0))
    assert out.startswith("one hundred twenty three trillion four hundred fifty six billion seven hundred eighty nine "
                          "million twelve thousand three hundred and forty five one hundred twenty three trillion")
    assert out.endswith("one million one hundred eleven thousand one hundred and eleven ")


def test_unknown_text_language_is_refused():
    assert tn.supported("en") and tn.supported("zh") and tn.supported("de") and tn.supported("pt_BR")
    assert not tn.supported("xx") and not tn.supported("EN") and not tn.supported("../en")


# --------------------------------------------------------------------------------------
# The grammars on the volume
# --------------------------------------------------------------------------------------


def test_a_grammar_is_compiled_into_a_folder_of_its_own_through_a_temporary_name(tmp_path):
    folder = tn.build_grammar(tmp_path, "zh")
    assert folder == tn.grammar_dir(tmp_path, "zh") and tn.grammar_is_complete(folder, "zh")
    assert folder.parent.name == f"wetext-{tn.WETEXT_VERSION}"
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert tn.build_grammar(tmp_path, "zh") == folder  # present: nothing compiled again
    loaded = tn.Grammars(tmp_path, allow_build=False).get("zh")
    assert loaded.normalize("这儿有3个人，啊！") == "这儿有三个人，啊！"  # built with our options
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # loading writes nothing
    assert tn.grammar_dir(tmp_path, "en").name.startswith("en-") and tn.grammar_dir(tmp_path, "en") != folder


def test_a_half_written_grammar_is_never_loaded_and_is_compiled_again(tmp_path):
    folder = tn.grammar_dir(tmp_path, "zh")
    folder.mkdir(parents=True)
    (folder / "zh_tn_tagger.fst").write_bytes(b"half")  # a crash mid-copy: no verbaliser, no manifest
    with pytest.raises(WorkerSetupError) as exc:
        tn.Grammars(tmp_path, allow_build=False).get("zh")
    assert "ALLOW_MODEL_DOWNLOAD=false" in exc.value.message and "prefetch" in exc.value.message
    assert tn.Grammars(tmp_path, allow_build=True).get("zh").normalize("3天") == "三天"
    assert tn.grammar_is_complete(folder, "zh")


def test_a_grammar_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocked = tmp_path / "volume"
    blocked.write_text("a file where the grammars' folder should be")
    with pytest.raises(WorkerSetupError) as exc:
        tn.Grammars(blocked / "tn").get("zh")
    assert exc.value.message.startswith("Could not compile the zh text normalisation grammar into ")


def test_prefetch_and_status_cover_the_grammars(capsys):
    model_cache.prefetch_grammars(STORE.models_dir)  # the session's are compiled: found, not compiled again
    out = capsys.readouterr().out
    for language in tn.GRAMMAR_LANGUAGES:
        assert f"ok       text normalisation grammar ({language})" in out
    assert "compiling" not in out
    model_cache.status(get_settings())
    out = capsys.readouterr().out
    assert "grammar en   ok" in out and "grammar zh   ok" in out


def test_the_grammar_libraries_are_pinned():
    """The grammars' folder is named by WeText's version: the one installed must be the one named."""
    from importlib.metadata import version

    assert version("WeTextProcessing") == tn.WETEXT_VERSION
    reqs = (ROOT / "requirements.txt").read_text()
    assert f"WeTextProcessing=={tn.WETEXT_VERSION}" in reqs and "pynini==" in reqs and "num2words==" in reqs


# --------------------------------------------------------------------------------------
# Through the worker: what is said is what the result reports
# --------------------------------------------------------------------------------------

VOICE = base64.b64encode(REF_WAV.read_bytes()).decode()
WRITTEN = "It costs $3.50 on March 5, 2024. Dr. Smith pays 15% more at 3:30 pm."
SPOKEN = ("It costs three dollars and fifty cents on the fifth of march, twenty twenty four. Doctor Smith pays "
          "fifteen percent more at three thirty p m.")


@pytest.fixture(scope="module")
def worker(tiny_model):
    return Worker(get_settings().model_copy(update={"s3_bucket": None}))


def run_job(worker, **fields):
    out = worker({"id": "tn-" + "-".join(sorted(fields)), "input": {
        "voice_base64": VOICE, "ref_text": REF_TEXT, "nfe_step": 4, "seed": 3, **fields}})
    assert "error" not in out, out
    return out


def test_a_job_speaks_its_normalized_text_and_returns_it(worker, monkeypatch):
    said = []
    real = synthesis.plan_lines
    monkeypatch.setattr(synthesis, "plan_lines", lambda model, refs, lines, *a, **k: said.extend(lines) or
                        real(model, refs, lines, *a, **k))
    out = run_job(worker, text=WRITTEN)
    assert out["normalized_text"] == SPOKEN and [line.text for line in said] == [SPOKEN]
    assert " ".join(c["text"] for c in out["captions"]).split() == SPOKEN.split()  # chunks come from it
    assert out["timings"]["normalize"] >= 0


def test_normalize_false_leaves_the_text_exactly_as_sent(worker):
    out = run_job(worker, text=WRITTEN, normalize=False)
    assert out["normalized_text"] == WRITTEN
    assert " ".join(c["text"] for c in out["captions"]).split() == WRITTEN.split()


def test_text_without_numbers_comes_back_as_sent(worker):
    out = run_job(worker, text="Hello there, how are you today?")
    assert out["normalized_text"] == "Hello there, how are you today?"


def test_text_language_reads_a_jobs_numbers_in_that_language(worker):
    out = run_job(worker, text="Ich habe 3 Katzen und 21 Hunde.", text_language="de")
    assert out["normalized_text"] == "Ich habe drei Katzen und einundzwanzig Hunde."


def test_a_dialogue_normalizes_each_segment_and_reports_them_in_tag_form(worker):
    voices = {"ann": {"voice_base64": VOICE, "ref_text": REF_TEXT}, "bob": {"voice_base64": VOICE, "ref_text": REF_TEXT}}
    out = worker({"id": "tn-dialogue", "input": {"voices": voices, "nfe_step": 4, "seed": 3, "segments": [
        {"voice": "ann", "text": "I paid $3.50."}, {"voice": "bob", "text": "我付了5元。"}]}})
    assert "error" not in out, out
    assert out["normalized_text"] == "[ann] I paid three dollars and fifty cents. [bob] 我付了五元。"
    assert [c["text"] for c in out["captions"]] == ["I paid three dollars and fifty cents.", "我付了五元。"]
