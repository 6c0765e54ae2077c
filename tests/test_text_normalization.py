"""Text normalisation: written forms spoken as words, in English, Chinese and num2words' languages.

The grammars are the real WeTextProcessing ones, compiled into the session's models dir by the
code `prefetch` runs (conftest), and loaded once for the whole session.
"""

import base64
import time

import pytest

import model_cache
import synthesis
import text_normalization as tn
from conftest import REF_TEXT, REF_WAV, ROOT
from errors import LimitExceeded, WorkerSetupError
from runpod_handler import Worker

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
    return tn.grammars(tn.grammar_root(model_cache.MODELS_DIR))


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


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_text_takes_bounded_time(grammars, name):
    """No input makes a regex backtrack or a grammar chew on one long token: each of these ends in
    well under a second (or is refused at once); a catastrophic pattern would take minutes."""
    for language in (None, "zh", "de"):
        started = time.perf_counter()
        try:
            out = say(PATHOLOGICAL[name], grammars, language, limit=5_000)
        except LimitExceeded as exc:
            assert "MAX_NORMALIZE_CHARS" in exc.message
        else:
            assert isinstance(out, str)
        assert time.perf_counter() - started < 10, (name, language)


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
    model_cache.prefetch_grammars()  # the session's are compiled: found, not compiled again
    out = capsys.readouterr().out
    for language in tn.GRAMMAR_LANGUAGES:
        assert f"ok       text normalisation grammar ({language})" in out
    assert "compiling" not in out
    model_cache.status()
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
    return Worker(model_cache.SETTINGS.model_copy(update={"s3_bucket": None}))


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
