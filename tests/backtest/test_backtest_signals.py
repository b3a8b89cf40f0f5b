"""Batched features + inference over a recording give the same probabilities as streaming one
book at a time; baselines and forecast metrics use no future data."""

from __future__ import annotations

import numpy as np

from backtest.baselines import random_plan
from backtest.evaluation import online_persistence
from backtest.signals import model_probs, past_return_class, streaming_probs


def test_batched_equals_streaming_with_invalid_books(pred, usdm_books):
    b = usdm_books.slice(0, 700)
    bids = b.bids.copy()
    bids[300] = np.nan  # a broken book in the middle: the window resets in both paths
    from backtest.data import books_from_arrays

    b = books_from_arrays(b.exchange, b.symbol, b.ts, bids, b.asks)
    assert not b.valid[300]
    batch = model_probs(pred, b).probs
    stream = streaming_probs(pred, b)
    assert np.array_equal(np.isnan(batch), np.isnan(stream))
    assert np.isnan(batch[300 : 300 + pred.seq_len]).all() and np.isfinite(batch[300 + pred.seq_len]).all()
    assert np.nanmax(np.abs(batch - stream)) <= 1e-5


def test_persistence_uses_only_the_past():
    mid = np.linspace(100, 101, 200)
    mid[150:] = mid[150:][::-1]  # change the future only
    a = past_return_class(np.linspace(100, 101, 200), 20, 1e-5, ["down", "flat", "up"])
    b = past_return_class(mid, 20, 1e-5, ["down", "flat", "up"])
    assert np.array_equal(a[:150], b[:150])
    assert (a[:20] == -1).all()
    y = np.random.default_rng(0).integers(0, 3, 300)
    y2 = y.copy()
    y2[200:] = (y2[200:] + 1) % 3
    p1, p2 = online_persistence(y, 20, 3), online_persistence(y2, 20, 3)
    np.testing.assert_array_equal(p1[:200], p2[:200])


def test_random_plan_same_lengths_no_overlap():
    lengths = [5, 40, 12, 7, 100]
    for seed in range(20):
        plan = random_plan(1000, lengths, seed, first_row=10)
        assert sorted(b - a for a, b, _ in plan) == sorted(lengths)
        assert all(a >= 10 and b < 1000 for a, b, _ in plan)
        assert all(plan[i][1] < plan[i + 1][0] for i in range(len(plan) - 1))
    assert random_plan(1000, lengths, 1) == random_plan(1000, lengths, 1)
    assert random_plan(1000, lengths, 1) != random_plan(1000, lengths, 2)


def test_scripted_trades_survive_a_latency_longer_than_the_trade(usdm_books):
    """A one-row trade with 1 s latency: the exit waits for the entry fill; money stays exact."""
    from decimal import Decimal as D

    from backtest.data import infer_instrument
    from backtest.run import RunConfig, run_scripted

    books = usdm_books.slice(0, 2000)
    cfg = RunConfig(latency_ns=10**9)
    r = run_scripted(
        books, [(100, 101, "long"), (500, 501, "short"), (1990, 1999, "long")], infer_instrument(books), cfg
    )
    assert len(r.trades) == 2 and r.open_qty == 0  # the last one starts after the final decision row
    assert sum((t.pnl for t in r.trades), D(0)) == r.end_cash - r.start_balance
    assert all(f.ts_ns >= r.requests[f.client_order_id].ts_ns + cfg.latency_ns for f in r.fills)
