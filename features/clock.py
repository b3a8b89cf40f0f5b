"""The sampled row clock shared by training and serving (pure, no I/O).

With ``FeatureSpec.sample_interval_s = dt > 0`` books are sampled on fixed ticks ``k * dt``
(ns since the epoch): the row at tick ``tau`` describes the LAST book with ``ts <= tau`` (no
lookahead; several books in one tick: the latest wins, ties by arrival order). A book is held
for later ticks while no new book arrives, up to ``max_gap``: a tick whose latest book is older
than ``max_gap`` gives no row, and neither does a tick whose latest book is invalid.

Each sampled row carries a *reset* flag: True when per-symbol state (order-flow imbalance, the
block change baseline) must restart at this row -- the first row, a row after a tick that gave
no row, or a row after a reset event (an invalid book, or no snapshot for more than
``max_gap``) since the previous row's book.

Batch: :func:`sample_clock`. Streaming: :class:`StreamingSampler` (a tick is emitted once a
book after it arrives -- nothing after the tick is ever used -- or when ``advance(now)`` passes
it). Both give the same ticks, books and reset flags on the same input.

:func:`reset_events` is the event-clock counterpart (one row per book) used by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StreamingSampler", "Tick", "fresh_fraction", "reset_events", "sample_clock"]


def _gap_events(ts: np.ndarray, max_gap_ns: int) -> np.ndarray:
    """True where a row comes more than ``max_gap_ns`` after every earlier row."""
    ev = np.zeros(ts.shape, dtype=bool)
    if ts.size > 1:
        prev_max = np.maximum.accumulate(ts)[:-1]
        ev[1:] = ts[1:] - prev_max > max_gap_ns
    return ev


def reset_events(ts: np.ndarray, code: np.ndarray, max_gap_ns: int) -> np.ndarray:
    """Event clock: bool (T,) reset flag for valid rows (``code == 0``), False elsewhere.

    A valid row resets when it is the first valid row, or when since the previous valid row
    there was an invalid book (codes 1-5) or a feed gap (a row > ``max_gap_ns`` after all
    earlier rows). Rows with code 6 (timestamp going backwards: late) are ignored."""
    ts = np.asarray(ts, dtype=np.int64)
    T = ts.size
    out = np.zeros(T, dtype=bool)
    seq = code != 6
    ev = np.zeros(T, dtype=bool)
    ev[seq] = (code[seq] != 0) | _gap_events(ts[seq], max_gap_ns)
    vidx = np.flatnonzero(code == 0)
    if vidx.size:
        E = np.cumsum(ev)
        r = np.empty(vidx.size, dtype=bool)
        r[0] = True
        r[1:] = E[vidx[1:]] - E[vidx[:-1]] > 0
        out[vidx] = r
    return out


def sample_clock(
    ts: np.ndarray, ok: np.ndarray, interval_ns: int, max_gap_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample rows (time-ordered; drop late rows first) on ticks ``k * interval_ns``.

    Returns ``(tick_ts, src, reset)``: for every tick with a row, its time, the index of the
    book it describes, and the reset flag (see module docstring)."""
    ts = np.asarray(ts, dtype=np.int64)
    ok = np.asarray(ok, dtype=bool)
    if ts.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool)
    if (np.diff(ts) < 0).any():
        raise ValueError("sample_clock needs non-decreasing timestamps (drop late rows first)")
    iv = int(interval_ns)
    k0 = -((-int(ts[0])) // iv)  # first tick at or after the first book
    k1 = int(ts[-1]) // iv
    ticks = np.arange(k0, k1 + 1, dtype=np.int64) * iv
    src = np.searchsorted(ts, ticks, side="right") - 1
    emit = ok[src] & (ticks - ts[src] <= max_gap_ns)
    ev = ~ok | _gap_events(ts, max_gap_ns)
    E = np.cumsum(ev)
    # reset unless the previous tick gave a row and no event happened after its book
    prev_emit = np.concatenate(([False], emit[:-1]))
    prev_src = np.concatenate(([0], src[:-1]))
    reset = ~prev_emit | (E[src] - E[prev_src] > 0)
    return ticks[emit], src[emit], reset[emit]


@dataclass
class Tick:
    ts: int  # the tick (ns)
    book: Any  # the payload of the book it describes
    reset: bool


class StreamingSampler:
    """Streaming :func:`sample_clock`. ``update(ts, book, ok)`` returns the ticks that the
    arrival of this book completes (all ticks before ``ts``); a book with ``ts`` before an
    earlier book is late: ``update`` returns None and counts it in ``late``."""

    def __init__(self, interval_ns: int, max_gap_ns: int) -> None:
        self.iv = int(interval_ns)
        self.max_gap = int(max_gap_ns)
        self._cur: tuple[int, Any, bool] | None = None  # latest book (ts, payload, ok)
        self._seen: int | None = None  # max ts seen
        self._next: int | None = None  # next tick to decide
        self._event = False  # a reset event since the last emitted row's book
        self._prev_emitted = False
        self.late = 0
        self.ticks = 0  # ticks decided
        self.fresh = 0  # ticks whose book arrived within that tick's interval

    def _emit_until(self, limit: int) -> list[Tick]:
        """Decide every tick < limit."""
        out: list[Tick] = []
        cur = self._cur
        if cur is None or self._next is None:
            return out
        cts, book, ok = cur
        while self._next < limit:
            t = self._next
            if not ok or t - cts > self.max_gap:
                # no row for this tick nor any later tick until a new book: jump past them
                self._prev_emitted = False
                n = max(1, -((-(limit - t)) // self.iv))
                self.ticks += n
                self._next = t + n * self.iv
                break
            out.append(Tick(t, book, self._event or not self._prev_emitted))
            self.ticks += 1
            self.fresh += int(t - cts < self.iv)
            self._event = False
            self._prev_emitted = True
            self._next = t + self.iv
        return out

    def update(self, ts: int, book: Any, ok: bool) -> list[Tick] | None:
        ts = int(ts)
        if self._seen is not None and ts < self._seen:
            self.late += 1
            return None
        out = self._emit_until(ts)
        if self._cur is not None and ts - self._cur[0] > self.max_gap:
            self._event = True
        if not ok:
            self._event = True
        self._seen = ts
        self._cur = (ts, book, bool(ok))
        if self._next is None:
            self._next = -((-ts) // self.iv) * self.iv
        return out

    def advance(self, now_ns: int) -> list[Tick]:
        """Decide the ticks before ``now_ns`` (event time known to have passed); a book that
        later arrives for one of them is late."""
        out = self._emit_until(int(now_ns))
        if self._seen is not None and int(now_ns) - 1 > self._seen:
            self._seen = int(now_ns) - 1
        return out

    def flush(self) -> list[Tick]:
        """End of a recording: decide the ticks up to and including the last book's time."""
        if self._cur is None:
            return []
        return self._emit_until(self._cur[0] + 1)


def fresh_fraction(sampler: StreamingSampler) -> float:
    return sampler.fresh / sampler.ticks if sampler.ticks else 1.0
