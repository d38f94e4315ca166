"""Numeric bands for trained figures: a pytest plugin on top of nbval.

Why: PyTorch's CPU kernels pick their code path at run time (AVX-512 or
AVX2, Intel or AMD, the number of threads), so float32 sums round
differently from one reader's CPU to the next, and training turns a
last-bit difference into a third-decimal one. A cell that prints a trained
figure cannot be stored once and matched exactly everywhere.

What: a code cell may declare a band in its metadata (shown nowhere on the
site)::

    "metadata": {"seqbook": {"tolerance": {"abs": 0.01, "rel": 0.02}}}

For such a cell, and only for it, the plugin compares each output text
(stream text, ``text/plain``, ``text/html``, ...; after nbval's sanitizing)
as a sequence of numbers and the text between them:

- the text between the numbers must be equal, except that a run of
  whitespace matches any other run (a wider number shifts a table's
  columns);
- there must be as many numbers, and each decimal number ``x`` (one written
  with a point or an exponent, ``0.853``, ``1e-05``, ``nan``) must lie within
  ``abs + rel * |stored|`` of the stored one;
- whole numbers (``epoch 3``, ``412 of 5000``) must be equal, unless the
  band also says ``"integers": true``; then they get the same band.

Every other cell keeps nbval's exact comparison, so exact hand computations,
float64 checks and anything else the same on every CPU stay compared digit
for digit. A band says how far a figure may move between CPUs; the claim the
text makes of it (``validation < 1.50 nats/char``) is asserted in the
notebook itself.

The root ``conftest.py`` loads this module (nbval collects its items from
``book/``, where ``tests/conftest.py`` does not apply).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest

METADATA_KEY = "seqbook"
TOLERANCE_KEY = "tolerance"
_FIELDS = {"abs", "rel", "integers"}

# A number not glued to a word or to another number on its left: "h2",
# "part1", "0x1f" and "v1.2.3"'s tail stay text. The sign belongs to it, and
# so do thousands separators ("8,587" is one number, "(2, 4)" two).
NUMBER = re.compile(
    r"(?<![\w.])[-+]?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\.\d+|\d+)"
    r"(?:[eE][-+]?\d+)?|nan|inf)"
    r"(?![\w.]*\w)"
)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Band:
    """How far a cell's printed numbers may move from the stored ones."""

    abs: float = 0.0
    rel: float = 0.0
    integers: bool = False

    @classmethod
    def from_metadata(cls, entry, where: str = "cell") -> Band:
        """The band of a cell's ``seqbook.tolerance`` metadata entry.

        Raises ValueError (naming ``where``) for an entry that is not a
        mapping, has unknown keys, or holds a negative or non-numeric bound.
        """
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where}: metadata {METADATA_KEY}.{TOLERANCE_KEY} must be a "
                f"mapping with keys {sorted(_FIELDS)}, got {entry!r}"
            )
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {sorted(unknown)} in "
                f"{METADATA_KEY}.{TOLERANCE_KEY}; expected some of "
                f"{sorted(_FIELDS)}"
            )
        bounds = {}
        for name in ("abs", "rel"):
            value = entry.get(name, 0.0)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value >= 0
            ):
                raise ValueError(
                    f"{where}: {METADATA_KEY}.{TOLERANCE_KEY}.{name} must be "
                    f"a number >= 0, got {value!r}"
                )
            bounds[name] = float(value)
        integers = entry.get("integers", False)
        if not isinstance(integers, bool):
            raise ValueError(
                f"{where}: {METADATA_KEY}.{TOLERANCE_KEY}.integers must be "
                f"true or false, got {integers!r}"
            )
        if bounds["abs"] == bounds["rel"] == 0:
            raise ValueError(
                f"{where}: {METADATA_KEY}.{TOLERANCE_KEY} allows no "
                "difference at all; give abs or rel, or remove the entry"
            )
        return cls(integers=integers, **bounds)

    def mismatch(self, stored: str, fresh: str) -> str | None:
        """None when ``fresh`` matches ``stored`` within the band; else a
        sentence that says the first difference found."""
        stored_text, stored_numbers = split(stored)
        fresh_text, fresh_numbers = split(fresh)
        if len(stored_numbers) != len(fresh_numbers):
            return (
                f"{len(fresh_numbers)} numbers printed, "
                f"{len(stored_numbers)} stored"
            )
        for i, (a, b) in enumerate(zip(stored_text, fresh_text)):
            if a != b:
                return (
                    f"the text after number {i} differs: stored {a!r}, "
                    f"printed {b!r}"
                )
        for i, (a, b) in enumerate(zip(stored_numbers, fresh_numbers), 1):
            if not self.holds(a, b):
                return (
                    f"number {i} is out of its band: stored {a}, printed "
                    f"{b}, allowed {self.allowed(a)}"
                )
        return None

    def holds(self, stored: str, fresh: str) -> bool:
        """Whether one printed number matches its stored one."""
        if _is_integer(stored) and _is_integer(fresh) and not self.integers:
            return _value(stored) == _value(fresh)
        x, y = _value(stored), _value(fresh)
        if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
            return stored.lstrip("+") == fresh.lstrip("+")
        return abs(x - y) <= self.abs + self.rel * abs(x)

    def allowed(self, stored: str) -> str:
        """The band around a stored number, for messages."""
        if _is_integer(stored) and not self.integers:
            return "no difference (a whole number)"
        return f"±{self.abs + self.rel * abs(_value(stored)):.3g}"


