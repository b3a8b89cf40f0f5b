"""Hot reload to a DIFFERENT model while feature vectors keep streaming in.

Two artifacts on the same feature spec: the bundled ``book-default`` (seq_len 20) and a tiny model
trained here (seq_len 8, other weights). A publisher thread feeds real order-book feature vectors
at a steady rate; half-way through, ``reload_model`` swaps the service to the tiny model. Every
input vector after the first warm-up yields exactly one signal (none dropped, none twice, checked
by ts), the model id switches exactly once, and every signal equals the offline prediction of the
model it names on the window ending at its vector.
"""

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

OLD = "book-default"
N = 360  # vectors in the stream
RELOAD_AT = 180  # reload once this many were published
PERIOD_S = 0.004


@pytest.fixture(scope="module")
def two_models(data_dir, tmp_path_factory):
    from features.spec import FeatureSpec
    from predictor.labels import LabelSpec, Prices
    from predictor.train import TrainConfig, train

    old = load_artifact(models_dir() / OLD)
    spec = FeatureSpec.from_dict(old.manifest.features["spec"])
    path = data_dir / "binance-spot-btcusdt-2024-08-08-l2diff" / "derived_book_snapshot_25.csv.gz"
    data = from_books(path, spec, kind="snapshot")
    d = data.select(old.manifest.feature_names)
    assert d.spec_hash == old.manifest.spec_hash
    # the tiny model trains on the first 1,500 rows; the stream replays later rows
    sl = slice(0, 1500)
    cfg = TrainConfig(
        label=LabelSpec("updown", horizon=20, threshold=0.00002),
        seq_len=8,
        hidden=8,
        max_epochs=1,
        n_folds=2,
        seed=1,
        model_name="tiny-reload",
    )
    out = tmp_path_factory.mktemp("reload") / "tiny-reload"
    new_path = train(cfg, d.X[sl], d.ts[sl], Prices(d.prices.close[sl]), d.names, d.spec_hash, out, features=d.features)
    new = load_artifact(new_path)
    assert new.manifest.model_id != old.manifest.model_id and new.seq_len != old.seq_len
    return old, new, data


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


def test_reload_to_another_model_under_a_steady_stream(bus_url, uid, two_models):
    from predictor.service import PredictorService

    old, new, data = two_models
    symbol = f"R{uid}"
    X, ts, names = data.X[2000 : 2000 + N], data.ts[2000 : 2000 + N], data.names
    settings = load_settings(AMQP_URL=bus_url, PREDICTOR_MODEL=OLD, PIPELINE_CLOCK="replay")  # 2024 vectors
    store = Store.connect(f"mongomock://{uid}", f"r_{uid}", snapshot_ttl_s=None)
    svc_bus = connect_bus(bus_url, "predictor").start()
    svc_bus.purge("predictor.features")  # vectors other tests left in the queue
    svc = PredictorService(settings, svc_bus, store)
    svc.start()
    out_q = QueueDef(
        f"t.signals.{uid}", MARKET_EXCHANGE, (f"signals.*.{symbol}",), DeliveryClass.MARKET, max_length=100_000
    )
    test_bus = connect_bus(bus_url, "test").start()
    pub_bus = connect_bus(bus_url, "feeder").start()
    got: list[m.Signal] = []
    lock = threading.Lock()
    published = [0]
    pub_error: list[BaseException] = []

    def feed():
        try:
            nxt = time.monotonic()
            for i in range(N):
                pub_bus.publish(
                    m.FeatureVector(
                        exchange="binance",
                        symbol=symbol,
                        ts=int(ts[i]),
                        spec_hash=data.spec_hash,
                        values=X[i],
                        names=names,
                        interval="",
                    )
                )
                published[0] = i + 1
                nxt += PERIOD_S
                time.sleep(max(0.0, nxt - time.monotonic()))
        except BaseException as exc:  # surfaced by the test below
            pub_error.append(exc)

    try:
        test_bus.subscribe(out_q, lambda msg, d: (lock.acquire(), got.append(msg), lock.release()))
        time.sleep(0.5)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        assert _wait(lambda: published[0] >= RELOAD_AT, 20)
        reply = test_bus.rpc(
            m.ControlCommand(target="predictor", command="reload_model", args={"model": str(new.path)}), 10
        )
        assert reply.ok, reply.error
        assert reply.result["old_model_id"] == old.manifest.model_id
        assert reply.result["model_id"] == new.manifest.model_id
        assert reply.result["warm_symbols"] == 1  # the stream's symbol resumes warm on the new model
        at_reload = published[0]
        feeder.join(30)
        assert not pub_error, pub_error
        assert at_reload < N - 20, "the stream ended before the reload: nothing to check after it"
        expected = N - old.seq_len + 1  # the first old.seq_len - 1 vectors only warm the first model up
        assert _wait(lambda: len(got) >= expected), f"{len(got)}/{expected} signals"
        time.sleep(0.3)
        sigs = sorted(got, key=lambda s: s.ts)
        # exactly one signal per input vector (after the first warm-up): none dropped, none twice
        assert len(got) == expected
        assert [s.ts for s in sigs] == [int(t) for t in ts[old.seq_len - 1 :]]
        # the model switches exactly once, mid-stream
        ids = [s.model_id for s in sigs]
        k = ids.index(new.manifest.model_id)
        assert set(ids[:k]) == {old.manifest.model_id} and set(ids[k:]) == {new.manifest.model_id}
        assert k >= 20 and len(ids) - k >= 20
        # every signal equals the offline prediction of the model it names, on its own window
        pos = {int(t): i for i, t in enumerate(ts)}
        for art, part in ((old, sigs[:k]), (new, sigs[k:])):
            cols = [names.index(n) for n in art.manifest.feature_names]
            S = art.seq_len
            windows = np.stack([X[pos[s.ts] - S + 1 : pos[s.ts] + 1][:, cols] for s in part])
            expect = Predictor(art).predict_windows(windows)
            np.testing.assert_allclose(np.array([s.probs for s in part]), expect, atol=1e-5, rtol=0)
            assert all(s.classes == art.classes for s in part)
    finally:
        svc.stop()
        if hasattr(test_bus, "delete_queue"):
            test_bus.delete_queue(out_q)
        for b in (pub_bus, test_bus, svc_bus):
            b.close()
