"""Start-up candle back-fill: the seam between REST history and live candles (pure), and the
features service seeded through the REAL ccxt client from a local fake Binance klines
endpoint serving real 1-minute candles (re-timed to end just before the live trades)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from depthpilot import messages as m
from features.backfill import candles_from_ohlcv, timeframe_for
from features.pipeline import SymbolPipeline
from features.seam import CandleSeam
from features.spec import FeatureSpec

pytestmark = pytest.mark.timeout(120)
MIN = 60 * 10**9


def test_seam_counts_duplicates_and_reports_missing_intervals():
    s = CandleSeam(MIN)
    assert s.admit(1 * MIN - 1, history=True) is None and s.admit(2 * MIN - 1, history=True) is None
    assert s.admit(2 * MIN - 1, history=False) is False and s.duplicates == 1  # history and live overlap
    gap = s.admit(5 * MIN - 1, history=False)
    assert gap.missing == 2 and gap.where == "seam" and s.missing == 2
    assert s.admit(6 * MIN - 1, history=False) is None
    assert timeframe_for(60) == "1m" and timeframe_for(3600) == "1h" and timeframe_for(1) == "1s"
    with pytest.raises(ValueError):
        timeframe_for(1.5)
    (c,) = candles_from_ohlcv([[60_000, "1", "2", "0.5", "1.5", "10"]], MIN)
    assert c["ts"] == 2 * MIN - 1 and c["close"] == 1.5


def _trade(ts: int, price: float, i: int) -> m.Trade:
    return m.Trade(
        exchange="binance",
        symbol="BTCUSDT",
        ts_exchange=ts,
        ts_recv=ts,
        price=price,
        size=0.1,
        side="buy",
        trade_id=str(i),
    )


def _hist(n: int, end_b: int) -> list[dict]:
    rng = np.random.default_rng(0)
    px = 100 + np.cumsum(rng.normal(0, 0.1, n))
    return [
        {
            "ts": (end_b - n + 1 + i) * MIN + MIN - 1,
            "open": p,
            "high": p + 0.1,
            "low": p - 0.1,
            "close": p,
            "volume": 1.0 + i % 7,
            "n": 0.0,
        }
        for i, p in enumerate(px)
    ]


@pytest.mark.parametrize("first_live_b, dup, missing", [(100, 0, 0), (102, 0, 2)])
def test_pipeline_history_then_live(first_live_b, dup, missing):
    spec = FeatureSpec()
    pl = SymbolPipeline(spec, "binance", "BTCUSDT", emit=("candle",))
    out = pl.seed_candles(_hist(100, 99))  # history up to minute 99
    assert len(out.vectors) == 100 and not out.events
    assert np.isfinite(out.vectors[-1].values).all()  # warm: the last history candle is a full vector
    o1 = pl.on_trade(_trade(first_live_b * MIN + 5, 100.0, 1))
    o2 = pl.on_trade(_trade((first_live_b + 1) * MIN + 5, 100.1, 2))  # closes the first live minute
    assert not o1.vectors and [v.ts for v in o2.vectors] == [(first_live_b + 1) * MIN - 1]
    assert pl.seam.duplicates == dup and pl.seam.missing == missing
    assert [e.kind for e in o2.events if e.kind == "candle_gap"] == (["candle_gap"] if missing else [])


def test_history_for_the_minute_live_is_filling_is_left_to_live():
    pl = SymbolPipeline(FeatureSpec(), "binance", "BTCUSDT", emit=("candle",))
    pl.on_trade(_trade(99 * MIN + 5, 100.0, 1))  # live started in minute 99 before the back-fill answered
    out = pl.seed_candles(_hist(60, 99))
    assert [v.ts for v in out.vectors][-1] == 99 * MIN - 1  # minute 99 stays with the live candle
    o = pl.on_trade(_trade(100 * MIN + 5, 100.0, 2))
    assert [v.ts for v in o.vectors] == [100 * MIN - 1] and pl.seam.duplicates == 0 and pl.seam.missing == 0


def test_service_backfill_gives_a_candle_vector_within_seconds_and_a_clean_seam(bus_url, uid, tmp_path):
    from depthpilot.bus import connect_bus
    from depthpilot.settings import load_settings
    from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
    from features.service import FeaturesService
    from tests.collector.fakes.data import fixture_json
    from tests.collector.fakes.http_server import FakeExchangeHTTP
    from tests.collector.fakes.klines import (
        INFO,
        KLINES,
        BinanceKlines,
        ServerThread,
        real_klines,
    )

    n_hist = 200
    live_b = time.time_ns() // MIN - 20  # live trades start 20 minutes ago (the service accepts 1 h old input)
    rows = real_klines(n_hist + 50)[:n_hist]
    shift = (live_b - n_hist) * 60_000 - rows[0][0]  # re-time: the last served candle is minute live_b - 1
    rows = [[r[0] + shift, *r[1:6], r[6] + shift, *r[7:]] for r in rows]
    srv = FakeExchangeHTTP({INFO: fixture_json("binance_exchange_info.json")})
    srv.routes[KLINES] = BinanceKlines(rows)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(FeatureSpec().to_dict()))  # 60 s candles
    with ServerThread(srv) as th:
        settings = load_settings(
            AMQP_URL=bus_url,
            FEATURES_SPEC_FILE=str(spec_file),
            FEATURES_EMIT="candle",
            FEATURES_BACKFILL="rest",
            FEATURES_BACKFILL_CANDLES="150",
            CCXT_API_BASE_URL=th.base_url,
            DEPTHPILOT_EXCHANGES="binance",
            DEPTHPILOT_SYMBOLS="BTCUSDT",
            INPUT_MAX_AGE_S="3600",
            FEATURES_STORE="false",
        )
        svc_bus = connect_bus(bus_url, "features").start()
        svc_bus.purge("features.trades")
        test_bus = connect_bus(bus_url, "test").start()
        got: list[m.Message] = []
        lock = threading.Lock()

        def collect(msg, d):
            with lock:
                got.append(msg)

        test_bus.subscribe(
            QueueDef(
                f"t.bf.{uid}", MARKET_EXCHANGE, ("features.binance.BTCUSDT",), DeliveryClass.MARKET, max_length=100_000
            ),
            collect,
        )
        svc = FeaturesService(settings, svc_bus, None)
        t0 = time.monotonic()
        svc.start()
        try:
            first = None
            # "within seconds": the first vector comes from the back-fill alone, before any live
            # trade exists (none is published yet), instead of after a day of live candles. It
            # takes ~2 s here when the machine is idle (most of it importing ccxt); the bound is
            # wide because a CI machine under load is slow, and still well under one live minute.
            while time.monotonic() - t0 < 50 and first is None:
                with lock:
                    first = next((time.monotonic() - t0 for v in got if isinstance(v, m.FeatureVector)), None)
                time.sleep(0.02)
            assert first is not None and first < 45, f"no candle vector within 45 s of start: {svc.backfill} {len(got)}"
            with lock:
                early = [v for v in got if isinstance(v, m.FeatureVector)]
            assert early[0].ts <= (live_b - 1) * MIN + MIN - 1  # a history candle, not a live one
            # 150 asked; the exchange's history ends 20 minutes ago (where the live trades start): 130
            assert svc.backfill == {"binance BTCUSDT": 130}
            # live trades: minutes live_b and live_b + 1 close when a trade of live_b + 2 arrives
            for i, (b, sec) in enumerate([(live_b, 3), (live_b, 40), (live_b + 1, 7), (live_b + 2, 1)]):
                test_bus.publish(_trade(b * MIN + sec * 10**9, 100.0 + i, i))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    if sum(isinstance(v, m.FeatureVector) for v in got) >= 132:
                        break
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            svc.stop()
            test_bus.close()
            svc_bus.close()
    vec = sorted((v for v in got if isinstance(v, m.FeatureVector)), key=lambda v: v.ts)
    ts = np.array([v.ts for v in vec])
    assert len(vec) == 132 and ts[-1] == (live_b + 2) * MIN - 1 and ts[-3] == live_b * MIN - 1
    assert (np.diff(ts) == MIN).all(), "history/live seam: a duplicate or a missing minute"
    assert np.isfinite(vec[-1].values).all()  # the first live candles are full vectors: warm state
    pl = svc.pipelines[("binance", "BTCUSDT")][1]
    assert pl.seam.duplicates == 0 and pl.seam.missing == 0
    assert not any(isinstance(e, m.RiskEvent) and e.kind == "candle_gap" for e in got)


def test_service_backfill_from_the_stored_trades(uid, tmp_path):
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings
    from depthpilot.store import Store
    from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef
    from features.service import FeaturesService

    now_b = time.time_ns() // MIN
    store = Store.connect(f"mongomock://{uid}", f"bf_{uid}", snapshot_ttl_s=None)
    rng = np.random.default_rng(3)
    trades, last_px = [], {}
    for b in range(now_b - 30, now_b - 5):  # trades stored up to 5 minutes ago
        for k in range(3):
            px = float(100 + rng.normal())
            trades.append(_trade(b * MIN + (5 + 20 * k) * 10**9, px, len(trades)))
            last_px[b] = px
    store.insert_many("trades", trades)
    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(FeatureSpec().to_dict()))
    settings = load_settings(
        AMQP_URL=url,
        FEATURES_SPEC_FILE=str(spec_file),
        FEATURES_EMIT="candle",
        FEATURES_BACKFILL="store",
        FEATURES_BACKFILL_CANDLES="20",
        DEPTHPILOT_EXCHANGES="binance",
        DEPTHPILOT_SYMBOLS="BTCUSDT",
        FEATURES_STORE="false",
    )
    test_bus = connect_bus(url, "test").start()
    got: list = []
    test_bus.subscribe(
        QueueDef(
            f"t.bfs.{uid}", MARKET_EXCHANGE, ("features.binance.BTCUSDT",), DeliveryClass.MARKET, max_length=10_000
        ),
        lambda msg, d: got.append(msg),
    )
    svc_bus = connect_bus(url, "features").start()
    svc = FeaturesService(settings, svc_bus, store)
    t0 = time.monotonic()
    svc.start()
    try:
        while time.monotonic() - t0 < 10 and len(got) < 15:
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
    finally:
        svc.stop()
        svc_bus.close()
        test_bus.close()
    assert svc.backfill == {"binance BTCUSDT": 15} and elapsed < 10  # minutes now-20 .. now-6
    vec = sorted(got, key=lambda v: v.ts)
    assert [v.ts // MIN for v in vec] == list(range(now_b - 20, now_b - 5))
    # the candles are the stored trades' candles: log return of consecutive closes
    i = vec[0].names.index("ret_log")
    want = [np.log(last_px[b] / last_px[b - 1]) for b in range(now_b - 19, now_b - 5)]
    np.testing.assert_allclose([v.values[i] for v in vec[1:]], want, rtol=1e-12)


def test_a_failed_backfill_is_reported_and_the_service_goes_on(uid, tmp_path):
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings
    from depthpilot.topology import STATE_EXCHANGE, DeliveryClass, QueueDef
    from features.service import FeaturesService
    from tests.collector.fakes.data import fixture_json
    from tests.collector.fakes.http_server import FakeExchangeHTTP
    from tests.collector.fakes.klines import INFO, ServerThread

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    with ServerThread(FakeExchangeHTTP({INFO: fixture_json("binance_exchange_info.json")})) as th:
        settings = load_settings(
            AMQP_URL=url,
            FEATURES_EMIT="candle",
            FEATURES_BACKFILL="rest",
            CCXT_API_BASE_URL=th.base_url,
            DEPTHPILOT_EXCHANGES="binance",
            DEPTHPILOT_SYMBOLS="NOPEUSDT",
            FEATURES_STORE="false",
        )
        test_bus = connect_bus(url, "test").start()
        events: list = []
        test_bus.subscribe(
            QueueDef(f"t.bff.{uid}", STATE_EXCHANGE, ("risk.#",), DeliveryClass.STATE, delivery_limit=5),
            lambda msg, d: events.append(msg),
        )
        svc_bus = connect_bus(url, "features").start()
        svc = FeaturesService(settings, svc_bus, None)
        svc.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not events:
                time.sleep(0.02)
            assert svc.heartbeat().status == "ok"
        finally:
            svc.stop()
            svc_bus.close()
            test_bus.close()
    assert svc.backfill["binance NOPEUSDT"].startswith("failed: ValueError: binance has no market 'NOPEUSDT'")
    (ev,) = [e for e in events if e.kind == "backfill_failed"]
    assert ev.symbol == "NOPEUSDT" and "no market" in ev.message
