"""Runs over several seeds and settings, stored once and checked live.

A comparison over seeds costs one training run per seed and setting, more
than a chapter's time budget allows for every comparison in the book. So a
chapter names its runs, and :func:`stored_runs`

- with ``SEQBOOK_FULL=1`` in the environment (or when no stored file exists)
  runs all of them and writes their figures to a JSON file beside the
  chapter, with the machine that computed them;
- otherwise reruns only the ``live`` runs (the ones the chapter also plots),
  checks each figure against the stored one within ``tolerance`` (a stale
  file fails, naming the figure), and takes the other runs from the file.

Figures are numbers or lists of numbers, rounded to 6 significant digits.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Callable, Hashable, Iterable

FULL_ENV = "SEQBOOK_FULL"


def _key(run: Hashable) -> str:
    """``('rnn', 0.003, 1)`` -> ``'rnn|0.003|1'``: a JSON object key."""
    parts = run if isinstance(run, tuple) else (run,)
    return "|".join(str(p) for p in parts)


def _rounded(value):
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"a stored figure must be a number or a list of numbers, got "
            f"{type(value).__name__}"
        )
    return float(f"{value:.6g}")


def _machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }


def _largest_gap(stored, live, name: str) -> tuple[float, str]:
    """Largest absolute difference between two figures of the same shape."""
    if isinstance(stored, list) != isinstance(live, list) or (
        isinstance(stored, list) and len(stored) != len(live)
    ):
        return float("inf"), f"{name} (a different shape)"
    if isinstance(stored, list):
        gaps = [_largest_gap(s, v, f"{name}[{i}]")
                for i, (s, v) in enumerate(zip(stored, live))]
        return max(gaps, default=(0.0, name))
    return abs(stored - live), name


def stored_runs(
    path: str | Path,
    runs: Iterable[Hashable],
    run: Callable[..., dict],
    *,
    live: Iterable[Hashable] | Callable[[dict], Iterable[Hashable]] = (),
    tolerance: float | dict[str, float] = 0.0,
) -> dict:
    """``{run: figures}`` for every run in ``runs``.

    ``run(*key)`` trains one run and returns ``{figure name: number or list
    of numbers}``; a key is a tuple (``('rnn', 0.003, seed)``) or a single
    value. ``live`` runs are computed every time and compared with the
    stored figures: a figure may differ by ``tolerance`` (one number for
    all, or per figure name), the band within which it moves between CPUs.
    ``live`` may also be a function of the stored results that names the
    live runs (e.g. the best setting's first seed).
    """
    path = Path(path)
    runs = list(runs)

    def check_live(keys):
        keys = list(keys)
        if not set(keys) <= set(runs):
            raise ValueError(
                f"live runs {sorted(map(_key, set(keys) - set(runs)))} are "
                f"not among the runs"
            )
        return keys

    if not callable(live):
        live = check_live(live)

    def call(key):
        args = key if isinstance(key, tuple) else (key,)
        return {name: _rounded(v) for name, v in run(*args).items()}

    full = os.environ.get(FULL_ENV) == "1" or not path.is_file()
    if full:
        results = {key: call(key) for key in runs}
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "note": (
                f"Written by seqbook_lib.sweeps.stored_runs with "
                f"{FULL_ENV}=1; do not edit by hand."
            ),
            "machine": _machine(),
            "runs": {_key(k): v for k, v in results.items()},
        }
        path.write_text(json.dumps(record, indent=1) + "\n")
        return results

    stored = json.loads(path.read_text(encoding="utf-8"))["runs"]
    missing = [_key(k) for k in runs if _key(k) not in stored]
    if missing:
        raise ValueError(
            f"{path} holds no figures for runs {missing}; run the notebook "
            f"with {FULL_ENV}=1 to compute and store them"
        )
    results = {key: stored[_key(key)] for key in runs}
    if callable(live):
        live = check_live(live(results))
    for key in live:
        figures = call(key)
        for name, value in figures.items():
            allowed = (tolerance.get(name, 0.0)
                       if isinstance(tolerance, dict) else tolerance)
            if name not in results[key]:
                raise ValueError(
                    f"{path}: run {_key(key)} has no stored figure {name!r}; "
                    f"rerun with {FULL_ENV}=1"
                )
            gap, where = _largest_gap(results[key][name], value, name)
            if gap > allowed:
                raise ValueError(
                    f"{path} is stale: run {_key(key)}, figure {where} "
                    f"differs from the stored one by {gap:.3g} (allowed "
                    f"{allowed:g}); rerun with {FULL_ENV}=1"
                )
        results[key] = figures
    return results
