"""Predictor serving on the model's clock: windows and smoothing restart across a gap, future
vectors are dead-lettered (real broker) without touching state, vectors older than the limit
after a stall give no signal, a silent symbol degrades the status, and the manifest records
the clock in seconds (old row manifests converted or refused)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.paths import models_dir
from depthpilot.settings import load_settings
from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
from features.freshness import FutureInput, InputClock
from predictor.artifact import load_artifact
from predictor.clock import ClockError, model_clock, rows_for, training_clock
from predictor.dataset import DatasetError, contiguous_mask
from predictor.inference import Predictor

MODEL = "book-default"
ROW = 100_000_000  # the bundled book model's 100 ms clock


@pytest.fixture(scope="module")
def book(data_dir):
    from features.spec import FeatureSpec
    from predictor.sources import from_books

    art = load_artifact(models_dir() / MODEL)
    spec = FeatureSpec.from_dict(art.manifest.features["spec"])
    path = data_dir / "binance-spot-btcusdt-2024-08-08-l2diff" / "derived_book_snapshot_25.csv.gz"
    d = from_books(path, spec, kind="snapshot")
    X = d.X[:, [d.names.index(n) for n in art.manifest.feature_names]]
    return art, X[:200]


def _wait(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()


# ----------------------------------------------------------------------------- manifest / clock


def test_manifest_records_the_clock_in_seconds_and_old_manifests_convert_or_refuse(tmp_path):
    art = load_artifact(models_dir() / MODEL)
    man = art.manifest
    assert man.clock == {"row_interval_s": 0.1, "seq_len_s": 2.0, "horizon_s": 2.0, "max_gap_s": 0.1}
    c = model_clock(man)
    assert (c.seq_len, c.horizon, c.row_ns, c.source) == (man.seq_len, man.label["horizon"], ROW, "manifest")
    # klines-default predates the clock section: candles of 60 s -> a clear conversion
    kc = model_clock(load_artifact(models_dir() / "klines-default").manifest)
    assert (kc.row_interval_s, kc.seq_len_s, kc.horizon_s, kc.source) == (60.0, 1800.0, 300.0, "converted from rows")
    # an old per-book (event clock) manifest: refused with the reason, also by the service
    old = tmp_path / "old-book"
    shutil.copytree(models_dir() / MODEL, old)
    raw = json.loads((old / "manifest.json").read_text())
    del raw["clock"]
    raw["features"]["spec"].pop("sample_interval_s")
    (old / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ClockError, match="no fixed clock .* retrain it on a sampled clock"):
        model_clock(load_artifact(old).manifest)
    from predictor.service import PredictorService

    bus = connect_bus("memory://oldclock", "predictor").start()
    try:
        with pytest.raises(ClockError):
            PredictorService(load_settings(AMQP_URL="memory://oldclock", PREDICTOR_MODEL=str(old)), bus, None).start()
    finally:
        bus.close()
    assert training_clock({}, 20, 5) == {}
    from features.spec import FeatureSpec

    sampled = {
        "kind": "snapshot",
        "interval": "",
        "spec": FeatureSpec(interval_s=1.0, sample_interval_s=0.25).to_dict(),
    }
    assert training_clock(sampled, 8, 4) == {
        "row_interval_s": 0.25,
        "seq_len_s": 2.0,
        "horizon_s": 1.0,
        "max_gap_s": 0.25,
    }
    assert training_clock({"kind": "block", "interval": "5s"}, 3, 2)["horizon_s"] == 10.0
    assert rows_for(2.0, 0.1) == 20
    with pytest.raises(ClockError, match="whole number"):
        rows_for(0.25, 0.1)


def test_contiguous_mask_keeps_windows_and_labels_on_the_clock():
    ts = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9], dtype=np.int64) * ROW  # row 4 missing (gap)
    ok = contiguous_mask(ts, ROW, seq_len=3, horizon=1)
    # windows [t-2..t] and label t+1 must be consecutive ticks
    assert ok.tolist() == [False, False, True, False, False, False, True, True, False]
    with pytest.raises(DatasetError, match="not on the 0.1 s row clock"):
        contiguous_mask(ts + np.arange(9) * 7, ROW, 3, 1)


# ----------------------------------------------------------------------------- pure predictor


def test_predictor_window_resets_across_gap_refuses_off_clock(book):
    art, X = book
    c = model_clock(art.manifest)
    p = Predictor(art, max_gap_ns=c.max_gap_ns, row_ns=c.row_ns)
    S = p.seq_len
    ts = np.arange(len(X), dtype=np.int64) * ROW + 10**18
    outs = [p.push("s", int(ts[i]), X[i]) for i in range(S)]
    assert outs[-1] is not None and all(o is None for o in outs[:-1])
    assert p.push("s", int(ts[S - 1]) + ROW // 2, X[S]) is None and p.stats["off_clock"] == 1  # refused
    assert p.push("s", int(ts[S]), X[S]) is not None  # window untouched by the refused vector
    # a 1 s hole: the window restarts and needs seq_len fresh rows; no window spans the gap
    t = int(ts[S]) + 10 * ROW
    assert p.push("s", t, X[S + 1]) is None and p.stats["gap_reset"] == 1 and p.last_reset.startswith("gap")
    got = [p.push("s", t + k * ROW, X[S + 1 + k]) for k in range(1, S)]
    assert got[-1] is not None and all(g is None for g in got[:-1])
    ref = Predictor(art).predict_windows(X[None, S + 1 : 2 * S + 1])[0]
    np.testing.assert_allclose(got[-1], ref, atol=1e-5)
    # the features service flagged a reset (resync): the window restarts at this vector
    assert p.push("s", t + S * ROW, X[2 * S + 1], reset=True) is None and p.stats["upstream_reset"] == 1


def test_input_clock_future_and_age():
    now = [10**18]
    c = InputClock("wall", future_tolerance_ns=5 * 10**9, max_age_ns=10 * 10**9, now_fn=lambda: now[0])
    assert c.check(now[0] + 4 * 10**9)
    with pytest.raises(FutureInput, match="ahead of the wall clock"):
        c.check(now[0] + 365 * 86400 * 10**9)
    assert not c.check(now[0] - 11 * 10**9)
    r = InputClock("replay", 5 * 10**9, 10 * 10**9)
    assert r.check(1) and (r.accepted(10**12) is None)
    with pytest.raises(FutureInput, match="replay clock"):
        r.check(10**12 + 6 * 10**9)
    assert not r.check(10**12 - 11 * 10**9) and r.check(10**12 - 9 * 10**9)


def test_replay_clock_judges_age_per_stream_and_the_future_over_all():
    """Books and trades reach the features service on separate queues: in replay, trades that
    ran 30 s ahead must not make the lagging books 'old'; a book older than its own stream's
    latest is; the future is judged against the latest time of any stream."""
    s = 10**9
    r = InputClock("replay", 5 * s, 10 * s)
    t0 = 10**12
    for k in range(31):  # the trades queue ran ahead
        assert r.check(t0 + k * s, "trade", stream="x trade")
        r.accepted(t0 + k * s, "x trade")
    assert r.check(t0 + 1 * s, "book", stream="x book")  # 29 s behind the trades: still fresh
    r.accepted(t0 + 1 * s, "x book")
    assert r.check(t0 + 2 * s, "book", stream="x book")
    r.accepted(t0 + 20 * s, "x book")
    assert not r.check(t0 + 9 * s, "book", stream="x book")  # 11 s behind its own stream
    assert r.age_s(t0 + 9 * s, "x book") == 11.0
    with pytest.raises(FutureInput):  # ahead of all streams (t0 + 30 s) by more than 5 s
        r.check(t0 + 36 * s, "book", stream="x book")
    assert r.check(t0 + 34 * s, "book", stream="x book")
    assert r.check(t0, "new stream", stream="y book")  # a stream's first input is never old


# ----------------------------------------------------------------------------- service


def _vectors(art, X, symbol, base, start=0, n=None, reset_at=()):
    n = len(X) - start if n is None else n
    names = list(art.manifest.feature_names)
    return [
        m.FeatureVector(
            exchange="binance",
            symbol=symbol,
            ts=int(base + (start + i) * ROW),
            spec_hash=art.manifest.spec_hash,
            values=X[start + i],
            names=names,
            interval="",
            reset=(start + i) in reset_at,
        )
        for i in range(n)
    ]


def _live_base(n_rows: int) -> int:
    """Timestamps on the 100 ms clock ending about now (live: judged by the wall clock)."""
    return (time.time_ns() // ROW) * ROW - n_rows * ROW


def _service(url, **env):
    from predictor.service import PredictorService

    svc_bus = connect_bus(url, "predictor").start()
    svc_bus.purge("predictor.features")
    svc = PredictorService(
        load_settings(AMQP_URL=url, PREDICTOR_MODEL=MODEL, PIPELINE_CLOCK="wall", **env), svc_bus, None
    )
    svc.start()
    return svc, svc_bus


def test_stall_smoothing_reset_and_silent_symbol_in_memory(uid, book):
    from depthpilot.bus.memory import MemoryBroker

    art, X = book
    url = f"memory://{uid}"
    MemoryBroker.reset(uid)
    svc, svc_bus = _service(url, PREDICTOR_SILENCE_S="5")
    test_bus = connect_bus(url, "test").start()
    got: list[m.Signal] = []
    try:
        test_bus.subscribe(
            QueueDef(f"t.sig.{uid}", MARKET_EXCHANGE, ("signals.*.*",), DeliveryClass.MARKET, max_length=10_000),
            lambda msg, d: got.append(msg),
        )
        S = art.seq_len
        # 1) after a 60 s stall the queue delivers vectors 60-66 s old: none gives a signal
        stale_base = _live_base(60) - 66 * 10**9
        for v in _vectors(art, X, "STALL", stale_base, n=60):
            test_bus.publish(v)
        assert _wait(lambda: svc.counts["dropped_old"] == 60)
        assert got == [] and svc.stats()["dropped_old"] == 60.0
        assert svc.model.predictor._state.get("binance:STALL") is None  # never touched a window
        # 2) fresh vectors on the clock, then a 1 s hole: window AND smoothing restart
        base = _live_base(3 * S + 20)
        for v in _vectors(art, X, "GAP", base, n=S + 5) + _vectors(
            art, X, "GAP", base + 10 * ROW, start=S + 5, n=S + 2
        ):
            test_bus.publish(v)
        assert _wait(lambda: len(got) == 6 + 3)
        hist = svc.model.smoother._hist["binance:GAP"]
        assert len(hist) == 3  # only the probabilities after the gap (k = 5 would hold 5 otherwise)
        assert svc.counts["resets"] == 1 and svc.model.predictor.stats["gap_reset"] == 1
        sig_ts = [s.ts for s in got]
        assert all(
            t - base >= (2 * S + 4 + 10) * ROW for t in sig_ts[6:]
        )  # first window after the gap ends S-1 rows in
        # 3) a symbol that receives vectors but never gets a signal (every vector invalid)
        fake = [0.0]
        svc.mono = lambda: time.monotonic() + fake[0]
        bad = _vectors(art, X, "MUTE", _live_base(4), n=3)
        for v in bad:
            v.values = np.full_like(v.values, np.nan)
            test_bus.publish(v)
        assert _wait(lambda: svc.model.predictor.stats["invalid_vector"] >= 3)
        assert svc.problems() == []
        fake[0] = 6.0  # 6 s later, still receiving vectors
        svc._last_vec["binance:MUTE"] = svc.mono()
        probs = svc.problems()
        assert len(probs) == 1 and probs[0].startswith("binance MUTE: receives feature vectors but no signal")
        assert svc.heartbeat().status == "degraded"
        reply = test_bus.rpc(m.ControlCommand(target="predictor", command="status"), 5)
        assert reply.ok and reply.result["status"] == "degraded" and reply.result["problems"] == probs
        assert reply.result["stats"]["problems"] == 1.0 and reply.result["clock"]["row_interval_s"] == 0.1
    finally:
        svc.stop()
        test_bus.close()
        svc_bus.close()


def test_future_vector_goes_to_dlq_over_rabbitmq_and_signals_continue(amqp_url, uid, book):
    art, X = book
    svc, svc_bus = _service(amqp_url)
    test_bus = connect_bus(amqp_url, "test").start()
    symbol = f"F{uid}"
    out_q = QueueDef(
        f"t.future.{uid}", MARKET_EXCHANGE, (f"signals.*.{symbol}",), DeliveryClass.MARKET, max_length=10_000
    )
    got: list[m.Signal] = []
    lock = threading.Lock()
    try:
        test_bus.get_dead_letters("predictor.features", 1000)  # drain what other runs left
        test_bus.subscribe(out_q, lambda msg, d: (lock.acquire(), got.append(msg), lock.release()))
        time.sleep(0.3)
        S = art.seq_len
        base = _live_base(S + 10)
        vecs = _vectors(art, X, symbol, base, n=S + 10)
        for v in vecs[:S]:
            test_bus.publish(v)
        assert _wait(lambda: len(got) == 1)
        # a well-formed vector a year ahead: dead-lettered with the reason, state untouched
        future = _vectors(art, X, symbol, base + 365 * 86400 * 10**9, start=S, n=1)[0]
        test_bus.publish(future)
        dead: list = []
        assert _wait(
            lambda: (
                dead.extend(test_bus.get_dead_letters("predictor.features"))
                or any(m.decode(b).id == future.id for b, _ in dead)
            )
        )
        headers = next(h for b, h in dead if m.decode(b).id == future.id)
        assert headers["x-dlq-reason"] == "handler_error"
        assert "FutureInput" in headers["x-dlq-error"] and "ahead of the wall clock" in headers["x-dlq-error"]
        assert svc.counts["future"] == 1
        # later vectors of that symbol still give signals (the future ts did not become "last ts")
        for v in vecs[S:]:
            test_bus.publish(v)
        assert _wait(lambda: len(got) == 11)
        assert [s.ts for s in sorted(got, key=lambda s: s.ts)] == [v.ts for v in vecs[S - 1 :]]
        assert svc.model.predictor.stats["stale_ts"] == 0
    finally:
        svc.stop()
        test_bus.delete_queue(out_q)
        test_bus.close()
        svc_bus.close()
