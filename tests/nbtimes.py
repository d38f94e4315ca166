"""Chapter times: a pytest plugin that times every notebook nbval runs.

Each chapter notebook states its time budget once, in its notebook-level
metadata ``{"seqbook": {"budget_minutes": 1.5}}``. Under nbval this plugin

- measures each notebook's wall time, from the setup of its first cell
  (which starts the kernel) to the teardown of its last (which stops it);
- adds one item per notebook, ``<notebook>::time budget``, run after all
  cells, which fails when the notebook took longer than its budget or has no
  budget;
- at the end of the session writes the times to ``book/_data/chapter_times.
  json`` (and a copy to ``_build/chapter_times.json``), from which the site
  shows each page's measured time and the table on the running page.

A notebook is recorded only when all of its cells were selected and ran
without failure: a run with ``-k``, ``-x`` or a failing cell leaves that
notebook's previous entry as it was. The root ``conftest.py`` loads this
module, because nbval collects its items from ``book/``, where
``tests/conftest.py`` does not apply.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMES_FILE = Path("book", "_data", "chapter_times.json")  # under the root
BUILD_COPY = Path("_build", "chapter_times.json")
METADATA_KEY = "seqbook"
BUDGET_KEY = "budget_minutes"
BOOK_BUDGET_MINUTES = 40  # the whole book, executed on 2 CPU cores
NOTE = (
    "Written by tests/nbtimes.py at the end of an nbval run "
    "(make test); do not edit by hand."
)


# --- budgets and the times file ----------------------------------------------


def budget_minutes(notebook: Path) -> float | None:
    """The budget stored in a notebook's metadata, or None when it has none.

    Raises TypeError or ValueError when the entry is present but not a
    positive number.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    entry = nb.get("metadata", {}).get(METADATA_KEY, {})
    if BUDGET_KEY not in entry:
        return None
    value = entry[BUDGET_KEY]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{notebook}: metadata {METADATA_KEY}.{BUDGET_KEY} must be a "
            f"number of minutes, got {value!r}"
        )
    if value <= 0:
        raise ValueError(
            f"{notebook}: metadata {METADATA_KEY}.{BUDGET_KEY} must be "
            f"positive, got {value!r}"
        )
    return float(value)


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks listed in ``_toc.yml``, in reading order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [
        chapter["file"]
        for part in toc.get("parts", [])
        for chapter in part.get("chapters", [])
    ]
    return [
        root / f"{name}.ipynb"
        for name in files
        if (root / f"{name}.ipynb").is_file()
    ]


def machine() -> dict:
    """The CPU model (from /proc/cpuinfo where there is one) and the number
    of cores this process may use."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores}


def kernel_path() -> str:
    """The code path PyTorch's CPU kernels take here: ATen's vectorized
    kernels (``ATEN_CPU_CAPABILITY``, or the best the CPU has) and the
    oneDNN and MKL limits when set; the notebooks' kernels inherit this
    environment."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    parts = [f"ATen {torch.backends.cpu.get_cpu_capability()}"]
    for name in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"):
        if os.environ.get(name):
            parts.append(f"{name}={os.environ[name]}")
    return ", ".join(parts)


def read_times(root: Path = ROOT) -> dict:
    """The recorded times, ``{notebook path: entry}``; empty when there is
    no file yet."""
    path = root / TIMES_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["notebooks"]


def merged(previous: dict, new: dict) -> dict:
    """The entries of ``new`` over those of ``previous``, sorted by path:
    notebooks that did not run keep their last measurement."""
    entries = {**previous, **new}
    return {key: entries[key] for key in sorted(entries)}


def write_times(entries: dict, root: Path = ROOT) -> None:
    """Write ``entries`` as the times file and its copy in ``_build``."""
    text = json.dumps(
        {"note": NOTE, "notebooks": entries}, indent=1, ensure_ascii=False
    )
    for path in (root / TIMES_FILE, root / BUILD_COPY):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)


# --- the plugin --------------------------------------------------------------


