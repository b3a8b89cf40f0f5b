"""Signal -> order intent through the trader SERVICE over the in-memory bus: a model signal is
published, the trader consumes it, decides, records the intent in the store and publishes the
OrderIntent, which a subscriber receives (latency from the signal's ``created`` stamp to that
receipt). Baseline in the same run: the same decisions on the pure engine alone
(``TradingEngine.on_signal``), so the ratio is the cost of the wiring (bus hops, store, lock).

Second figure: books/s through the trader's book path (``TraderRuntime.on_book``, the
consumer's call) while a position is open and trailing - every book moves the stop, so every
book has a position to store and publish and an engine snapshot to save - with a fill batch
every 20 books, against a store whose every write takes ``--store-ms`` (5 ms). Before the
outbox those writes ran under the engine lock, so the book path waited for them; now they
run on the outbox thread and the snapshots are coalesced.

    python bench/trader_service.py [--rounds 300] [--books 400] [--store-ms 5]

Measured on the shared 2-core dev box (5 ms writes, 400 books): before (runtime at 0356ee7)
56 books/s, 3.1 store writes per book (position, trailing alert, snapshot); after (outbox)
10,786 books/s on the book path, 2.0 writes per book (the snapshots coalesced), the writes
drained by the outbox 4.5 s after the last book.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthpilot import messages as m  # noqa: E402
from depthpilot.bus import connect_bus  # noqa: E402
from depthpilot.bus.memory import MemoryBroker  # noqa: E402
from depthpilot.settings import load_settings  # noqa: E402
from depthpilot.store import Store  # noqa: E402
from trader.engine import TradingEngine  # noqa: E402
from trader.service import TraderService  # noqa: E402
from trader.settings_map import trader_config  # noqa: E402
from trader.venues import paper_instrument  # noqa: E402


def _book(px: float) -> m.BookSnapshot:
    ts = time.time_ns()
    bids = np.array([[px - 0.05 - 0.1 * i, 5.0] for i in range(25)])
    asks = np.array([[px + 0.05 + 0.1 * i, 5.0] for i in range(25)])
    return m.BookSnapshot(exchange="binance", symbol="BTCUSDT", ts_exchange=ts, ts_recv=ts, seq=1, bids=bids, asks=asks)


def _signal(direction: str) -> m.Signal:
    ts = time.time_ns()
    probs = [0.8, 0.1, 0.1] if direction == "down" else [0.1, 0.1, 0.8]
    return m.Signal(
        exchange="binance",
        symbol="BTCUSDT",
        ts=ts,
        model_id="bench",
        classes=["down", "flat", "up"],
        probs=probs,
        score=probs[2] - probs[0],
        expires_at=ts + 10**10,
    )


def _pct(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def service_latency(rounds: int) -> list[float]:
    os.environ["DEPTHPILOT_ENV_FILE"] = ""
    name = uuid.uuid4().hex
    MemoryBroker.reset(name)
    url = f"memory://{name}"
    s = load_settings(amqp_url=url, mongo_url=f"mongomock://{name}", trader_autostart=["BTCUSDT"])
    store = Store.connect(s.mongo_url, "bench")
    svc_bus, bus = connect_bus(url, "trader").start(), connect_bus(url, "bench").start()
    svc = TraderService(s, svc_bus, store).start()
    created: dict[str, int] = {}
    lat: list[float] = []
    got = threading.Event()

    def on_state(msg: m.Message, _d) -> None:
        if isinstance(msg, m.OrderIntent) and msg.signal_id in created:
            lat.append((time.time_ns() - created[msg.signal_id]) / 1e3)
            got.set()

    bus.subscribe("api.state", on_state)
    try:
        for i in range(rounds):
            bus.publish(_book(60000.0))
            time.sleep(0.002)
            direction = "up" if i % 2 == 0 else "down"
            got.clear()
            for _ in range(2):  # K = 2 agreeing readings
                sig = _signal(direction)
                created[sig.id] = sig.trace["created"]
                bus.publish(sig)
            got.wait(2.0)
            bus.publish(_book(60000.0))  # fills the order on paper
            time.sleep(0.01)
    finally:
        svc.stop()
        svc_bus.close()
        bus.close()
    return lat


def engine_latency(rounds: int) -> list[float]:
    s = load_settings(amqp_url="memory://", mongo_url="mongomock://")
    eng = TradingEngine(trader_config(s), {"BTCUSDT": paper_instrument("binance", "BTCUSDT")})
    eng.start("BTCUSDT")
    from trader.domain import FillReport, OrderRequest

    lat: list[float] = []
    for i in range(rounds):
        eng.on_book(_book(60000.0))
        direction = "up" if i % 2 == 0 else "down"
        for _ in range(2):
            t0 = time.perf_counter_ns()
            acts = eng.on_signal(_signal(direction))
            dt = (time.perf_counter_ns() - t0) / 1e3
            reqs = [a for a in acts if isinstance(a, OrderRequest)]
            if reqs:
                lat.append(dt)
            for r in reqs:  # fill at the touch so the engine moves on
                px = 60000.05 if r.side == "buy" else 59999.95
                from decimal import Decimal

                eng.on_events(
                    [
                        FillReport(
                            r.client_order_id,
                            r.exchange,
                            r.symbol,
                            r.side,
                            r.qty,
                            Decimal(str(px)),
                            Decimal(0),
                            fill_id=f"f{i}{r.client_order_id}",
                            ts_ns=time.time_ns(),
                        )
                    ]
                )
    return lat


class _SlowStore:
    """A mongomock Store whose every write takes ``delay_s`` (a slow MongoDB)."""

    WRITES = frozenset({"upsert_order", "insert_fill", "upsert_position", "insert", "record_closed_trade", "set_state"})

    def __init__(self, store: Store, delay_s: float) -> None:
        self.store, self.delay_s, self.writes = store, delay_s, 0

    def __getattr__(self, name: str):
        attr = getattr(self.store, name)
        if name not in self.WRITES:
            return attr

        def write(*a, **kw):
            time.sleep(self.delay_s)
            self.writes += 1
            return attr(*a, **kw)

        return write


class _QuietVenue:
    """An execution client that never trades by itself (fills are fed in by the bench)."""

    exchange = "binance"

    def poll_events(self):
        return []

    def positions(self, symbols):
        return []

    def lookup(self, symbol, cid):
        return None

    def open_orders(self):
        return []

    def set_stop(self, symbol, price):
        return None

    def submit(self, req):
        raise RuntimeError("the bench sends no orders")


def book_path_rate(n_books: int, store_ms: float) -> tuple[float, float, float]:
    """(books/s on the book path, store writes per book, seconds to drain the writes after)."""
    from decimal import Decimal

    from trader.domain import FillReport
    from trader.runtime import TraderRuntime

    s = load_settings(amqp_url="memory://", mongo_url="mongomock://")
    eng = TradingEngine(trader_config(s), {"BTCUSDT": paper_instrument("binance", "BTCUSDT")})
    store = _SlowStore(Store.connect(f"mongomock://{uuid.uuid4().hex}", "bench"), store_ms / 1000)

    class _NullBus:
        def publish(self, msg):
            return None

    rt = TraderRuntime(eng, _QuietVenue(), bus=_NullBus(), store=store, mode="paper", exchange="binance")
    rt.start()

    def fill(i: int) -> FillReport:
        qty = Decimal("0.001")
        return FillReport("manual", "binance", "BTCUSDT", "buy", qty, Decimal("60000"), Decimal("0.01"), f"b{i}")

    for _ in range(3):
        rt.on_book(_book(60000.0))
    rt.on_exec_events([fill(0)])  # a long position, with a stop
    w0 = store.writes
    t0 = time.perf_counter()
    for i in range(n_books):
        rt.on_book(_book(60200.0 + i))  # a new high on every book: the trailing stop moves
        if i % 20 == 19:
            rt.on_exec_events([fill(i + 1)])
    took = time.perf_counter() - t0
    t1 = time.perf_counter()
    rt.stop()
    drained = time.perf_counter() - t1
    return n_books / took, (store.writes - w0) / n_books, drained


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--books", type=int, default=400)
    ap.add_argument("--store-ms", type=float, default=5.0)
    args = ap.parse_args()
    rate, per_book, drained = book_path_rate(args.books, args.store_ms)
    print(
        f"book path, trailing, store writes of {args.store_ms:g} ms: {rate:8.0f} books/s  "
        f"({per_book:.1f} store writes per book, drained {drained:.2f} s after the last book)"
    )
    base = engine_latency(args.rounds)
    svc = service_latency(args.rounds)
    b50, b99 = _pct(base)
    s50, s99 = _pct(svc)
    print(f"pure engine: signal -> order decision  n={len(base)}  p50 {b50:8.1f} us  p99 {b99:8.1f} us")
    print(
        f"service, in-memory bus: signal published -> OrderIntent received  n={len(svc)}  "
        f"p50 {s50:8.1f} us  p99 {s99:8.1f} us"
    )
    print(f"ratio (service / pure engine): p50 {s50 / b50:.1f}x")


if __name__ == "__main__":
    main()
