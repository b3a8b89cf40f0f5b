"""Is an input from the future, or too old? One rule for books, trades and feature vectors
(pure: the clocks are injected).

* Live (``mode="wall"``): compared with the wall clock.
* Replay (``mode="replay"``): compared with the replay clock, the latest event time accepted so
  far (a recording's time, not today's); nothing is judged before the first accepted input.
  In replay the age of an input is judged against the latest time of its own stream (``stream``:
  one kind of input of one symbol), not of all streams: books and trades arrive on separate
  queues, and a slow book consumer must not see its books dropped because the trades queue ran
  ahead. The future check uses the latest time of all streams.

An input more than ``future_tolerance_ns`` ahead of the clock raises :class:`FutureInput`
(the services let it propagate, so the bus dead-letters the message with the reason); it must
never touch any state. An input more than ``max_age_ns`` behind the clock is "old": the caller
drops and counts it (``max_age_ns = 0`` turns that check off).

:class:`InputGate` is that drop/count/log step, shared by the features and predictor services:
it counts ``future`` and ``dropped_old`` in the caller's counter, logs the first old input and
every 1000th (through an injected ``warn``, in the caller's own words) and advances the clock
only for an accepted input.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FutureInput", "InputClock", "InputGate", "clock_mode"]

ClockMode = Literal["wall", "replay"]
CLOCK_MODES: tuple[ClockMode, ...] = ("wall", "replay")


class FutureInput(ValueError):
    """An input's timestamp is further in the future than the tolerance allows."""


def clock_mode(setting: str, collector_source: str) -> ClockMode:
    """``auto`` follows the collector: replay when it replays recordings, else the wall clock."""
    if setting == "auto":
        return "replay" if collector_source == "replay" else "wall"
    if setting not in CLOCK_MODES:
        raise ValueError(f"PIPELINE_CLOCK must be auto, wall or replay; got {setting!r}")
    return setting


@dataclass
class InputClock:
    mode: Literal["wall", "replay"] = "wall"
    future_tolerance_ns: int = 5_000_000_000
    max_age_ns: int = 10_000_000_000
    now_fn: Callable[[], int] = field(default=time.time_ns, repr=False)
    _replay_now: int | None = None
    _stream_now: dict[str, int] = field(default_factory=dict, repr=False)

    def now(self, stream: str | None = None) -> int | None:
        """The clock an input's age is judged by: the wall clock live; in replay the latest
        accepted time of ``stream`` (of all streams when ``stream`` is None)."""
        if self.mode == "wall":
            return self.now_fn()
        return self._replay_now if stream is None else self._stream_now.get(stream)

    def check(self, ts: int, what: str = "input", stream: str | None = None) -> bool:
        """True when ``ts`` is fresh; False when it is older than ``max_age`` (drop and count);
        raises :class:`FutureInput` when it is ahead of the clock by more than the tolerance."""
        now = self.now()
        if now is None:
            return True
        ahead = ts - now
        if ahead > self.future_tolerance_ns:
            clock = "wall clock" if self.mode == "wall" else "replay clock"
            raise FutureInput(
                f"{what} ts {ts} is {ahead / 1e9:.3f} s ahead of the {clock} "
                f"(tolerance {self.future_tolerance_ns / 1e9:g} s)"
            )
        own = self.now(stream)
        return own is None or not (self.max_age_ns and own - ts > self.max_age_ns)

    def accepted(self, ts: int, stream: str | None = None) -> None:
        """An input was accepted: in replay it advances the replay clock (and its stream's)."""
        if self.mode != "replay":
            return
        if self._replay_now is None or ts > self._replay_now:
            self._replay_now = int(ts)
        if stream is not None and ts > self._stream_now.get(stream, ts - 1):
            self._stream_now[stream] = int(ts)

    def age_s(self, ts: int, stream: str | None = None) -> float:
        now = self.now(stream)
        return float("nan") if now is None else (now - ts) / 1e9


@dataclass
class InputGate:
    """Judge one input with ``clock``: raise :class:`FutureInput` (counted as ``future``) for one
    from the future, return False (counted as ``dropped_old``; the first and every
    ``log_every``-th logged) for one too old, else advance the clock and return True.

    ``old_fmt`` is the caller's %-format for the "too old" line; it is given the ``log_args`` of
    :meth:`admit`, then the age (s), the maximum age (s) and the running count of old inputs.
    Thread-safe: the check, the counts and the clock advance happen under one lock."""

    clock: InputClock
    counts: Counter[str]
    warn: Callable[..., None]
    old_fmt: str
    log_every: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self, ts: int, what: str, stream: str | None, log_args: tuple[object, ...] = ()) -> bool:
        with self._lock:
            try:
                ok = self.clock.check(ts, what, stream=stream)
            except FutureInput:
                self.counts["future"] += 1
                raise
            if not ok:
                self.counts["dropped_old"] += 1
                n = self.counts["dropped_old"]
                if n == 1 or n % self.log_every == 0:
                    self.warn(
                        self.old_fmt,
                        *log_args,
                        self.clock.age_s(ts, stream),
                        self.clock.max_age_ns / 1e9,
                        n,
                    )
                return False
            self.clock.accepted(ts, stream)
            return True
