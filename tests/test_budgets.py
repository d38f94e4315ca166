"""Time budgets: stored once per notebook, within the book's 40 minutes, and
the plugin that measures them (tests/nbtimes.py) on small notebooks."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbtimes import (
    BOOK_BUDGET_MINUTES,
    BUILD_COPY,
    ROOT,
    TIMES_FILE,
    budget_minutes,
    kernel_path,
    read_times,
    toc_notebooks,
)

TOC_NOTEBOOKS = toc_notebooks()
IDS = [p.relative_to(ROOT).as_posix() for p in TOC_NOTEBOOKS]


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=IDS)
def test_every_chapter_has_a_budget(path):
    budget = budget_minutes(path)
    assert budget is not None, (
        f"{path.name}: no time budget; add "
        '"seqbook": {"budget_minutes": <minutes>} to the notebook metadata'
    )
    assert budget * 4 == int(budget * 4), (
        f"{path.name}: budgets are whole, half or quarter minutes, "
        f"got {budget}"
    )


def test_budgets_fit_the_book():
    budgets = [budget_minutes(p) or 0 for p in TOC_NOTEBOOKS]
    assert TOC_NOTEBOOKS, "no notebooks in _toc.yml"
    assert sum(budgets) <= BOOK_BUDGET_MINUTES, (
        f"the chapters' budgets add up to {sum(budgets):g} min, more than "
        f"the book's {BOOK_BUDGET_MINUTES} min"
    )


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=IDS)
def test_no_budget_typed_in_the_text(path):
    """The site shows the budget from the metadata; the text must not
    repeat it by hand (where it would drift from the measurements)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            assert "Time budget" not in "".join(cell["source"]), path.name


def test_recorded_times_are_within_budget():
    """The committed measurements belong to existing notebooks and are
    below their budgets (a budget lowered below its measurement fails)."""
    times = read_times()
    assert times, f"{TIMES_FILE} is missing: run the notebooks under nbval"
    for key, entry in times.items():
        path = ROOT / key
        assert path.is_file(), f"{TIMES_FILE} names a missing notebook {key}"
        assert {"seconds", "date", "cpu", "cores", "torch"} <= entry.keys()
        budget = budget_minutes(path)
        if budget is not None:
            assert entry["seconds"] < 60 * budget, (
                f"{key}: measured {entry['seconds']} s, budget {budget:g} min"
            )


def test_budget_must_be_a_positive_number(tmp_path):
    path = tmp_path / "nb.ipynb"
    for value, error in [("1", TypeError), (True, TypeError), (0, ValueError)]:
        nb = nbformat.v4.new_notebook()
        nb.metadata["seqbook"] = {"budget_minutes": value}
        nbformat.write(nb, path)
        with pytest.raises(error, match="budget_minutes"):
            budget_minutes(path)


# --- the plugin, on small notebooks in a scratch project ---------------------


def _notebook(path, sources, budget=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Py"}
    if budget is not None:
        nb.metadata["seqbook"] = {"budget_minutes": budget}
    nbformat.write(nb, path)


NBVAL = ["-p", "nbtimes", "--nbval-lax", "--nbval-current-env", "-q"]


def test_plugin_records_and_checks(pytester):
    _notebook(pytester.path / "fast.ipynb", ["x = 1", "y = x + 1"], 5)
    _notebook(
        pytester.path / "slow.ipynb", ["import time; time.sleep(0.1)"], 0.001
    )  # 0.06 s
    _notebook(pytester.path / "broken.ipynb", ["1 / 0"], 5)
    _notebook(pytester.path / "unbudgeted.ipynb", ["x = 1"])
    previous = {
        "broken.ipynb": {"seconds": 1.0, "note": "from an earlier run"},
        "gone.ipynb": {"seconds": 2.0},
    }
    times_file = pytester.path / TIMES_FILE
    times_file.parent.mkdir(parents=True)
    times_file.write_text(json.dumps({"notebooks": previous}))

    result = pytester.runpytest(*NBVAL)

    result.assert_outcomes(passed=5, failed=3, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*slow.ipynb took * s, over its budget of 0.001 min*",
            "*unbudgeted.ipynb has no time budget*",
        ]
    )
    times = read_times(pytester.path)
    assert set(times) == {
        "broken.ipynb",
        "fast.ipynb",
        "gone.ipynb",
        "slow.ipynb",
        "unbudgeted.ipynb",
    }
    assert times["broken.ipynb"] == previous["broken.ipynb"]  # kept
    assert times["gone.ipynb"] == previous["gone.ipynb"]
    assert 0 < times["fast.ipynb"]["seconds"] < 300
    assert times["slow.ipynb"]["seconds"] >= 0.1
    assert times["fast.ipynb"]["cores"] >= 1
    assert times["fast.ipynb"]["kernels"].startswith("ATen ")
    copy = json.loads((pytester.path / BUILD_COPY).read_text())
    assert copy["notebooks"] == times


def test_kernel_path_names_the_pinned_instruction_sets(monkeypatch):
    import torch

    for name in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"):
        monkeypatch.delenv(name, raising=False)
    capability = torch.backends.cpu.get_cpu_capability()
    assert kernel_path() == f"ATen {capability}"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert kernel_path() == (
        f"ATen {capability}, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=COMPATIBLE"
    )


def test_plugin_ignores_partial_runs(pytester):
    _notebook(pytester.path / "nb.ipynb", ["x = 1", "y = 2"], 5)

    result = pytester.runpytest(*NBVAL, "--deselect", "nb.ipynb::Cell 1")

    result.assert_outcomes(passed=1, skipped=1, deselected=1)
    assert not (pytester.path / TIMES_FILE).exists()
