"""Per-feed health counters (pure: every time is passed in or read from an injected clock).

One :class:`FeedHealth` per (exchange, symbol) feed tracks: updates/s over a rolling window,
gaps, resyncs, reconnects, crossed books, staleness (now - last update) and the last
exchange-to-receive latency. :meth:`FeedHealth.snapshot` returns a plain dict for heartbeats,
metrics and the API; :func:`is_stale` decides staleness for a configurable max age.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, TypedDict, Unpack

__all__ = ["FeedHealth", "HealthRegistry", "is_stale"]

_NS = 1_000_000_000


def is_stale(last_update_ns: int | None, now_ns: int, max_age_s: float) -> bool:
    """True when no update ever arrived or the last one is older than ``max_age_s``."""
    if max_age_s <= 0:
        raise ValueError(f"max_age_s must be > 0, not {max_age_s!r}")
    if last_update_ns is None:
        return True
    return (now_ns - last_update_ns) > max_age_s * _NS


class FeedHealth:
    """Health of one feed. Times in ns; ``clock`` (default ``time.time_ns``) is used only
    when a method is called without an explicit ``now_ns``.

    The update rate is counted in ``buckets`` sub-windows of the rolling ``window_s`` so
    memory is O(buckets) whatever the message rate.
    """

    def __init__(
        self,
        exchange: str = "",
        symbol: str = "",
        *,
        window_s: float = 10.0,
        buckets: int = 20,
        max_age_s: float = 5.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, not {max_age_s!r}")
        self.exchange = exchange
        self.symbol = symbol
        self.window_ns = int(window_s * _NS)
        self.bucket_ns = max(1, self.window_ns // buckets)
        self.max_age_s = max_age_s
        self.clock = clock
        self._buckets: deque[list[int]] = deque()  # [bucket_index, count]
        self.updates = 0
        self.gaps = 0
        self.resyncs = 0
        self.reconnects = 0
        self.crossed = 0
        self.last_update_ns: int | None = None
        self.first_update_ns: int | None = None
        self.last_latency_ns: int | None = None

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else now_ns

    # ----------------------------------------------------------------- events
    def on_update(self, ts_recv_ns: int, ts_exchange_ns: int = 0) -> None:
        """A book/trade update received at ``ts_recv_ns`` (exchange time 0 = unknown)."""
        self.updates += 1
        self.last_update_ns = ts_recv_ns
        if self.first_update_ns is None:
            self.first_update_ns = ts_recv_ns
        if ts_exchange_ns:
            self.last_latency_ns = ts_recv_ns - ts_exchange_ns
        idx = ts_recv_ns // self.bucket_ns
        b = self._buckets
        if b and b[-1][0] == idx:
            b[-1][1] += 1
        elif b and b[-1][0] > idx:  # out-of-order receive time: count it in the newest bucket
            b[-1][1] += 1
        else:
            b.append([idx, 1])
            self._expire(ts_recv_ns)

    def on_gap(self) -> None:
        self.gaps += 1

    def on_resync(self) -> None:
        self.resyncs += 1

    def on_reconnect(self) -> None:
        self.reconnects += 1

    def on_crossed(self) -> None:
        self.crossed += 1

    # ----------------------------------------------------------------- queries
    def _expire(self, now_ns: int) -> None:
        oldest = (now_ns - self.window_ns) // self.bucket_ns
        b = self._buckets
        while b and b[0][0] <= oldest:
            b.popleft()

    def updates_per_s(self, now_ns: int | None = None) -> float:
        """Updates per second over the rolling window ending at ``now_ns``.

        While the feed is younger than the window, the rate is over its age so far."""
        now = self._now(now_ns)
        self._expire(now)
        n = sum(c for _, c in self._buckets)
        if n == 0 or self.first_update_ns is None:
            return 0.0
        span = min(self.window_ns, max(now - self.first_update_ns, min(self.window_ns, _NS)))
        return n * _NS / span

    def staleness_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the last update (None if none yet)."""
        if self.last_update_ns is None:
            return None
        return (self._now(now_ns) - self.last_update_ns) / _NS

    def stale(self, now_ns: int | None = None, max_age_s: float | None = None) -> bool:
        return is_stale(self.last_update_ns, self._now(now_ns), max_age_s or self.max_age_s)

    def snapshot(self, now_ns: int | None = None) -> dict[str, object]:
        now = self._now(now_ns)
        st = self.staleness_s(now)
        lat = self.last_latency_ns
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "updates": self.updates,
            "updates_per_s": self.updates_per_s(now),
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "reconnects": self.reconnects,
            "crossed": self.crossed,
            "staleness_s": st,
            "stale": self.stale(now),
            "last_latency_ms": None if lat is None else lat / 1e6,
            "last_update_ns": self.last_update_ns,
        }


class FeedHealthOptions(TypedDict, total=False):
    """The keyword settings of :class:`FeedHealth` a :class:`HealthRegistry` shares."""

    window_s: float
    buckets: int
    max_age_s: float
    clock: Callable[[], int]


class HealthRegistry:
    """FeedHealth per (exchange, symbol), created on first use with shared settings."""

    def __init__(self, **feed_kwargs: Unpack[FeedHealthOptions]) -> None:
        self._kw = feed_kwargs
        self.feeds: dict[tuple[str, str], FeedHealth] = {}

    def feed(self, exchange: str, symbol: str) -> FeedHealth:
        key = (exchange, symbol)
        f = self.feeds.get(key)
        if f is None:
            f = self.feeds[key] = FeedHealth(exchange, symbol, **self._kw)
        return f

    def snapshot(self, now_ns: int | None = None) -> list[dict[str, object]]:
        return [f.snapshot(now_ns) for f in self.feeds.values()]

    def stale_feeds(self, now_ns: int, max_age_s: float | None = None) -> list[tuple[str, str]]:
        return [k for k, f in self.feeds.items() if f.stale(now_ns, max_age_s)]
