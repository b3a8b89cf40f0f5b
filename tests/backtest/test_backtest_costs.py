"""Fees and latency always cost: the same decisions with zero fees and zero latency earn
strictly more, by exactly the fees plus the difference in execution cost."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np

from backtest.data import infer_instrument
from backtest.run import RunConfig, run_signals
from backtest.signals import SignalStream
from trader.config import TraderConfig
from trader.domain import to_decimal


def _stream(n: int, every: int = 100) -> SignalStream:
    """Deterministic and sparse: a signal every `every` rows, up, up, down, down, ... so each
    decision (exit on the first opposite reading, entry on the second) waits for no fill."""
    probs = np.full((n, 3), np.nan)
    rows = np.arange(0, n, every)
    up = (np.arange(rows.size) // 2) % 2 == 0
    probs[rows[up]] = [0.1, 0.1, 0.8]
    probs[rows[~up]] = [0.8, 0.1, 0.1]
    return SignalStream("script", ["down", "flat", "up"], probs, 10**10)


def _exec_cost(res, books) -> D:
    """Cost of every fill against the touch of the book the order was DECIDED on (exact)."""
    cost = D(0)
    for f in res.fills:
        req = res.requests[f.client_order_id]
        i = int(np.searchsorted(books.ts, req.ts_ns, side="right")) - 1
        while not books.valid[i]:
            i -= 1
        ref = to_decimal(float(books.asks[i, 0, 0] if f.side == "buy" else books.bids[i, 0, 0]))
        cost += (f.price - ref) * f.qty * (1 if f.side == "buy" else -1)
    return cost


def test_zero_costs_strictly_better_by_fees_and_slippage(usdm_books):
    books = usdm_books
    inst = infer_instrument(books)
    cfg = RunConfig(trader=TraderConfig(confirm_k=1, trailing_enabled=False, block_same_direction_reentry=False))
    free = cfg.without_costs()
    assert free.latency_ns == 0 and free.fees.taker == 0 and cfg.latency_ns > 0 and cfg.fees.taker > 0
    s = _stream(len(books))
    a = run_signals(books, s, inst, cfg)
    b = run_signals(books, s, inst, free)
    assert len(a.trades) == len(b.trades) >= 10
    # identical decisions: same orders, same sides and sizes, decided at the same times
    ra = sorted((r.ts_ns, r.side, r.qty) for r in a.requests.values())
    rb = sorted((r.ts_ns, r.side, r.qty) for r in b.requests.values())
    assert ra == rb
    assert [t.side for t in a.trades] == [t.side for t in b.trades]
    net_a = sum((t.pnl for t in a.trades), D(0))
    net_b = sum((t.pnl for t in b.trades), D(0))
    fees_a = sum((t.fees for t in a.trades), D(0))
    assert sum((t.fees for t in b.trades), D(0)) == 0 and fees_a > 0
    assert net_b > net_a
    assert net_b - net_a == fees_a + (_exec_cost(a, books) - _exec_cost(b, books))
    # with latency the fills are on later books than the decision
    assert all(f.ts_ns >= a.requests[f.client_order_id].ts_ns + cfg.latency_ns for f in a.fills)
    assert any(f.ts_ns > b.requests[f.client_order_id].ts_ns for f in a.fills)
