"""Tests of seqbook_lib.sweeps: stored runs, checked live."""

import json

import pytest

from seqbook_lib.sweeps import FULL_ENV, stored_runs


class Trainer:
    """A stand-in for training: figures depend on (kind, seed) and `shift`."""

    def __init__(self, shift=0.0):
        self.shift, self.calls = shift, []

    def __call__(self, kind, seed):
        self.calls.append((kind, seed))
        base = {"rnn": 0.5, "lstm": 0.9}[kind] + 0.01 * seed + self.shift
        return {"acc": base, "curve": [base / 2, base]}


RUNS = [(k, s) for k in ("rnn", "lstm") for s in range(3)]


def test_first_call_runs_everything_and_stores(tmp_path, monkeypatch):
    monkeypatch.delenv(FULL_ENV, raising=False)
    path = tmp_path / "sweep.json"
    trainer = Trainer()
    results = stored_runs(path, RUNS, trainer, live=[("rnn", 0)])
    assert trainer.calls == RUNS
    assert results[("lstm", 2)] == {"acc": 0.92, "curve": [0.46, 0.92]}
    record = json.loads(path.read_text())
    assert set(record["runs"]) == {"rnn|0", "rnn|1", "rnn|2", "lstm|0",
                                   "lstm|1", "lstm|2"}
    assert {"cpu", "torch", "date"} <= record["machine"].keys()


def test_later_calls_run_only_the_live_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(FULL_ENV, raising=False)
    path = tmp_path / "sweep.json"
    stored_runs(path, RUNS, Trainer())
    trainer = Trainer(shift=0.004)  # another CPU: within the band
    results = stored_runs(path, RUNS, trainer, live=[("rnn", 0)],
                          tolerance={"acc": 0.01, "curve": 0.01})
    assert trainer.calls == [("rnn", 0)]
    assert results[("rnn", 0)]["acc"] == pytest.approx(0.504)  # live
    assert results[("rnn", 1)]["acc"] == pytest.approx(0.51)  # stored


def test_live_runs_chosen_from_the_stored_results(tmp_path, monkeypatch):
    monkeypatch.delenv(FULL_ENV, raising=False)
    path = tmp_path / "sweep.json"
    stored_runs(path, RUNS, Trainer())
    trainer = Trainer()

    def best_first_seed(results):
        best = max(("rnn", "lstm"), key=lambda k: results[k, 0]["acc"])
        return [(best, 0)]

    stored_runs(path, RUNS, trainer, live=best_first_seed)
    assert trainer.calls == [("lstm", 0)]
    with pytest.raises(ValueError, match="not among the runs"):
        stored_runs(path, RUNS, trainer, live=lambda results: [("gru", 0)])


def test_a_figure_outside_its_band_fails(tmp_path, monkeypatch):
    monkeypatch.delenv(FULL_ENV, raising=False)
    path = tmp_path / "sweep.json"
    stored_runs(path, RUNS, Trainer())
    with pytest.raises(ValueError, match=r"stale: run rnn\|0, figure curve\[1\]"):
        stored_runs(path, RUNS, Trainer(shift=0.05), live=[("rnn", 0)],
                    tolerance={"acc": 0.1, "curve": 0.01})


def test_full_flag_recomputes_and_missing_runs_are_named(tmp_path,
                                                         monkeypatch):
    path = tmp_path / "sweep.json"
    stored_runs(path, RUNS[:3], Trainer())
    monkeypatch.delenv(FULL_ENV, raising=False)
    with pytest.raises(ValueError, match=r"no figures for runs \['lstm\|0'"):
        stored_runs(path, RUNS, Trainer())
    monkeypatch.setenv(FULL_ENV, "1")
    trainer = Trainer()
    stored_runs(path, RUNS, trainer)
    assert trainer.calls == RUNS


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="not among the runs"):
        stored_runs(tmp_path / "s.json", RUNS, Trainer(), live=[("gru", 0)])
    with pytest.raises(TypeError, match="number or a list of numbers"):
        stored_runs(tmp_path / "t.json", ["a"], lambda k: {"x": "text"})
