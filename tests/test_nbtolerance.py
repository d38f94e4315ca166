"""Numeric bands for trained figures (tests/nbtolerance.py): the comparison
itself, the metadata checks, and the plugin under nbval on small notebooks
whose stored outputs are changed within and beyond their bands."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbtolerance import Band, Banded, cell_band, split

# --- splitting a text into numbers and the text between them -----------------


def test_split_finds_numbers_and_leaves_names_alone():
    text = "epoch 3: loss 0.853, acc 88.20% (h2, part1, v1.2.3) 1e-05 -0.5 nan"
    pieces, numbers = split(text)
    assert numbers == ["3", "0.853", "88.20", "1e-05", "-0.5", "nan"]
    assert pieces[0] == "epoch "
    assert pieces[3] == "% (h2, part1, v1.2.3) "
    assert len(pieces) == len(numbers) + 1


def test_split_keeps_thousands_separators_in_one_number():
    pieces, numbers = split("8,587 reviews; shape (2, 4, 18); 1,234.5")
    assert numbers == ["8,587", "2", "4", "18", "1,234.5"]
    assert Band(rel=0.01, integers=True).mismatch("8,587", "8,549") is None
    assert Band(rel=0.01).mismatch("8,587", "8,549") is not None
    assert Band(abs=1).mismatch("1,234.5", "1,235.0") is None


def test_split_makes_whitespace_runs_one_space():
    assert split("a   \n  b")[0] == ["a b"]


# --- the band ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "fresh", "matches"),
    [
        ("loss 1.470", "loss 1.470", True),
        ("loss 1.470", "loss 1.469", True),  # within abs
        ("loss 1.470", "loss 1.481", False),  # beyond abs and rel
        ("acc 88.20%", "acc 88.60%", True),  # within rel: 0.005 * 88.2
        ("acc 88.20%", "acc 89.20%", False),
        ("step 600", "step 601", False),  # whole numbers stay exact
        ("loss 1.470", "LOSS 1.470", False),  # the text is exact
        ("loss 1.470", "loss 1.470 1.0", False),  # one number more
        ("| 9.99 | x", "| 10.00 | x", True),  # a wider column
        ("nan", "nan", True),
        ("nan", "0.5", False),
        ("-0.000", "0.000", True),
    ],
)
def test_band(stored, fresh, matches):
    band = Band(abs=0.002, rel=0.005)
    assert (band.mismatch(stored, fresh) is None) is matches


def test_band_on_integers_when_asked():
    assert Band(abs=2, integers=True).mismatch("412 of 5000", "414 of 5000") \
        is None
    assert Band(abs=2).mismatch("412 of 5000", "414 of 5000") is not None


def test_mismatch_says_what_differs():
    band = Band(abs=0.01)
    assert "number 2 is out of its band: stored 1.470, printed 1.490" in (
        band.mismatch("step 600 loss 1.470", "step 600 loss 1.490")
    )
    assert "no difference (a whole number)" in band.mismatch("6", "7")
    assert "3 numbers printed, 2 stored" in band.mismatch("1 2", "1 2 3")
    assert "the text after number 1 differs" in band.mismatch("1 a", "1 b")


def test_banded_text_compares_with_its_band():
    band = Band(abs=0.01)
    assert Banded("loss 1.470", band) == Banded("loss 1.475", band)
    assert Banded("loss 1.470", band) != Banded("loss 1.490", band)
    assert not (Banded("loss 1.470", band) != "loss 1.471")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([0.1], "must be a mapping"),
        ({"abs": 0.1, "relative": 0.1}, "unknown keys"),
        ({"abs": -0.1}, "abs must be a number >= 0"),
        ({"rel": "0.1"}, "rel must be a number >= 0"),
        ({"abs": float("nan")}, "abs must be a number >= 0"),
        ({"abs": 0.1, "integers": 1}, "integers must be true or false"),
        ({}, "allows no difference"),
    ],
)
def test_bad_metadata_is_refused(entry, message):
    cell = {"metadata": {"seqbook": {"tolerance": entry}}}
    with pytest.raises(ValueError, match=message):
        cell_band(cell, "nb.ipynb::Cell 3")


def test_cells_without_a_band():
    assert cell_band({"metadata": {}}) is None
    assert cell_band({"metadata": {"seqbook": {"other": 1}}}) is None


# --- the plugin under nbval, on stored outputs changed by hand ---------------

# Each cell prints a "trained" figure 1.4704 and a whole number; its stored
# output is what another CPU might have stored, or a mutation of it.
SOURCE = 'print(f"validation {1.4704:.4f} nats/char after {600} steps")'


def _cell(stored: str, band: dict | None):
    cell = nbformat.v4.new_code_cell(SOURCE)
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=stored + "\n")]
    if band is not None:
        cell.metadata["seqbook"] = {"tolerance": band}
    return cell


CASES = {
    # name: (stored output, band, passes)
    "same": ("validation 1.4704 nats/char after 600 steps", None, True),
    "other-cpu": (
        "validation 1.4691 nats/char after 600 steps", {"abs": 0.005}, True
    ),
    "beyond-band": (
        "validation 1.4804 nats/char after 600 steps", {"abs": 0.005}, False
    ),
    "exact-one-digit": (
        "validation 1.4705 nats/char after 600 steps", None, False
    ),
    "banded-integer": (
        "validation 1.4704 nats/char after 601 steps", {"abs": 0.005}, False
    ),
    "banded-text": (
        "validation 1.4704 bits/char after 600 steps", {"abs": 0.005}, False
    ),
}


def test_plugin_under_nbval(pytester):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Py"}
    nb.cells = [_cell(stored, band) for stored, band, _ in CASES.values()]
    nbformat.write(nb, pytester.path / "nb.ipynb")

    result = pytester.runpytest(
        "-p", "nbtolerance", "--nbval", "--nbval-current-env", "-rf",
        "-p", "no:nbtimes",
    )

    outcomes = [passes for _, _, passes in CASES.values()]
    result.assert_outcomes(
        passed=outcomes.count(True), failed=outcomes.count(False)
    )
    for number, (name, (_, _, passes)) in enumerate(CASES.items()):
        line = f"*nb.ipynb::Cell {number}*"
        if passes:
            result.stdout.no_fnmatch_line(f"FAILED {line}")
        else:
            result.stdout.fnmatch_lines([f"FAILED {line}"])
    result.stdout.fnmatch_lines(
        ["*number 1 is out of its band: stored 1.4804, printed 1.4704*"]
    )


def test_plugin_refuses_bad_metadata(pytester):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Py"}
    nb.cells = [_cell("x", {"abs": -1})]
    nbformat.write(nb, pytester.path / "nb.ipynb")

    result = pytester.runpytest(
        "-p", "nbtolerance", "--nbval", "--nbval-current-env",
        "-p", "no:nbtimes",
    )

    assert result.ret != 0
    result.stdout.fnmatch_lines(["*nb.ipynb::Cell 0*abs must be a number*"])


def test_chapter_bands_are_valid():
    """Every band declared in the book's notebooks is well formed."""
    from nbtimes import toc_notebooks

    found = 0
    for path in toc_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            if cell_band(cell, f"{path.name} cell {i}") is not None:
                assert cell["cell_type"] == "code", (path.name, i)
                # a band on an ignored output would check nothing
                tags = cell["metadata"].get("tags", [])
                assert "nbval-ignore-output" not in tags, (path.name, i)
                found += 1
    assert found, "no chapter declares a band: the plugin would be unused"
