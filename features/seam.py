"""The seam between candle history (REST back-fill, the store) and live candles (pure logic).

Every candle that reaches the candle features passes :meth:`CandleSeam.admit`, history and
live alike, so the feature state sees each interval at most once and in order:

* a candle for an interval already seen is a **duplicate**: dropped and counted;
* a candle more than one interval after the previous one leaves **missing** intervals:
  admitted, and the gap (how many, from when) reported to the caller;
* a history candle for the interval the live builder is still filling, or later, is refused
  (:meth:`history_until`): the live candle owns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CandleSeam", "SeamGap"]


@dataclass(frozen=True)
class SeamGap:
    after_ts: int  # close time (ns) of the last candle before the gap
    first_ts: int  # close time of the first candle after it
    missing: int  # intervals missing
    where: str  # "history" (inside the back-fill), "seam" (history -> live), "live"


@dataclass
class CandleSeam:
    interval_ns: int
    last_b: int | None = None  # interval index of the last admitted candle
    last_ts: int | None = None
    history_last_b: int | None = None  # last admitted history candle
    duplicates: int = 0
    missing: int = 0
    gaps: list[SeamGap] = field(default_factory=list)

    def admit(self, ts: int, *, history: bool) -> SeamGap | Literal[False] | None:
        """``False`` for a duplicate (drop it); else ``None`` or the :class:`SeamGap` it closes."""
        b = ts // self.interval_ns
        if self.last_b is not None and b <= self.last_b:
            self.duplicates += 1
            return False
        gap = None
        if self.last_b is not None and b > self.last_b + 1:
            where = "history" if history else ("seam" if self.last_b == self.history_last_b else "live")
            gap = SeamGap(int(self.last_ts or 0), int(ts), int(b - self.last_b - 1), where)
            self.missing += gap.missing
            self.gaps.append(gap)
        self.last_b, self.last_ts = b, ts
        if history:
            self.history_last_b = b
        return gap

    @staticmethod
    def history_until(open_live_b: int | None) -> int | None:
        """History candles must close before this interval index (the live open candle's)."""
        return open_live_b
