"""Builders for the trader-service tests: live-stamped books and signals, a book feeder thread
publishing over a bus, a wait helper."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from depthpilot import messages as m


def book(
    px: float,
    *,
    exchange: str = "binance",
    symbol: str = "BTCUSDT",
    ts: int | None = None,
    size: float = 1.0,
    levels: int = 10,
) -> m.BookSnapshot:
    ts = ts or time.time_ns()
    bids = np.array([[round(px - 0.05 - 0.1 * i, 2), size] for i in range(levels)])
    asks = np.array([[round(px + 0.05 + 0.1 * i, 2), size] for i in range(levels)])
    return m.BookSnapshot(
        exchange=exchange, symbol=symbol, ts_exchange=ts, ts_recv=ts, seq=1, bids=bids, asks=asks, depth=levels
    )


def signal(
    direction: str, *, exchange: str = "binance", symbol: str = "BTCUSDT", p: float = 0.8, ttl_s: float = 10.0
) -> m.Signal:
    ts = time.time_ns()
    rest = (1 - p) / 2
    probs = {"up": [rest, rest, p], "down": [p, rest, rest], "flat": [rest, p, rest]}[direction]
    return m.Signal(
        exchange=exchange,
        symbol=symbol,
        ts=ts,
        model_id="test",
        classes=["down", "flat", "up"],
        probs=probs,
        score=probs[2] - probs[0],
        expires_at=ts + int(ttl_s * 1e9),
    )


class BookFeeder:
    """Publishes a fresh book every ``every_s`` at the current ``price`` until stopped."""

    def __init__(self, bus: Any, price: float, every_s: float = 0.05, **kw: Any) -> None:
        self.bus, self.price, self.every_s, self.kw = bus, price, every_s, kw
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "BookFeeder":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.bus.publish(book(self.price, **self.kw))


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, every: float = 0.01) -> float:
    """Seconds it took for ``cond()`` to hold; AssertionError after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)
