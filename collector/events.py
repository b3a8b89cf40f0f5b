"""Events the live sources report to their owner (pure dataclasses, no I/O)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class RetryEvent:
    """A failed request that will be retried after ``sleep_s`` (reported as a RiskEvent)."""

    exchange: str
    symbol: str
    operation: str  # e.g. "load_markets", "fetch_order_book", "watch_trades", "depth_snapshot"
    attempt: int  # the attempt that failed (1-based)
    error_type: str
    error: str
    sleep_s: float  # back-off before the next attempt
    ts_ns: int = field(default_factory=time.time_ns)


RetryCallback = Callable[[RetryEvent], Any]
