"""Event-time order for a replayed pipeline (pure: no I/O, no threads).

Books reach the trader straight from the collector; the signal of sampled tick ``t`` comes two
services later, once the features service has seen a book after ``t``. A backtest hands the
engine every book at or before ``t``, then the signal, then the later books. The running trader
does the same on the replay clock by holding books back:

* a signal releases the held books at or before its time (in order), then is applied;
* a book held longer than ``hold_s`` of wall time is released anyway (ticks without a signal:
  warm-up, gaps, the end of the recording). The pipeline takes milliseconds, so a paced replay
  never needs this for a book a signal is still coming for; a signal older than a book already
  released is counted in ``late_signals`` (the order then differs from a backtest's);
* a book older than the last released one starts a new pass (a looped replay): everything held
  is released first and the order starts afresh.

Event time is the book's exchange time (its receive time when it has none), never going
backwards within a pass: the time the features service samples on and a backtest uses
(``backtest.data``), so a book and the signal of a tick are ordered on one clock.

The engine's timer runs on event time, as the backtest runs it: at the first book at least
``timer_ns`` after the last timer (not at the very first book).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

LOOP_NS = 60 * 10**9  # a book this far before the newest one starts a new pass (looped replay)
TIMER_NS = 10**9  # same as backtest.run.TIMER_NS: the engine timer every second of event time


@dataclass
class ReplayOrder:
    hold_s: float = 1.0
    timer_ns: int = TIMER_NS
    held: deque = field(default_factory=deque)  # (ts, arrived_monotonic, book)
    last_book_ts: int | None = None  # last released book
    last_signal_ts: int | None = None
    next_timer: int | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {"late_signals": 0, "late_books": 0, "loops": 0, "released_by_timeout": 0}
    )

    def add_book(self, ts: int, book: Any, now_mono: float) -> list[tuple[str, Any]]:
        """A book arrived at event time ``ts``: events to apply now (``("timer", ns)`` /
        ``("book", (ts, book))``, ``ts`` clamped so that it never goes backwards)."""
        out: list[tuple[str, Any]] = []
        newest = self.held[-1][0] if self.held else self.last_book_ts
        if newest is not None and ts < newest - LOOP_NS:  # a looped replay starts over
            out += self._release(None)
            self.counters["loops"] += 1
            self.last_book_ts = self.last_signal_ts = self.next_timer = None
        elif newest is not None and ts < newest:
            ts = newest  # a late exchange stamp: kept in arrival order
        if self.last_signal_ts is not None and ts <= self.last_signal_ts:
            self.counters["late_books"] += 1  # a signal after it was applied already: apply at once
            return out + self._apply_book(ts, book)
        self.held.append((ts, now_mono, book))
        return out

    def add_signal(self, ts: int) -> list[tuple[str, Any]]:
        """A signal at ``ts`` arrived: the books to apply before it."""
        if self.last_book_ts is not None and ts < self.last_book_ts:
            self.counters["late_signals"] += 1
        if self.last_signal_ts is None or ts > self.last_signal_ts:
            self.last_signal_ts = ts
        return self._release(ts)

    def due(self, now_mono: float) -> list[tuple[str, Any]]:
        """Books held longer than ``hold_s`` (wall clock)."""
        out: list[tuple[str, Any]] = []
        while self.held and now_mono - self.held[0][1] >= self.hold_s:
            ts, _, book = self.held.popleft()
            self.counters["released_by_timeout"] += 1
            out += self._apply_book(ts, book)
        return out

    def _release(self, upto: int | None) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while self.held and (upto is None or self.held[0][0] <= upto):
            ts, _, book = self.held.popleft()
            out += self._apply_book(ts, book)
        return out

    def _apply_book(self, ts: int, book: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.next_timer is None:
            self.next_timer = ts + self.timer_ns
        elif ts >= self.next_timer:
            out.append(("timer", ts))
            self.next_timer = ts + self.timer_ns
        out.append(("book", (ts, book)))
        if self.last_book_ts is None or ts > self.last_book_ts:
            self.last_book_ts = ts
        return out
