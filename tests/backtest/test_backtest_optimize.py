"""The optimiser never reads the evaluation window while fitting: garbage there does not change
the parameters it chooses (it does change the evaluation, so the poison is real)."""

from __future__ import annotations

import numpy as np

from backtest.data import books_from_arrays, infer_instrument
from backtest.optimize import optimize, points, split
from backtest.run import RunConfig

GRID = {
    "entry_threshold": (0.45, 0.6),
    "confirm_k": (1, 3),
    "trailing_lock_fraction": (0.5,),
    "stop_cooldown_s": (0.0,),
}


def test_poisoned_evaluation_window_does_not_change_the_fit(pred, usdm_books):
    books = usdm_books.slice(0, 5000)
    inst = infer_instrument(books)
    cfg = RunConfig()
    k = split(books, 0.6)
    clean = optimize(books, pred, inst, cfg, train_frac=0.6, grid=GRID)
    bids, asks = books.bids.copy(), books.asks.copy()
    rng = np.random.default_rng(0)
    bids[k::2] = np.nan  # every other evaluation book: NaN
    asks[k + 1 :: 2] = rng.uniform(-1e6, 1e6, size=asks[k + 1 :: 2].shape)  # the rest: garbage
    bids[k + 1 :: 2, :, 0] = 1e9  # and crossed
    poisoned = books_from_arrays(books.exchange, books.symbol, books.ts, bids, asks)
    assert poisoned.valid[:k].all() and not poisoned.valid[k:].any()
    dirty = optimize(poisoned, pred, inst, cfg, train_frac=0.6, grid=GRID)
    assert len(clean.table) == len(points(GRID)) == 4
    assert dirty.best == clean.best
    assert [(r["params"], r["net_pnl"], r["trades"]) for r in dirty.table] == [
        (r["params"], r["net_pnl"], r["trades"]) for r in clean.table
    ]
    assert dirty.train_best == clean.train_best
    assert dirty.eval_best["trades"] == 0  # nothing tradeable after the split: the poison reached evaluation
    assert clean.split_row == dirty.split_row == k


def test_optimize_with_optuna_stays_on_the_grid(pred, usdm_books):
    books = usdm_books.slice(0, 3000)
    res = optimize(books, pred, infer_instrument(books), RunConfig(), grid=GRID, optuna_trials=3, seed=0)
    assert len(res.table) == 3
    assert all(r["params"]["entry_threshold"] in GRID["entry_threshold"] for r in res.table)
