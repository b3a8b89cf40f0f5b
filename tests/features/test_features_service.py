"""The features service turns replayed real snapshots into feature vectors over the real
RabbitMQ (and the in-memory bus), equal to the offline batch engine on the same books."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
from features.aggregate import aggregate_blocks
from features.engine import batch_features
from features.spec import FeatureSpec, aggregate_names, feature_names

N = 400


def test_service_emits_vectors_equal_to_batch(bus_url, uid, spot25, tmp_path):
    from features.service import FeaturesService

    ts, bids, asks = spot25
    ts, bids, asks = ts[:N], bids[:N], asks[:N]
    spec = FeatureSpec(depths=(5, 10, 20, 25), interval_s=1.0)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    symbol = f"T{uid}"
    settings = load_settings(
        AMQP_URL=bus_url, FEATURES_SPEC_FILE=str(spec_file), FEATURES_EMIT="snapshot,block", PIPELINE_CLOCK="replay"
    )  # 2024 books: judged by the replay clock
    store = Store.connect(f"mongomock://{uid}", f"t_{uid}", snapshot_ttl_s=None)
    svc_bus = connect_bus(bus_url, "features").start()
    # the vhost is shared by the session: drop what earlier tests left in BOTH input queues. The
    # service reads books and trades into one replay clock, so a single later trade left behind
    # (e.g. redelivered because its consumer stopped before the ack) makes every book here "old"
    for q in ("features.book", "features.trades"):
        svc_bus.purge(q)
    svc = FeaturesService(settings, svc_bus, store)
    svc.start()
    out_q = QueueDef(
        f"t.features.{uid}", MARKET_EXCHANGE, (f"features.*.{symbol}",), DeliveryClass.MARKET, max_length=100_000
    )
    test_bus = connect_bus(bus_url, "test").start()
    got: list[m.FeatureVector] = []
    lock = threading.Lock()

    def collect(msg, d):
        with lock:
            got.append(msg)

    try:
        test_bus.subscribe(out_q, collect)
        time.sleep(0.5)
        bad = m.BookSnapshot(
            exchange="binance",
            symbol=symbol,
            ts_exchange=int(ts[0]) - 10,
            ts_recv=0,
            seq=0,
            bids=bids[0],
            asks=asks[0],
            valid=False,
            reason="crossed",
        )
        test_bus.publish(bad)
        for i in range(N):
            test_bus.publish(
                m.BookSnapshot(
                    exchange="binance",
                    symbol=symbol,
                    ts_exchange=int(ts[i]),
                    ts_recv=int(ts[i]),
                    seq=i + 1,
                    bids=bids[i],
                    asks=asks[i],
                    depth=25,
                )
            )
            if i % 100 == 99:
                time.sleep(0.05)  # stay under the market queue bound
        X = batch_features(spec, ts, (bids, asks))
        bts, A = aggregate_blocks(spec, ts, X)
        n_blocks_closed = len(bts) - 1  # the last block is still open in the streaming service
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                n_snap = sum(1 for v in got if v.interval == "")
                n_block = sum(1 for v in got if v.interval == "1s")
            if n_snap >= N and n_block >= n_blocks_closed:
                break
            time.sleep(0.05)
        snaps = sorted((v for v in got if v.interval == ""), key=lambda v: v.ts)
        blocks = sorted((v for v in got if v.interval == "1s"), key=lambda v: v.ts)
        assert len(snaps) == N, (
            f"every valid snapshot gives one vector, the invalid one none: {len(snaps)}/{N} vectors; "
            f"features {svc.stats()}, its bus {svc_bus.stats.as_dict()}, test bus {test_bus.stats.as_dict()}"
        )
        # the last block closes when the next snapshot arrives or, quiet market, by elapsed time
        assert len(blocks) in (n_blocks_closed, n_blocks_closed + 1)
        n_b = len(blocks)
        assert all(v.spec_hash == spec.hash for v in got)
        assert all("book.created" in v.trace and "book.published" in v.trace for v in snaps)
        assert snaps[0].names == feature_names(spec) and blocks[0].names == aggregate_names(spec)
        np.testing.assert_allclose(np.stack([v.values for v in snaps]), X, rtol=1e-9, atol=0, equal_nan=True)
        np.testing.assert_array_equal([v.ts for v in blocks], bts[:n_b])
        np.testing.assert_allclose(np.stack([v.values for v in blocks]), A[:n_b], rtol=1e-9, equal_nan=True)
        st = svc.stats()
        assert st["rejected.crossed"] == 1  # the upstream-invalid snapshot, counted with its reason
        svc.writer.flush()
        assert store.count("features", symbol=symbol) == len(got)
    finally:
        svc.stop()
        if hasattr(test_bus, "delete_queue"):
            test_bus.delete_queue(out_q)
        test_bus.close()
        svc_bus.close()


def test_quiet_market_closes_the_open_block(uid, spot25, tmp_path):
    """No snapshot after the last one: the open 1 s block still goes out once its end has
    passed in (estimated) event time."""
    from depthpilot.bus.memory import MemoryBroker
    from features.service import FeaturesService

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    ts, bids, asks = spot25
    spec = FeatureSpec(depths=(5, 10, 20, 25), interval_s=1.0)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    settings = load_settings(
        AMQP_URL=url, FEATURES_SPEC_FILE=str(spec_file), FEATURES_EMIT="block", PIPELINE_CLOCK="replay"
    )
    svc_bus = connect_bus(url, "features").start()
    svc = FeaturesService(settings, svc_bus, None).start()
    test_bus = connect_bus(url, "test").start()
    got: list[m.FeatureVector] = []
    try:
        test_bus.subscribe(
            QueueDef(f"t.quiet.{uid}", MARKET_EXCHANGE, ("features.*.Q",), DeliveryClass.MARKET, max_length=1000),
            lambda msg, d: got.append(msg),
        )
        for i in range(3):  # three snapshots inside one second: the block stays open
            test_bus.publish(
                m.BookSnapshot(
                    exchange="binance",
                    symbol="Q",
                    ts_exchange=int(ts[0]) + i * 100_000_000,
                    ts_recv=0,
                    seq=i,
                    bids=bids[i],
                    asks=asks[i],
                )
            )
        time.sleep(0.3)
        assert got == []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) == 1 and got[0].interval == "1s" and got[0].values[0] == 3.0  # n_snapshots
        assert got[0].ts == (int(ts[0]) // 1_000_000_000 + 1) * 1_000_000_000 - 1
    finally:
        svc.stop()
        test_bus.close()
        svc_bus.close()


def test_future_books_dead_letter_old_books_drop_resets_and_slow_feed_in_status(uid, spot25, tmp_path, caplog):
    """Live (wall clock): a book from the future goes to features.book.dlq with the reason and
    touches no state; a book older than the limit is dropped and counted; a resync resets the
    state with a log line; a feed slower than the sample clock degrades the status."""
    import logging

    from depthpilot.bus.memory import MemoryBroker
    from features.service import FeaturesService

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    _ts, bids, asks = spot25
    spec = FeatureSpec(depths=(5, 10), interval_s=1.0, sample_interval_s=0.1, max_gap_s=5.0)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    settings = load_settings(
        AMQP_URL=url,
        FEATURES_SPEC_FILE=str(spec_file),
        FEATURES_EMIT="snapshot",
        PIPELINE_CLOCK="wall",
        INPUT_MAX_AGE_S="30",
    )
    svc_bus = connect_bus(url, "features").start()
    svc = FeaturesService(settings, svc_bus, None).start()
    test_bus = connect_bus(url, "test").start()
    got: list[m.FeatureVector] = []
    now = time.time_ns()

    def book(t, i, **kw):
        return m.BookSnapshot(
            exchange="binance", symbol="L", ts_exchange=int(t), ts_recv=int(t), seq=i, bids=bids[i], asks=asks[i], **kw
        )

    try:
        test_bus.subscribe(
            QueueDef(f"t.live.{uid}", MARKET_EXCHANGE, ("features.*.L",), DeliveryClass.MARKET, max_length=10_000),
            lambda msg, d: got.append(msg),
        )
        caplog.set_level(logging.INFO, logger="depthpilot.features")
        fut = book(now + 365 * 86400 * 10**9, 0)
        test_bus.publish(fut)
        test_bus.publish(book(now - 66 * 10**9, 1))  # after a stall: 66 s old
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and svc.stats()["dropped_old"] < 1:
            time.sleep(0.02)
        dead = test_bus.get_dead_letters("features.book")
        assert len(dead) == 1 and m.decode(dead[0][0]).id == fut.id
        assert dead[0][1]["x-dlq-reason"] == "handler_error" and "ahead of the wall clock" in dead[0][1]["x-dlq-error"]
        st = svc.stats()
        assert st["future"] == 1 and st["dropped_old"] == 1 and st["symbols"] == 0  # no state was created
        # a slow feed (one book per second on a 100 ms clock) with a resync in the middle
        t0 = now - 27 * 10**9
        for i in range(28):
            test_bus.publish(book(t0 + i * 10**9, 2 + i, valid=(i != 15), reason="" if i != 15 else "resyncing"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not svc.problems():
            time.sleep(0.02)
        assert svc.stats()["dropped_old"] == 1
        probs = svc.problems()
        assert len(probs) == 1 and "too slow for the 0.1 s sample clock" in probs[0]
        assert svc.heartbeat().status == "degraded"
        reply = test_bus.rpc(m.ControlCommand(target="features", command="status"), 5)
        assert reply.ok and reply.result["status"] == "degraded" and reply.result["problems"] == probs
        stats = reply.result["stats"]
        assert stats["resets"] == 1 and stats["resets.resync"] == 1 and stats["future"] == 1
        assert any("feature state reset (resync: resyncing)" in r.getMessage() for r in caplog.records)
        assert got and all(v.ts % 100_000_000 == 0 for v in got)
    finally:
        svc.stop()
        test_bus.close()
        svc_bus.close()
