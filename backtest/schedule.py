"""Which rows of a backtest the engine and the paper exchange must see (pure, arrays in).

:func:`backtest.run.run_signals` walks the books in time order. While the engine is flat with
nothing pending (no order waiting for its latency, none resting, no report queued, the session
already started), a book changes nothing but the "latest book" fields that the next event
reads; such a book can be left out when the next event does not read it. The rows that must
be seen regardless of that state (:func:`static_rows`):

* the first and the last row, and the row where the run stops deciding (``last``);
* a row with a signal (the signal reads its own book);
* the row before a timer tick or a funding time (the timer reads the latest book's age, the
  funding the latest mark);
* a row whose validity differs from the previous row's (the engine's data halt);
* the first row of a new UTC day (the daily-loss reset).

The timer and funding rows themselves follow the event-by-event loop exactly
(:func:`timer_rows`, :func:`funding_rows`). ``tests/backtest/test_skip_parity.py`` proves the
trades, fills, equity and counters equal the event-by-event path.
"""

from __future__ import annotations

import numpy as np

DAY_NS = 86_400 * 10**9


def timer_rows(ts: np.ndarray, period_ns: int) -> np.ndarray:
    """Rows where the loop's timer fires: the first row at or after the previous tick's row
    time + ``period_ns`` (starting from row 0's time)."""
    T = len(ts)
    out = np.zeros(T, dtype=bool)
    if not T:
        return out
    nxt = int(ts[0]) + period_ns
    j = 0
    while True:
        j = int(np.searchsorted(ts, nxt, side="left"))
        if j >= T:
            return out
        out[j] = True
        nxt = int(ts[j]) + period_ns


def funding_rows(ts: np.ndarray, period_ns: int) -> np.ndarray:
    """Rows where a funding time is handled: one per row at most, the first row at or after
    each period boundary after row 0 (several boundaries in one gap: on consecutive rows)."""
    T = len(ts)
    out = np.zeros(T, dtype=bool)
    if not T:
        return out
    nxt = (int(ts[0]) // period_ns + 1) * period_ns
    j = 0
    while j < T:
        j = max(j, int(np.searchsorted(ts, nxt, side="left")))
        if j >= T:
            break
        out[j] = True
        nxt += period_ns
        j += 1
    return out


def static_rows(
    ts: np.ndarray, valid: np.ndarray, signal: np.ndarray, timer: np.ndarray, funding: np.ndarray, last: int
) -> np.ndarray:
    """Rows the engine and the paper exchange see whatever their state (see the module doc)."""
    T = len(ts)
    need = signal.copy()
    if not T:
        return need
    need[0] = need[-1] = True
    need[min(max(last, 0), T - 1)] = True
    need[:-1] |= timer[1:] | funding[1:]
    need[1:] |= valid[1:] != valid[:-1]
    day = ts // DAY_NS
    need[1:] |= day[1:] != day[:-1]
    return need
