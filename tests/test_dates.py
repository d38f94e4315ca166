"""Tests of seqbook_lib.dates: the generated date-normalisation data."""

import datetime as dt
import doctest
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqbook_lib.dates as dates_module
from seqbook_lib.dates import (
    MONTHS,
    SOURCE_CHARS,
    STYLES,
    TARGET_CHARS,
    date_pairs,
    date_vocabs,
    format_date,
    is_test_day,
)

DAYS = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))


def test_docstring_examples():
    result = doctest.testmod(dates_module)
    assert result.attempted >= 2
    assert result.failed == 0


@pytest.mark.parametrize(
    "style, expected",
    [
        ("d month yyyy", {"4 March 1998", "4 march 1998", "4 MARCH 1998"}),
        ("month d, yyyy", {"March 4, 1998", "march 4, 1998", "MARCH 4, 1998"}),
        ("d mon yyyy", {"4 Mar 1998", "4 mar 1998", "4 MAR 1998"}),
        ("mon d yyyy", {"Mar 4 1998", "mar 4 1998", "MAR 4 1998"}),
        (
            "the dth of month, yyyy",
            {
                "the 4th of March, 1998",
                "the 4th of march, 1998",
                "the 4th of MARCH, 1998",
            },
        ),
        ("dd.mm.yyyy", {"4.3.1998", "04.3.1998", "4.03.1998", "04.03.1998"}),
        ("mm/dd/yyyy", {"3/4/1998", "03/4/1998", "3/04/1998", "03/04/1998"}),
        ("yyyy/m/d", {"1998/3/4"}),
        ("dd-MON-yyyy", {"04-MAR-1998"}),
        (
            "wkd d mon yyyy",
            {
                f"{w} 4 {m} 1998"
                for w in ("Wed", "wed", "WED")
                for m in ("Mar", "mar", "MAR")
            },
        ),
    ],
)
def test_each_style_writes_the_date(style, expected):
    """A style gives exactly its variants (4 March 1998 was a Wednesday)."""
    rng = random.Random(0)
    seen = {format_date(dt.date(1998, 3, 4), style, rng) for _ in range(300)}
    assert seen == expected


def test_weekday_styles_name_the_right_day():
    rng = random.Random(0)
    text = format_date(dt.date(1998, 3, 3), "weekday, month d, yyyy", rng)
    assert text.lower() == "tuesday, march 3, 1998"
    assert (
        format_date(dt.date(2024, 2, 29), "wkd d mon yyyy", rng).lower()
        == "thu 29 feb 2024"
    )


@pytest.mark.parametrize(
    "day, text",
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (23, "23rd"),
        (31, "31st"),
    ],
)
def test_ordinals(day, text):
    rng = random.Random(0)
    assert format_date(
        dt.date(2000, 1, day), "the dth of month, yyyy", rng
    ).startswith(f"the {text} of")


@settings(max_examples=60, deadline=None)
@given(day=DAYS, style=st.sampled_from(STYLES), seed=st.integers(0, 2**16))
def test_written_dates_can_be_read_back(day, style, seed):
    """Only SOURCE_CHARS; the year, day and month are all in the text."""
    text = format_date(day, style, random.Random(seed))
    assert set(text) <= set(SOURCE_CHARS)
    assert str(day.year) in text
    assert str(day.day) in text
    month_word = MONTHS[day.month - 1][:3].lower()
    assert month_word in text.lower() or str(day.month) in text


def test_pairs_are_reproducible_and_seed_dependent():
    assert date_pairs(50, seed=3) == date_pairs(50, seed=3)
    assert date_pairs(50, seed=3) != date_pairs(50, seed=4)


@pytest.mark.parametrize("split", ["train", "test"])
def test_pairs_respect_the_split(split):
    pairs = date_pairs(500, seed=0, split=split)
    assert len(pairs) == 500
    for human, iso in pairs:
        day = dt.date.fromisoformat(iso)
        assert is_test_day(day) == (split == "test")
        assert dt.date(1900, 1, 1) <= day <= dt.date(2099, 12, 31)
        assert set(iso) <= set(TARGET_CHARS)


def test_splits_share_no_day_and_test_days_are_one_in_five():
    train = {iso for _, iso in date_pairs(3000, seed=0, split="train")}
    test = {iso for _, iso in date_pairs(3000, seed=0, split="test")}
    assert not train & test
    days = [dt.date(2000, 1, 1) + dt.timedelta(k) for k in range(1000)]
    assert sum(is_test_day(d) for d in days) == 200


def test_styles_restrict_the_formats():
    pairs = date_pairs(100, seed=0, styles=["yyyy/m/d"])
    for human, iso in pairs:
        y, m, d = iso.split("-")
        assert human == f"{y}/{int(m)}/{int(d)}"


def test_all_styles_appear():
    """Styles are drawn uniformly: two recognisable ones get ~1/11 each."""
    rng_pairs = date_pairs(1100, seed=0)
    slash_year_first = sum(h[:4].isdigit() and "/" in h for h, _ in rng_pairs)
    the_style = sum(h.startswith("the ") for h, _ in rng_pairs)
    assert 50 < slash_year_first < 160 and 50 < the_style < 160


def test_vocabularies_encode_every_pair():
    source, target = date_vocabs()
    assert source.itos[0] == "<pad>" and target.itos[:3] == [
        "<pad>",
        "<bos>",
        "<eos>",
    ]
    assert len(source) == 1 + len(SOURCE_CHARS) and len(target) == 3 + len(
        TARGET_CHARS
    )
    for human, iso in date_pairs(300, seed=1):
        assert "".join(source.decode(source.encode(human))) == human
        assert "".join(target.decode(target.encode(iso))) == iso
        assert 0 not in source.encode(human)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be a positive int"),
        ({"n": 5, "split": "valid"}, ValueError, "split must be one of"),
        (
            {"n": 5, "styles": []},
            ValueError,
            "styles must name at least one style",
        ),
        ({"n": 5, "styles": ["dd/mm/yy"]}, ValueError, "style must be one of"),
    ],
)
def test_date_pairs_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        date_pairs(**kwargs)


def test_format_date_errors():
    rng = random.Random(0)
    with pytest.raises(
        TypeError, match="date must be a datetime.date, got str"
    ):
        format_date("1998-03-03", "yyyy/m/d", rng)
    with pytest.raises(ValueError, match="style must be one of"):
        format_date(dt.date(1998, 3, 3), "iso", rng)
