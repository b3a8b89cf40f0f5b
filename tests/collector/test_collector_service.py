"""The collector service publishes replayed snapshots through the real RabbitMQ, samples them
into the store, and a restart continues without duplicates (issue: collector, must show 6)."""

from __future__ import annotations

import threading
import time
from collections import Counter


from collector.feed import FeedProcessor
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import MARKET_EXCHANGE, STATE_EXCHANGE, DeliveryClass, QueueDef

SPOT_FILE = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"  # the file with the REST snapshot line


def _run(bus_url, settings, store, stop_after_s=None):
    from collector.service import CollectorService

    bus = connect_bus(bus_url, "collector").start()
    svc = CollectorService(settings, bus, store)
    svc.start()
    if stop_after_s is None:
        assert svc.finished.wait(120), "replay did not finish"
    else:
        time.sleep(stop_after_s)
        assert not svc.finished.is_set(), "replay too short to test a restart"
    svc.stop()
    bus.close()
    return svc


def test_replay_publish_store_and_restart_without_duplicates(bus_url, uid, data_dir):
    path = data_dir / SPOT_FILE
    settings = load_settings(
        AMQP_URL=bus_url,
        COLLECTOR_SOURCE="replay",
        REPLAY_PATHS=str(path),
        REPLAY_SPEED="60",
        SNAPSHOT_RATE_HZ="5",
        SNAPSHOT_STORE_INTERVAL_S="1",
        BOOK_DEPTH="50",
    )
    store = Store.connect(f"mongomock://{uid}", f"c_{uid}", snapshot_ttl_s=None)
    books = QueueDef(
        f"t.coll.books.{uid}",
        MARKET_EXCHANGE,
        ("book.binance.BTCUSDT", "trade.binance.BTCUSDT"),
        DeliveryClass.MARKET,
        max_length=1_000_000,
    )
    risk = QueueDef(f"t.coll.risk.{uid}", STATE_EXCHANGE, ("risk.*.book_*",), DeliveryClass.STATE, delivery_limit=5)
    watcher = connect_bus(bus_url, "watch").start()
    seen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    snaps: list[m.BookSnapshot] = []
    events: list[m.RiskEvent] = []
    lock = threading.Lock()

    def on_msg(msg, d):
        with lock:
            seen[msg.id] += 1
            kinds[msg.type_name] += 1
            if isinstance(msg, m.BookSnapshot):
                snaps.append(msg)

    try:
        watcher.subscribe(books, on_msg, dedup=False)  # count raw deliveries: duplicates must not exist at all
        watcher.subscribe(risk, lambda msg, d: events.append(msg))
        time.sleep(0.5)
        first = _run(bus_url, settings, store, stop_after_s=2.0)
        n_first = kinds["book_snapshot"]
        stored_first = store.count("snapshots", "binance", "BTCUSDT")
        checkpoint = store.get_state(first.replay_key)
        assert n_first > 10 and stored_first > 0 and checkpoint
        second = _run(bus_url, settings, store)
        time.sleep(1.0)
        with lock:
            assert max(seen.values()) == 1, "a message was published twice across the restart"
            ts = [s.ts_recv for s in snaps]
        assert ts == sorted(ts), "the restarted collector went back in time"
        assert kinds["book_snapshot"] > n_first and kinds["trade"] > 100
        # every snapshot is a valid, uncrossed 50-level book at <= 5 Hz per symbol
        assert all(s.valid and s.best_bid() < s.best_ask() and len(s.bids) == 50 for s in snaps)
        span_s = (ts[-1] - ts[0]) / 1e9
        assert len(snaps) <= 5 * span_s + 10
        # the store holds one sample per second of the recording, no duplicates
        stored = list(store.iter_messages("snapshots", "binance", "BTCUSDT"))
        assert len({s.id for s in stored}) == len(stored)
        assert 0.5 * span_s <= len(stored) <= span_s + 5
        assert store.count("trades", "binance", "BTCUSDT") == kinds["trade"]
        assert second.processor.health.feed("binance", "BTCUSDT").gaps == 0
        assert events == []  # a clean recording raises no book-health event
    finally:
        watcher.delete_queue(books) if hasattr(watcher, "delete_queue") else None
        watcher.delete_queue(risk) if hasattr(watcher, "delete_queue") else None
        watcher.close()


def test_feed_processor_flags_invalid_books_and_staleness():
    import numpy as np

    fp = FeedProcessor(rate_hz=1.0, store_interval_s=10.0, max_staleness_s=2.0)
    bids = np.array([[100.0, 1.0]])
    asks = np.array([[101.0, 1.0]])
    mk = lambda ts, valid=True, reason="", b=bids: m.BookSnapshot(  # noqa: E731
        exchange="x", symbol="Y", ts_exchange=ts, ts_recv=ts, seq=ts, bids=b, asks=asks, valid=valid, reason=reason
    )
    out = fp.on_snapshot(mk(1_000_000_000))
    assert len(out.publish) == 1 and len(out.store_snapshots) == 1 and not out.events
    assert fp.on_snapshot(mk(1_100_000_000)).publish == []  # throttled, kept pending
    out = fp.tick(2_000_000_001, check_stale=False)
    assert [s.ts_recv for s in out.publish] == [1_100_000_000]  # the newest state goes out in its slot
    out = fp.on_snapshot(mk(2_100_000_000, False, "gap: U=5 expected 4"))
    assert out.publish and out.events[0].kind == "book_gap"  # validity change bypasses the throttle
    crossed = np.array([[102.0, 1.0]])
    out = fp.on_snapshot(mk(2_200_000_000, True, "", crossed))
    assert out.events[0].kind == "book_recovered"
    out = fp.tick(10_000_000_000)
    assert out.events and out.events[0].kind == "feed_stale" and not out.publish[0].valid
    assert "stale" in out.publish[0].reason
    ids = {s.id for s in out.publish}
    assert all(i.startswith("x:Y:b:") for i in ids)
