"""The REAL trader service (paper venue) for the bot/notifier tests, fed real recorded books:
the top-25 snapshots of the Binance spot BTCUSDT recording under DEPTHPILOT_DATA_DIR, re-stamped
"now" so the trader's freshness checks pass (prices and sizes are the recording's)."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import QUEUES
from tests.trader.helpers import need_data
from tests.trader.svc_helpers import signal as svc_signal

BOOK_CSV = "binance-spot-btcusdt-2024-08-08-l2diff/derived_book_snapshot_25.csv.gz"
TRADER_QUEUES = tuple(q for q in QUEUES if q.startswith("trader."))  # the trader's own queues


@lru_cache(maxsize=1)
def real_books() -> tuple[np.ndarray, np.ndarray, str, str]:
    """(bids, asks, exchange, symbol) of the recording; exchange and symbol read from its rows."""
    import pandas as pd

    from features.io import load_book_snapshots_csv

    path = need_data(BOOK_CSV)
    _, bids, asks = load_book_snapshots_csv(path)
    head = pd.read_csv(path, nrows=1)
    return bids, asks, str(head["exchange"].iloc[0]), str(head["symbol"].iloc[0]).upper()


def mids() -> np.ndarray:
    bids, asks, _, _ = real_books()
    return (bids[:, 0, 0] + asks[:, 0, 0]) / 2


def snapshot(i: int, seq: int) -> m.BookSnapshot:
    bids, asks, exchange, symbol = real_books()
    ts = m.now_ns()
    return m.BookSnapshot(
        exchange=exchange,
        symbol=symbol,
        ts_exchange=ts,
        ts_recv=ts,
        seq=seq,
        bids=np.ascontiguousarray(bids[i]),
        asks=np.ascontiguousarray(asks[i]),
        depth=bids.shape[1],
    )


class RealBookFeeder:
    """Publishes recorded row ``index`` every ``every_s``; ``play(stop, step)`` walks forward
    through the recording (``step`` rows per publish) up to row ``stop``."""

    def __init__(self, bus: Any, index: int = 0, every_s: float = 0.02) -> None:
        self.bus, self.index, self.every_s = bus, index, every_s
        self.stop_at, self.step, self.seq = index, 1, 0
        self.published: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="real-books")

    def play(self, stop: int, step: int = 1) -> None:
        self.stop_at, self.step = stop, step

    def __enter__(self) -> "RealBookFeeder":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.index < self.stop_at:
                self.index = min(self.index + self.step, self.stop_at)
            self.seq += 1
            self.bus.publish(snapshot(self.index, self.seq))
            self.published.append(self.index)


def signal(direction: str, p: float = 0.8, ttl_s: float = 10.0) -> m.Signal:
    """A fresh signal for the recording's exchange and symbol."""
    _, _, exchange, symbol = real_books()
    return svc_signal(direction, exchange=exchange, symbol=symbol, p=p, ttl_s=ttl_s)


class RealTrader:
    """TraderService (paper) on its own bus connection, a mongomock store, a test bus."""

    def __init__(self, amqp_url: str, uid: str, **overrides: Any) -> None:
        from trader.service import TraderService

        _, _, exchange, _ = real_books()
        self.settings = load_settings(
            amqp_url=amqp_url,
            mongo_url=f"mongomock://{uid}",
            exchanges=[exchange],
            trader_exchange=exchange,
            **overrides,
        )
        self.store = Store.connect(self.settings.mongo_url, f"tgreal_{uid}")
        self.bus = connect_bus(amqp_url, "trader").start()
        self.svc = TraderService(self.settings, self.bus, self.store)
        self.handled: list[m.ControlCommand] = []  # every command that reached the handlers
        handle = self.svc.handle_command

        def recording(cmd: m.ControlCommand) -> Any:
            self.handled.append(cmd)
            return handle(cmd)

        self.svc.handle_command = recording  # type: ignore[method-assign]

    def start(self) -> "RealTrader":
        self.svc.start()
        return self

    def close(self) -> None:
        self.svc.stop()
        self.bus.close()
        self.store.drop_database()


def purge(amqp_url: str, *queues: str) -> None:
    bus = connect_bus(amqp_url, "test-admin").start()
    try:
        for q in queues:
            bus.purge(q)
    finally:
        bus.close()