@dataclass
class Run:
    """What one notebook did in this session."""

    path: Path
    cells: int  # code cells in the notebook
    selected: int = 0  # cells selected to run (after -k, --deselect, ...)
    finished: int = 0  # cells whose teardown has run
    failed: bool = False
    start: float | None = None
    seconds: float | None = None
    load: float | None = None

    @property
    def complete(self) -> bool:
        """Every cell selected, run and passed, and the time taken."""
        return (
            self.selected == self.cells
            and self.finished == self.cells
            and not self.failed
            and self.seconds is not None
        )


RUNS = pytest.StashKey[dict]()


def _runs(config) -> dict:
    return config.stash.setdefault(RUNS, {})


def _notebook_of(item):
    """The nbval notebook collector of ``item``, or None for other items."""
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval absent: nothing to time
        return None
    return item.parent if isinstance(item, IPyNbCell) else None


def _key(config, path) -> str:
    """A notebook's entry in the times file: its path from the root."""
    path = Path(path).resolve()
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:  # a notebook outside the repository
        return path.as_posix()


class BudgetCheck(pytest.Item):
    """Fails when a notebook ran longer than its budget (or has none)."""

    def __init__(self, *, notebook: Path, **kwargs):
        super().__init__(**kwargs)
        self.notebook = notebook

    def runtest(self):
        key = _key(self.config, self.notebook)
        run = _runs(self.config)[key]
        if not run.complete:
            pytest.skip("the notebook did not run completely in this session")
        budget = budget_minutes(self.notebook)
        if budget is None:
            raise BudgetExceeded(
                f"{key} has no time budget: add "
                f'"{METADATA_KEY}": {{"{BUDGET_KEY}": <minutes>}} to its '
                "notebook metadata"
            )
        if run.seconds >= 60 * budget:
            raise BudgetExceeded(
                f"{key} took {run.seconds:.1f} s, over its "
                f"budget of {budget:g} min ({60 * budget:.0f} s); "
                f"load average {run.load:.1f}"
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, BudgetExceeded):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        key = _key(self.config, self.notebook)
        return self.path, None, f"{key}::{self.name}"


class BudgetExceeded(Exception):
    """A notebook over (or without) its time budget."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """After deselection: count each notebook's selected cells and append
    one budget check per notebook at the very end of the session."""
    runs = _runs(config)
    for item in items:
        nb = _notebook_of(item)
        if nb is None:
            continue
        key = _key(config, nb.path)
        if key not in runs:
            cells = sum(c.cell_type == "code" for c in nb.nb.cells)
            runs[key] = Run(path=Path(nb.path), cells=cells)
        runs[key].selected += 1
    for key, run in runs.items():
        items.append(
            BudgetCheck.from_parent(
                session,
                name="time budget",
                nodeid=f"{key}::time budget",
                path=run.path,
                notebook=run.path,
            )
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    nb = _notebook_of(item)
    if nb is not None:
        run = _runs(item.config)[_key(item.config, nb.path)]
        if run.start is None:  # the first cell: the kernel starts now
            run.start = time.perf_counter()
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    nb = _notebook_of(item)
    if nb is not None:
        run = _runs(item.config)[_key(item.config, nb.path)]
        run.finished += 1
        if nextitem is None or _notebook_of(nextitem) is not nb:
            # The notebook's kernel was stopped in this teardown.
            run.seconds = time.perf_counter() - run.start
            run.load = os.getloadavg()[0]
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    nb = _notebook_of(item)
    excinfo = call.excinfo
    if (
        nb is not None
        and excinfo is not None
        and not excinfo.errisinstance(pytest.skip.Exception)
    ):
        _runs(item.config)[_key(item.config, nb.path)].failed = True


def pytest_sessionfinish(session):
    """Record the notebooks that ran completely; keep the other entries."""
    runs = _runs(session.config)
    done = {key: run for key, run in runs.items() if run.complete}
    if not done:
        return
    where = machine()
    stamp = {
        "date": datetime.date.today().isoformat(),
        "cpu": where["cpu"],
        "cores": where["cores"],
        "torch": _version("torch"),
        "kernels": kernel_path(),
    }
    new = {
        key: {
            "seconds": round(run.seconds, 1),
            "load_average": round(run.load, 1),
            **stamp,
        }
        for key, run in done.items()
    }
    root = session.config.rootpath
    write_times(merged(read_times(root), new), root)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
