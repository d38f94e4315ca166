"""scripts/compare_runs.py: stored outputs of one machine against another's."""

import copy
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_runs.py"
spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def notebook(*cells):
    return {"cells": [
        {"cell_type": "code", "id": f"c{i}", "source": ["x"],
         "metadata": meta, "outputs": [
             {"output_type": "stream", "name": "stdout", "text": [t]}]}
        for i, (t, meta) in enumerate(cells)]}


BAND = {"seqbook": {"tolerance": {"abs": 0.02}}}


def test_within_band_and_exact_cells_pass():
    old = notebook(("loss 1.470\n", BAND), ("3 x 4 = 12\n", {}))
    new = notebook(("loss 1.455\n", BAND), ("3 x 4 = 12\n", {}))
    assert compare_runs.compare(old, new) == []


@pytest.mark.parametrize("fresh, why", [
    ("loss 1.430\n", "out of its band"),        # a trained figure too far
    ("loss 1.470 nats\n", "text after number"),  # other text
])
def test_banded_cell_fails_outside(fresh, why):
    problems = compare_runs.compare(notebook(("loss 1.470\n", BAND)),
                                    notebook((fresh, BAND)))
    assert len(problems) == 1 and why in problems[0]


def test_exact_cell_fails_on_one_digit():
    problems = compare_runs.compare(notebook(("3 x 4 = 12\n", {})),
                                    notebook(("3 x 4 = 13\n", {})))
    assert problems == ["cell c0 (stdout): differs (no band)"]


def test_ignored_cells_timings_and_split_streams():
    ignored = {"tags": ["nbval-ignore-output"]}
    old = notebook(("sample: abc\n", ignored), ("took 12.5 s\n", {}))
    new = notebook(("sample: xyz\n", ignored), ("took 9.1 s\n", {}))
    assert compare_runs.compare(old, new) == []
    split = copy.deepcopy(old)
    split["cells"][1]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": ["took "]},
        {"output_type": "stream", "name": "stdout", "text": ["12.5 s\n"]}]
    assert compare_runs.compare(old, split) == []


def test_new_cells_are_not_compared():
    old = notebook(("a 1\n", {}))
    new = notebook(("a 1\n", {}), ("b 2\n", {}))
    assert compare_runs.compare(old, new) == []
