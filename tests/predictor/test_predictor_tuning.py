"""Nested tuning: hyperparameters of each outer fold are selected inside that fold's training
window only; the outer test rows never reach the search. Shown by poisoning the last outer test
block (features x 1e6, prices replaced by noise): every fold's selection -- the best parameters and
every trial's inner objective value -- stays bit-identical, while the reported outer test metrics
do change (the poison is real), and a search over all rows (the old, leaky way) is moved by it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import optuna  # noqa: F401  (a dev dependency: a missing optuna fails here instead of skipping)

from predictor.labels import Prices
from predictor.train import train, tune, walk_forward
from predictor.walkforward import _folds, prepare


def _poisoned(d, start: int):
    X = d.X.copy()
    X[start:] *= 1e6
    rng = np.random.default_rng(0)
    close = d.close.copy()
    close[start:] = close[start - 1] * np.exp(np.cumsum(rng.normal(0, 0.01, len(close) - start)))
    return X, Prices(close=close, high=np.maximum(d.high, close), low=np.minimum(d.low, close))


def test_selection_never_sees_the_outer_test_rows(klines, small_config):
    d = klines.tail(2000)
    cfg = small_config(max_epochs=1, n_folds=2, tune_trials=2, tune_inner_folds=2, train_stride=4)
    prep = prepare(cfg, d.X, d.ts, d.prices(), d.names)
    folds = _folds(cfg, len(d.ts), prep.test_size, prep.train_size)
    last = folds[-1]

    clean = walk_forward(cfg, d.X, d.ts, d.prices(), d.names)
    X2, p2 = _poisoned(d, last.test_start)
    dirty = walk_forward(cfg, X2, d.ts, p2, d.names)

    assert len(clean) == len(folds) == 2
    for f, a, b in zip(folds, clean, dirty):
        # the search ran on the fold's training window, which ends >= horizon before its test block
        # poisoning the outer test rows changes nothing about the selection ...
        assert a.tuning["values"] == b.tuning["values"], f"fold {f.index}: selection saw the poisoned rows"
        assert a.tuning["best_params"] == b.tuning["best_params"]
        # ... because the search ran on the fold's training window, >= horizon before its test block
        assert a.tuning["rows"] == [f.train_start, f.train_end]
        assert f.train_end + cfg.label.horizon <= f.test_start
        assert a.tuning["n_trials"] == 2 and a.tuning["n_rows"] == f.train_end - f.train_start
        # the reported metrics are the outer test block's
        assert a.n_test == b.n_test and a.test_range[0] >= int(d.ts[f.test_start])
    # the poison is real: the last fold's reported (outer test) score moves
    assert clean[-1].metrics["model"]["log_loss"] != dirty[-1].metrics["model"]["log_loss"]
    # and a search that could see the test rows (all data, non-nested) is moved by it
    inner = replace(cfg, n_folds=2)
    _, leaky_clean = tune(inner, d.X, d.ts, d.prices(), d.names, n_trials=1)
    _, leaky_dirty = tune(inner, X2, d.ts, p2, d.names, n_trials=1)
    assert leaky_clean["values"] != leaky_dirty["values"]


def test_train_with_tuning_records_every_selection(klines, tmp_path, small_config):
    d = klines.tail(2000)
    cfg = small_config(max_epochs=1, n_folds=2, tune_trials=1, train_stride=4)
    events = []
    p = train(cfg, d.X, d.ts, d.prices(), d.names, d.spec_hash, tmp_path / "tuned", progress=events.append)
    man = json.loads((p / "manifest.json").read_text())
    tuning = man["train_config"]["tuning"]
    T = len(d.ts)
    assert tuning["final"]["rows"][1] == T  # the final model's search: its own (most recent) window
    assert [f["rows"] for f in tuning["folds"]] == [f["tuning"]["rows"] for f in man["metrics"]["folds"]]
    for f in man["metrics"]["folds"]:
        assert f["tuning"]["rows"][1] <= T and set(f["tuning"]["best_params"]) == {
            "hidden",
            "layers",
            "dropout",
            "lr",
            "seq_len",
        }
    assert man["seq_len"] == tuning["final"]["best_params"]["seq_len"]
    assert {e.stage for e in events} == {"tune", "fold", "final", "done"}
    assert "## Nested tuning" in (p / "report.md").read_text()
