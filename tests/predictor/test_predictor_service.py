"""The predictor service, fed replayed feature vectors over the real RabbitMQ (and the
in-memory bus), emits signals whose probabilities equal offline batch inference on the same
windows; a spec mismatch is refused; reload_model swaps without dropping messages."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.paths import models_dir
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
from predictor.artifact import load_artifact
from predictor.inference import Predictor
from predictor.sources import from_books

N = 150
MODEL = "book-default"


@pytest.fixture(scope="module")
def book_features(data_dir):
    from features.spec import FeatureSpec

    art = load_artifact(models_dir() / MODEL)
    spec = FeatureSpec.from_dict(art.manifest.features["spec"])
    path = data_dir / "binance-spot-btcusdt-2024-08-08-l2diff" / "derived_book_snapshot_25.csv.gz"
    return art, from_books(path, spec, kind="snapshot")


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()


def test_signals_equal_offline_batch_inference(bus_url, uid, book_features):
    from predictor.service import PredictorService

    art, data = book_features
    symbol = f"T{uid}"
    settings = load_settings(AMQP_URL=bus_url, PREDICTOR_MODEL=MODEL, PIPELINE_CLOCK="replay")  # 2024 vectors
    store = Store.connect(f"mongomock://{uid}", f"p_{uid}", snapshot_ttl_s=None)
    svc_bus = connect_bus(bus_url, "predictor").start()
    svc_bus.purge("predictor.features")  # the broker is shared: drop vectors other tests left in the queue
    svc = PredictorService(settings, svc_bus, store)
    svc.start()
    out_q = QueueDef(
        f"t.signals.{uid}", MARKET_EXCHANGE, (f"signals.*.{symbol}",), DeliveryClass.MARKET, max_length=100_000
    )
    test_bus = connect_bus(bus_url, "test").start()
    got: list[m.Signal] = []
    lock = threading.Lock()
    try:
        test_bus.subscribe(out_q, lambda msg, d: (lock.acquire(), got.append(msg), lock.release()))
        time.sleep(0.5)
        X, ts, names = data.X[:N], data.ts[:N], data.names
        # vectors carry every feature the engine computes, in another order: the service selects by name
        perm = np.random.default_rng(0).permutation(len(names))
        wrong = m.FeatureVector(
            exchange="binance",
            symbol=symbol,
            ts=int(ts[0]) - 1,
            spec_hash="0" * 16,
            values=X[0][perm],
            names=[names[i] for i in perm],
            interval="",
        )
        test_bus.publish(wrong)
        for i in range(N):
            test_bus.publish(
                m.FeatureVector(
                    exchange="binance",
                    symbol=symbol,
                    ts=int(ts[i]),
                    spec_hash=data.spec_hash,
                    values=X[i][perm],
                    names=[names[j] for j in perm],
                    interval="",
                )
            )
        seq = art.seq_len
        expected_n = N - seq + 1
        assert _wait(lambda: len(got) >= expected_n), f"{len(got)}/{expected_n} signals"
        time.sleep(0.3)
        assert len(got) == expected_n
        offline = Predictor(art)
        Xm = X[:, [names.index(n) for n in art.manifest.feature_names]]  # the model's columns, by name
        windows = np.stack([Xm[i - seq + 1 : i + 1] for i in range(seq - 1, N)])
        expect = offline.predict_windows(windows)
        sigs = sorted(got, key=lambda s: s.ts)
        assert [s.ts for s in sigs] == [int(t) for t in ts[seq - 1 :]]
        np.testing.assert_allclose(np.array([s.probs for s in sigs]), expect, atol=1e-5, rtol=0)
        assert all(s.model_id == art.manifest.model_id and s.classes == art.classes for s in sigs)
        assert all(
            abs(s.score - (s.probs[art.classes.index("up")] - s.probs[art.classes.index("down")])) < 1e-9 for s in sigs
        )
        assert svc.skipped["spec_mismatch"] == 1
        svc.writer.flush()
        assert store.count("signals", symbol=symbol) == expected_n

        # hot reload over the control channel: keeps consuming, nothing lost, and the reloaded model
        # resumes warm (test_predictor_reload.py swaps to a different model under a steady stream)
        reply = test_bus.rpc(m.ControlCommand(target="predictor", command="reload_model", args={"model": MODEL}), 10)
        assert reply.ok and reply.result["model_id"] == art.manifest.model_id
        before = len(got)
        for i in range(N, N + seq + 4):
            test_bus.publish(
                m.FeatureVector(
                    exchange="binance",
                    symbol=symbol,
                    ts=int(data.ts[i]),
                    spec_hash=data.spec_hash,
                    values=data.X[i],
                    names=names,
                    interval="",
                )
            )
        assert _wait(lambda: len(got) == before + seq + 4), f"{len(got) - before}/{seq + 4} after the reload"
        time.sleep(0.3)
        assert len(got) == before + seq + 4
    finally:
        svc.stop()
        if hasattr(test_bus, "delete_queue"):
            test_bus.delete_queue(out_q)
        test_bus.close()
        svc_bus.close()
