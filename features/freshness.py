"""Is an input from the future, or too old? One rule for books, trades and feature vectors
(pure: the clocks are injected).

* Live (``mode="wall"``): compared with the wall clock.
* Replay (``mode="replay"``): compared with the replay clock, the latest event time accepted so
  far (a recording's time, not today's); nothing is judged before the first accepted input.

An input more than ``future_tolerance_ns`` ahead of the clock raises :class:`FutureInput`
(the services let it propagate, so the bus dead-letters the message with the reason); it must
never touch any state. An input more than ``max_age_ns`` behind the clock is "old": the caller
drops and counts it (``max_age_ns = 0`` turns that check off).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FutureInput", "InputClock", "clock_mode"]


class FutureInput(ValueError):
    """An input's timestamp is further in the future than the tolerance allows."""


def clock_mode(setting: str, collector_source: str) -> Literal["wall", "replay"]:
    """``auto`` follows the collector: replay when it replays recordings, else the wall clock."""
    if setting == "auto":
        return "replay" if collector_source == "replay" else "wall"
    if setting not in ("wall", "replay"):
        raise ValueError(f"PIPELINE_CLOCK must be auto, wall or replay; got {setting!r}")
    return setting  # type: ignore[return-value]


@dataclass
class InputClock:
    mode: Literal["wall", "replay"] = "wall"
    future_tolerance_ns: int = 5_000_000_000
    max_age_ns: int = 10_000_000_000
    now_fn: Callable[[], int] = field(default=time.time_ns, repr=False)
    _replay_now: int | None = None

    def now(self) -> int | None:
        return self.now_fn() if self.mode == "wall" else self._replay_now

    def check(self, ts: int, what: str = "input") -> bool:
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
        return not (self.max_age_ns and -ahead > self.max_age_ns)

    def accepted(self, ts: int) -> None:
        """An input was accepted: in replay it advances the replay clock."""
        if self.mode == "replay" and (self._replay_now is None or ts > self._replay_now):
            self._replay_now = int(ts)

    def age_s(self, ts: int) -> float:
        now = self.now()
        return float("nan") if now is None else (now - ts) / 1e9