def _is_integer(token: str) -> bool:
    return token.lstrip("+-").replace(",", "").isdigit()


def _value(token: str) -> float:
    """A printed number's value; whole numbers stay exact ints."""
    plain = token.replace(",", "")
    return int(plain) if _is_integer(plain) else float(plain)


def split(text: str) -> tuple[list[str], list[str]]:
    """``text`` as the pieces between its numbers (whitespace runs made one
    space) and the numbers, in order: ``len(pieces) == len(numbers) + 1``."""
    pieces, numbers, start = [], [], 0
    for match in NUMBER.finditer(text):
        pieces.append(_SPACE.sub(" ", text[start : match.start()]))
        numbers.append(match.group())
        start = match.end()
    pieces.append(_SPACE.sub(" ", text[start:]))
    return pieces, numbers


class Banded(str):
    """An output text that equals another within a band.

    nbval compares each sanitized output of a cell with ``stored !=
    fresh``; returning these from the cell's ``sanitize`` makes that
    comparison the band's, and leaves the rest of nbval's logic (which
    outputs, in which order, which keys) as it is.
    """

    band: Band

    def __new__(cls, text: str, band: Band):
        self = super().__new__(cls, text)
        self.band = band
        return self

    def __eq__(self, other):
        if not isinstance(other, str):
            return NotImplemented
        return self.band.mismatch(str(self), str(other)) is None

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__


def cell_band(cell, where: str = "cell") -> Band | None:
    """The band declared in a notebook cell's metadata, or None."""
    entry = cell.get("metadata", {}).get(METADATA_KEY, {})
    if not isinstance(entry, dict) or TOLERANCE_KEY not in entry:
        return None
    return Band.from_metadata(entry[TOLERANCE_KEY], where)


# --- the plugin --------------------------------------------------------------


def _banded(item, band: Band) -> None:
    """Make one nbval cell item compare its outputs within ``band``."""
    exact_sanitize = item.sanitize
    exact_format = item.format_output_compare

    def sanitize(s):
        s = exact_sanitize(s)
        return Banded(s, band) if isinstance(s, str) else s

    def format_output_compare(key, left, right):
        exact_format(key, str(left), str(right))
        if isinstance(left, Banded):
            why = band.mismatch(str(left), str(right))
            item.comparison_traceback.append(
                f"  (numeric band abs={band.abs:g}, rel={band.rel:g}, "
                f"integers={'banded' if band.integers else 'exact'}: {why})"
            )

    item.sanitize = sanitize
    item.format_output_compare = format_output_compare


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval absent: nothing to compare
        return
    for item in items:
        if not isinstance(item, IPyNbCell):
            continue
        band = cell_band(item.cell, f"{item.path.name}::Cell {item.cell_num}")
        if band is not None:
            _banded(item, band)
