"""Baseline trade plans on the same books, for the same paper exchange, latency and fees.

* flat: no trade (PnL 0 by construction, still run so the table is uniform);
* buy-and-hold: one long from the first valid book to the end;
* random entries: as many trades as the model made, with the same holding times, at random
  non-overlapping times and random sides (seeded; several draws, their spread reported);
* persistence: a signal stream (see :func:`backtest.signals.persistence_stream`) through the
  same engine and strategy as the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backtest.data import Books
from trader.actions import ClosedTrade


def buy_and_hold_plan(books: Books, last_row: int) -> list[tuple[int, int, str]]:
    ok = np.flatnonzero(books.valid[: last_row + 1])
    if ok.size < 2:
        return []
    return [(int(ok[0]), last_row, "long")]


def holding_rows(books: Books, trades: Sequence[ClosedTrade]) -> list[int]:
    """Holding time of each trade in book rows (>= 1)."""
    out = []
    for t in trades:
        a = int(np.searchsorted(books.ts, t.entry_ts, side="left"))
        b = int(np.searchsorted(books.ts, t.exit_ts, side="left"))
        out.append(max(1, b - a))
    return out


def random_plan(n_rows: int, lengths: Sequence[int], seed: int, first_row: int = 0) -> list[tuple[int, int, str]]:
    """Non-overlapping trades of the given lengths (rows) at uniformly random places in
    ``[first_row, n_rows)``, in random order with random sides. Fewer trades if they do not fit."""
    rng = np.random.default_rng(seed)
    lens = [int(x) for x in lengths]
    rng.shuffle(lens)
    span = n_rows - first_row
    while lens and sum(lens) + len(lens) > span:  # each trade also needs one row gap
        lens.pop()
    if not lens:
        return []
    free = span - sum(lens) - len(lens)
    gaps = np.sort(rng.integers(0, free + 1, size=len(lens)))
    gaps = np.diff(np.concatenate(([0], gaps)))
    plan = []
    pos = first_row
    for g, ln in zip(gaps.tolist(), lens):
        pos += g
        side = "long" if rng.random() < 0.5 else "short"
        plan.append((pos, pos + ln, side))
        pos += ln + 1
    return plan
