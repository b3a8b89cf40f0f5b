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
    settings = load_settings(AMQP_URL=bus_url, FEATURES_SPEC_FILE=str(spec_file), FEATURES_EMIT="snapshot,block",
                             PIPELINE_CLOCK="replay")  # 2024 books: judged by the replay clock
    store = Store.connect(f"mongomock://{uid}", f"t_{uid}", snapshot_ttl_s=None)
    svc_bus = connect_bus(bus_url, "features").start()
    svc_bus.purge("features.book")  # the broker is shared: drop books other tests left in the queue
    svc = FeaturesService(settings, svc_bus, store)
    svc.start()
    out_q = QueueDef(f"t.features.{uid}", MARKET_EXCHANGE, (f"features.*.{symbol}",), DeliveryClass.MARKET,
                     max_length=100_000)
    test_bus = connect_bus(bus_url, "test").start()
    got: list[m.FeatureVector] = []
    lock = threading.Lock()

    def collect(msg, d):
        with lock:
            got.append(msg)

    try:
        test_bus.subscribe(out_q, collect)
        time.sleep(0.5)
        bad = m.BookSnapshot(exchange="binance", symbol=symbol, ts_exchange=int(ts[0]) - 10, ts_recv=0, seq=0,
                             bids=bids[0], asks=asks[0], valid=False, reason="crossed")
        test_bus.publish(bad)
        for i in range(N):
            test_bus.publish(m.BookSnapshot(exchange="binance", symbol=symbol, ts_exchange=int(ts[i]),
                                            ts_recv=int(ts[i]), seq=i + 1, bids=bids[i], asks=asks[i], depth=25))
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
        assert len(snaps) == N, "every valid snapshot gives one vector; the invalid one none"
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
    settings = load_settings(AMQP_URL=url, FEATURES_SPEC_FILE=str(spec_file), FEATURES_EMIT="block",
                             PIPELINE_CLOCK="replay")
    svc_bus = connect_bus(url, "features").start()
    svc = FeaturesService(settings, svc_bus, None).start()
    test_bus = connect_bus(url, "test").start()
    got: list[m.FeatureVector] = []
    try:
        test_bus.subscribe(QueueDef(f"t.quiet.{uid}", MARKET_EXCHANGE, ("features.*.Q",), DeliveryClass.MARKET,
                                    max_length=1000), lambda msg, d: got.append(msg))
        for i in range(3):  # three snapshots inside one second: the block stays open
            test_bus.publish(m.BookSnapshot(exchange="binance", symbol="Q", ts_exchange=int(ts[0]) + i * 100_000_000,
                                            ts_recv=0, seq=i, bids=bids[i], asks=asks[i]))
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
