"""Live collector wiring for a ccxt exchange: the REAL ccxt client (REST mode) against the
local fake Binance REST server (``CCXT_API_BASE_URL``), on the in-memory bus and a mongomock
store. The depth payload is the recording's REST snapshot, the trades its real ``@trade``
events served as ``/api/v3/aggTrades``. ``binance_ccxt`` is Binance spot through ccxt."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.bus.memory import MemoryBroker
from depthpilot.settings import load_settings
from depthpilot.store import Store
from depthpilot.topology import MARKET_EXCHANGE, STATE_EXCHANGE, DeliveryClass, QueueDef
from tests.collector.fakes.binance_server import FakeBinanceThread
from tests.collector.fakes.data import (
    binance_rest_depth_snapshot,
    binance_spot_trades,
    fixture_json,
)
from tests.collector.fakes.http_server import (
    BinanceAggTrades,
    FakeExchangeHTTP,
    aggregate_trades,
)

pytestmark = pytest.mark.timeout(90)

AGG = "/api/v3/aggTrades"
EX = "binance_ccxt"


def _wait(cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.parametrize("trades_on", [True, False])
def test_live_ccxt_feed_publishes_books_and_trades_and_stores_trades(uid, trades_on):
    agg = aggregate_trades(binance_spot_trades(3000))
    feed = BinanceAggTrades(agg, start=100, per_request=40)
    srv = FakeExchangeHTTP(
        {
            "/api/v3/exchangeInfo": fixture_json("binance_exchange_info.json"),
            "/api/v3/depth": binance_rest_depth_snapshot(),
            AGG: feed,
        }
    )
    MemoryBroker.reset(uid)
    bus_url = f"memory://{uid}"
    store = Store.connect(f"mongomock://{uid}", f"c_{uid}", snapshot_ttl_s=None)
    market = QueueDef(
        f"t.live.market.{uid}",
        MARKET_EXCHANGE,
        (f"book.{EX}.BTCUSDT", f"trade.{EX}.BTCUSDT"),
        DeliveryClass.MARKET,
        max_length=100_000,
    )
    risk = QueueDef(f"t.live.risk.{uid}", STATE_EXCHANGE, ("risk.#",), DeliveryClass.STATE, delivery_limit=5)
    kinds: Counter[str] = Counter()
    trades: list[m.Trade] = []
    snaps: list[m.BookSnapshot] = []
    events: list[m.RiskEvent] = []
    lock = threading.Lock()

    def on_market(msg, d):
        with lock:
            kinds[msg.type_name] += 1
            (trades if isinstance(msg, m.Trade) else snaps).append(msg)

    watcher = connect_bus(bus_url, "watch").start()
    watcher.subscribe(market, on_market, dedup=False)
    watcher.subscribe(risk, lambda msg, d: events.append(msg))
    from collector.service import CollectorService

    with FakeBinanceThread(srv) as fake:  # runs the aiohttp fake on its own loop / thread
        fake.fail(AGG, "429")  # the first trades request is rate limited: retried, reported
        settings = load_settings(
            AMQP_URL=bus_url,
            COLLECTOR_SOURCE="live",
            DEPTHPILOT_EXCHANGES=EX,
            DEPTHPILOT_SYMBOLS="BTCUSDT",
            COLLECTOR_CCXT_MODE="rest",
            CCXT_API_BASE_URL=fake.base_url,
            COLLECTOR_TRADES=str(trades_on).lower(),
            BOOK_DEPTH="20",
            SNAPSHOT_RATE_HZ="10",
            SNAPSHOT_STORE_INTERVAL_S="0.5",
        )
        bus = connect_bus(bus_url, "collector").start()
        svc = CollectorService(settings, bus, store).start()
        try:
            ok = _wait(lambda: len(snaps) >= 2 and (not trades_on or len(trades) >= 80), 30)
        finally:
            svc.stop()
            bus.close()
        time.sleep(0.3)
        watcher.close()

    assert ok, f"collector published {dict(kinds)}"
    rec = binance_rest_depth_snapshot()
    assert all(s.exchange == EX and s.symbol == "BTCUSDT" and s.valid and len(s.bids) == 20 for s in snaps)
    assert snaps[0].bids[0, 0] == float(rec["bids"][0][0]) and snaps[0].seq == rec["lastUpdateId"]
    assert store.count("snapshots", EX, "BTCUSDT") >= 1
    if not trades_on:
        assert trades == [] and srv.hits(AGG) == [] and store.count("trades", EX, "BTCUSDT") == 0
        return
    by_id = {str(a["a"]): a for a in agg}
    ids = [int(t.trade_id) for t in trades]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)  # each trade once, in order
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no hole between polls
    for t in trades:
        a = by_id[t.trade_id]
        assert (t.exchange, t.symbol, t.price, t.size) == (EX, "BTCUSDT", float(a["p"]), float(a["q"]))
        assert t.side is (m.Side.SELL if a["m"] else m.Side.BUY) and t.ts_exchange == a["T"] * 1_000_000
    stored = list(store.iter_messages("trades", EX, "BTCUSDT"))
    assert len(stored) == len({s.id for s in stored}) and len(stored) >= 80
    assert {s.trade_id for s in stored} <= set(by_id) and {s.id for s in stored} <= {t.id for t in trades}
    assert [h.answered for h in srv.hits(AGG)][:2] == ["429", "200"]
    retry = [e for e in events if e.kind == "exchange_retry"]
    assert retry and retry[0].exchange == EX and "fetch_trades" in retry[0].message
