"""Generated data for a small translation task: written dates to ISO 8601.

    "Tuesday, the 3rd of March, 1998"  ->  "1998-03-03"
    "03.03.1998", "mar 3 1998", ...    ->  "1998-03-03"

The task is small enough to train an encoder-decoder on a CPU in a minute,
yet each output character has to be read from a place in the input that
moves with the format: the year may come first or last, the month may be a
word or a number, and a weekday may pad the front. That is what attention
is for.

- :data:`STYLES` names the formats; :func:`format_date` writes one date in
  one of them (case and zero padding vary at random).
- :func:`date_pairs` draws a seeded list of ``(human, iso)`` pairs. Dates are
  split by day so that ``split="test"`` never shares a date with
  ``split="train"``, in any format.
- :func:`date_vocabs` returns the character vocabularies of both sides.
"""

from __future__ import annotations

import datetime as dt
import random
import string

from ._checks import check_choice, check_positive_int
from .text import Vocab

# fmt: off
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
WEEKDAYS = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
    "Sunday",
)
# fmt: on
# Every character a human-written date of this module can contain.
SOURCE_CHARS = string.ascii_letters + string.digits + " ,./-"
TARGET_CHARS = string.digits + "-"
BOS, EOS = "<bos>", "<eos>"
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
TEST_EVERY = 5  # one day in five is a test day


def _ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 3 -> "3rd", 11 -> "11th", 22 -> "22nd"."""
    if day in (11, 12, 13):
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _case(word: str, rng: random.Random) -> str:
    """``word`` as written, in lower case or in upper case, at random."""
    return rng.choice((word, word.lower(), word.upper()))


def _num(n: int, rng: random.Random) -> str:
    """A day or month number, with or without a leading zero."""
    return rng.choice((str(n), f"{n:02d}"))


# Each style: (date, month word, weekday word, rng) -> text.
_STYLES = {
    "d month yyyy": lambda d, m, w, r: f"{d.day} {m} {d.year}",
    "month d, yyyy": lambda d, m, w, r: f"{m} {d.day}, {d.year}",
    "d mon yyyy": lambda d, m, w, r: f"{d.day} {m[:3]} {d.year}",
    "mon d yyyy": lambda d, m, w, r: f"{m[:3]} {d.day} {d.year}",
    "the dth of month, yyyy": (
        lambda d, m, w, r: f"the {_ordinal(d.day)} of {m}, {d.year}"
    ),
    "weekday, month d, yyyy": lambda d, m, w, r: f"{w}, {m} {d.day}, {d.year}",
    "wkd d mon yyyy": lambda d, m, w, r: f"{w[:3]} {d.day} {m[:3]} {d.year}",
    "dd.mm.yyyy": (
        lambda d, m, w, r: f"{_num(d.day, r)}.{_num(d.month, r)}.{d.year}"
    ),
    "mm/dd/yyyy": (
        lambda d, m, w, r: f"{_num(d.month, r)}/{_num(d.day, r)}/{d.year}"
    ),
    "yyyy/m/d": lambda d, m, w, r: f"{d.year}/{d.month}/{d.day}",
    "dd-MON-yyyy": lambda d, m, w, r: f"{d.day:02d}-{m[:3].upper()}-{d.year}",
}
STYLES = tuple(_STYLES)


def format_date(date: dt.date, style: str, rng: random.Random) -> str:
    """Write ``date`` in ``style`` (one of :data:`STYLES`).

    ``rng`` picks the case of month and weekday names and whether numbers
    of the numeric styles get a leading zero.

    >>> format_date(dt.date(1998, 3, 3), "the dth of month, yyyy",
    ...             random.Random(0))
    'the 3rd of march, 1998'
    """
    if not isinstance(date, dt.date):
        raise TypeError(
            f"date must be a datetime.date, got {type(date).__name__}"
        )
    check_choice("style", style, STYLES)
    month = _case(MONTHS[date.month - 1], rng)
    weekday = _case(WEEKDAYS[date.weekday()], rng)
    return _STYLES[style](date, month, weekday, rng)


def is_test_day(date: dt.date) -> bool:
    """Whether ``date`` belongs to the held-out days (one day in five)."""
    return date.toordinal() % TEST_EVERY == 0


def date_pairs(
    n: int, seed: int = 0, split: str = "train", styles=STYLES
) -> list[tuple[str, str]]:
    """``n`` pairs ``(written date, ISO date)``, the same for the same seed.

    Dates are uniform over 1900-01-01 .. 2099-12-31, restricted to the test
    days (:func:`is_test_day`) for ``split="test"`` and to the other days
    for ``split="train"``, so no date of one split occurs in the other.
    Styles are drawn uniformly from ``styles``.

    >>> date_pairs(2, seed=1)
    [('1948/3/21', '1948-03-21'), ('26.4.1942', '1942-04-26')]
    """
    check_positive_int("n", n)
    check_choice("split", split, ["train", "test"])
    styles = tuple(styles)
    if not styles:
        raise ValueError("styles must name at least one style, got none")
    for style in styles:
        check_choice("style", style, STYLES)
    rng = random.Random(seed)
    first, last = FIRST_DAY.toordinal(), LAST_DAY.toordinal()
    want_test = split == "test"
    pairs = []
    while len(pairs) < n:
        date = dt.date.fromordinal(rng.randint(first, last))
        if is_test_day(date) != want_test:
            continue
        human = format_date(date, rng.choice(styles), rng)
        pairs.append((human, date.isoformat()))
    return pairs


def date_vocabs() -> tuple[Vocab, Vocab]:
    """Character vocabularies ``(source, target)``.

    source: ``<pad>`` (id 0), then the characters of :data:`SOURCE_CHARS`;
    target: ``<pad>`` (0), ``<bos>`` (1), ``<eos>`` (2), then the digits and
    ``-``. Encode a string with ``vocab.encode(text)`` (a str is a sequence
    of characters).
    """
    source = Vocab([Vocab.PAD, *SOURCE_CHARS])
    target = Vocab([Vocab.PAD, BOS, EOS, *TARGET_CHARS])
    return source, target
