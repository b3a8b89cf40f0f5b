"""Collector service health: looped replays keep every trade, a feed that cannot connect is
retried and past the limit makes the service unhealthy, bad recordings fail start-up or mark
the service unhealthy with one line, and an unknown exchange fails start-up."""

from __future__ import annotations

import gzip
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from collector.replay import BinanceRecordingReplay
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.bus.memory import MemoryBroker
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
from tests.collector.venue_data import SPOT, raw_files


def _clip(tmp_path: Path, n: int = 3000) -> Path:
    f = tmp_path / "clip"
    with gzip.open(raw_files(SPOT)[0], "rb") as fin, gzip.open(f, "wb", compresslevel=1) as fout:
        for _, line in zip(range(n), fin):
            fout.write(line)
    return f


def _service(uid: str, **env: str):
    from collector.service import CollectorService

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    settings = load_settings(AMQP_URL=url, **env)
    store = Store.connect(f"mongomock://{uid}", f"c_{uid}", snapshot_ttl_s=None)
    bus = connect_bus(url, "collector").start()
    return CollectorService(settings, bus, store), bus, url


def _wait(cond, timeout: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_looped_replay_gives_each_loop_its_own_ids_and_keeps_every_trade(tmp_path, uid):
    clip = _clip(tmp_path)
    per_loop = sum(isinstance(x, m.Trade) for x in BinanceRecordingReplay(clip))
    assert per_loop > 50
    svc, bus, url = _service(
        uid,
        COLLECTOR_SOURCE="replay",
        REPLAY_PATHS=str(clip),
        REPLAY_SPEED="0",
        REPLAY_LOOP="true",
        SNAPSHOT_RATE_HZ="1000",
    )
    watcher = connect_bus(url, "watch").start()
    trades: list[m.Trade] = []
    books: list[m.BookSnapshot] = []
    lock = threading.Lock()

    def on_msg(msg, _d):
        with lock:
            (trades if isinstance(msg, m.Trade) else books).append(msg)

    q = QueueDef(f"t.loop.{uid}", MARKET_EXCHANGE, ("trade.#", "book.#"), DeliveryClass.MARKET, max_length=10_000_000)
    watcher.subscribe(q, on_msg)  # dedup by message id, as every consumer does
    try:
        svc.start()
        assert _wait(lambda: len(trades) >= 3 * per_loop, 60), f"{len(trades)} trades after 60 s"
        # staleness on the replay clock (not wall clock vs 2024 event times); no fake latency
        (feed,) = svc.handle_command(m.ControlCommand(target="collector", command="status"))["feeds"]
        assert 0 <= feed["staleness_s"] < 5 and feed["last_latency_ms"] is None, feed
        hb = svc.heartbeat().stats
        assert 0 <= hb["binance.BTCUSDT.staleness_s"] < 5 and "binance.BTCUSDT.last_latency_ms" not in hb
    finally:
        svc.stop()
        bus.close()
        watcher.close()
    with lock:
        ids = [t.id for t in trades]
        loops = {t.trade_id.partition("~")[2] or "0" for t in trades}
        book_ids = [b.id for b in books]
    assert len(ids) == len(set(ids)) and len(trades) >= 3 * per_loop  # nothing dropped as a duplicate
    assert {"0", "1", "2"} <= loops
    assert len(book_ids) == len(set(book_ids)) and len(books) > 3 * 10
    ts = [t.ts_recv for t in trades]
    assert ts == sorted(ts)  # later loops move on in time


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_feed_whose_connect_fails_is_retried_and_past_the_limit_the_service_is_unhealthy(uid):
    port = _closed_port()
    svc, bus, _ = _service(
        uid,
        COLLECTOR_SOURCE="live",
        DEPTHPILOT_EXCHANGES="bybit",
        DEPTHPILOT_SYMBOLS="BTCUSDT",
        BYBIT_WS_URL=f"ws://127.0.0.1:{port}/v5/public/linear",
        COLLECTOR_RECONNECT_INITIAL_S="0.05",
        COLLECTOR_FEED_DOWN_LIMIT_S="1.5",
    )
    name = "bybit book+trades BTCUSDT"
    down = re.compile(
        r"^feed bybit book\+trades BTCUSDT down: no usable data for \d+s \(\d+ failures; last: book\+trades: .+\)$"
    )
    try:
        svc.start()
        # the live thread registers the feed: on a loaded machine that may come after start() returns
        assert _wait(lambda: name in svc.supervision.feeds, 30), svc.supervision.feeds
        feed = svc.supervision.feeds[name]
        assert _wait(lambda: feed.restarts >= 2, 30), feed
        # within the limit retrying is not yet a problem: judged at an instant inside the limit (the
        # wall clock of a loaded machine may be past it by the time this line runs)
        assert svc.supervision.problems(feed.started_ns + 1_000_000_000) == []
        assert _wait(lambda: svc.status == "degraded", 15), (svc.status, svc.problems(), feed)
        problems = svc.problems()
        assert len(problems) == 1 and down.match(problems[0]), problems
        hb = svc.heartbeat()
        assert hb.status == "degraded" and hb.stats["feed_restarts"] >= 2 and hb.stats["problems"] == 1, hb
        # each failure reported (the report follows the failure count, from the feed's thread)
        health = svc.processor.health.feed("bybit", "BTCUSDT")
        assert _wait(lambda: health.reconnects >= 2, 10), health
        reply = svc.handle_command(m.ControlCommand(target="collector", command="status"))
        # the same one problem; its seconds and failure count move on while the feed keeps retrying
        assert reply is not None and len(reply["problems"]) == 1 and down.match(reply["problems"][0]), reply
    finally:
        svc.stop()
        bus.close()


def test_unknown_exchange_fails_start_up_with_one_line(uid):
    svc, bus, _ = _service(uid, COLLECTOR_SOURCE="live", DEPTHPILOT_EXCHANGES="nosuchex")
    try:
        with pytest.raises(ValueError, match=r"^unknown exchange 'nosuchex' \(DEPTHPILOT_EXCHANGES\); known: .*bybit"):
            svc.start()
    finally:
        svc.stop()
        bus.close()


def test_bad_recordings_fail_start_up_or_make_the_replay_unhealthy(tmp_path, uid):
    from tests.collector.test_venue_data import EXPECT, _bad_files

    for kind, f in _bad_files(tmp_path).items():
        svc, bus, _ = _service(f"{uid}{kind}", COLLECTOR_SOURCE="replay", REPLAY_PATHS=str(f), REPLAY_SPEED="0")
        try:
            try:
                svc.start()
            except ValueError as exc:  # found while opening the files: start-up fails with one line
                assert kind in ("random", "empty"), (kind, exc)
                assert "\n" not in str(exc)
                continue
            # found mid-file: the replay stops, the service says why and is unhealthy
            assert kind in ("corrupt", "garbage")
            assert svc.finished.wait(30)
            svc._update_status()
            (problem,) = svc.problems()
            assert problem.startswith("replay failed: ") and re.search(EXPECT[kind], problem), problem
            assert svc.heartbeat().status == "degraded"
        finally:
            svc.stop()
            bus.close()


def test_replay_checkpoint_advances_only_after_the_bus_confirmed(tmp_path, uid):
    """bus.flush() not confirming (a broker that does not ack) must hold the checkpoint back:
    a restart then replays what might not have reached the broker."""
    from collector.service import CollectorService
    from depthpilot.bus.memory import MemoryBus

    clip = _clip(tmp_path, 1500)

    class UnconfirmedBus(MemoryBus):
        confirm = False

        def flush(self, timeout: float = 10.0) -> bool:
            return self.confirm

    for confirm in (False, True):
        MemoryBroker.reset(f"{uid}{confirm}")
        url = f"memory://{uid}{confirm}"
        settings = load_settings(AMQP_URL=url, COLLECTOR_SOURCE="replay", REPLAY_PATHS=str(clip), REPLAY_SPEED="0")
        store = Store.connect(f"mongomock://{uid}{confirm}", f"c_{uid}", snapshot_ttl_s=None)
        bus = UnconfirmedBus(url, "collector")
        bus.confirm = confirm
        bus.start()
        svc = CollectorService(settings, bus, store)
        try:
            svc.start()
            assert svc.finished.wait(30)
            state = store.get_state(svc.replay_key)
            if confirm:
                assert state == {"ts_recv": svc.last_ts} and svc.checkpoint_waits == 0
            else:
                assert state is None and svc.checkpoint_waits >= 1
                assert store.count("trades", "binance", "BTCUSDT") > 0  # the data itself was stored
        finally:
            svc.stop()
            bus.close()
