"""The trader service over the real RabbitMQ (TEST_AMQP_URL): signals in -> orders, fills and
positions out (state class, confirmed) and stored; `stop --flatten` through the ControlClient
flattens within 1 s; a daily-loss hit flattens within 1 s and no order follows."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.store import Store
from tests.trader.svc_helpers import BookFeeder, signal, wait_until
from trader.service import TraderService

OUT_QUEUE = "api.state"  # binds order.intent/order.update/fill/position/risk


@pytest.fixture
def trader(amqp_url, uid, monkeypatch):
    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    s = load_settings(
        amqp_url=amqp_url,
        mongo_url=f"mongomock://{uid}",
        trader_autostart=["BTCUSDT"],
        exchanges=["binance"],
        trader_exchange="binance",
    )
    store = Store.connect(s.mongo_url, f"svc_{uid}")
    test_bus = connect_bus(amqp_url, "trader-test").start()
    for q in ("trader.book", "trader.signals", "trader.control", OUT_QUEUE):
        test_bus.purge(q)
    seen: list[m.Message] = []
    lock = threading.Lock()

    def collect(msg: m.Message, _d) -> None:
        with lock:
            seen.append(msg)

    test_bus.subscribe(OUT_QUEUE, collect)
    svc_bus = connect_bus(amqp_url, "trader").start()
    svc = TraderService(s, svc_bus, store).start()
    try:
        yield svc, store, test_bus, seen
    finally:
        svc.stop()
        svc_bus.close()
        test_bus.close()
        store.drop_database()


def _flat(store: Store) -> bool:
    pos = store.positions("paper")
    return bool(pos) and pos[0]["qty"] == 0


def test_signals_to_orders_fills_positions_then_flatten_and_daily_loss_halt(trader):
    svc, store, bus, seen = trader
    client = c.ControlClient(bus, requested_by="test", timeout_s=5)
    with BookFeeder(bus, 60000.0) as feed:
        wait_until(lambda: svc.runtime.counters["books"] > 3)
        bus.publish(signal("up"))
        bus.publish(signal("up"))  # K = 2 agreeing readings -> a long entry
        wait_until(lambda: any(o["status"] == "filled" for o in store.orders()), timeout=5)
        wait_until(lambda: store.positions("paper") and store.positions("paper")[0]["qty"] > 0, timeout=5)
        # out on the bus, exact money
        wait_until(lambda: {type(x) for x in seen} >= {m.OrderIntent, m.OrderUpdate, m.Fill, m.PositionUpdate})
        fill = next(x for x in seen if isinstance(x, m.Fill))
        assert isinstance(fill.price, Decimal) and fill.price == Decimal("60000.05")  # best ask of the fed book
        assert fill.fee == fill.qty * fill.price * Decimal("0.00055")  # taker fee, exact
        opened = next(x for x in seen if isinstance(x, m.PositionUpdate) and x.qty > 0)
        assert opened.mark_price is not None and opened.mode == "paper"
        wait_until(lambda: any(isinstance(x, m.PositionUpdate) and x.qty > 0 and x.stop_price for x in seen))
        intent = next(x for x in seen if isinstance(x, m.OrderIntent))
        assert intent.side == m.Side.BUY and intent.reason == "signal" and intent.signal_id
        # stored: order (filled, never regressing), fills append-only, position upsert
        o = store.order(intent.client_order_id)
        assert o["status"] == "filled" and o["filled_qty"] == intent.qty and o["intent"]["qty"] == intent.qty
        assert len(store.fills(client_order_id=intent.client_order_id)) >= 1
        reply = client.call(c.Positions())
        assert reply.positions[0].qty == intent.qty and reply.positions[0].stop_price is not None

        # stop + flatten through the control layer: flat within 1 s
        t0 = time.monotonic()
        ack = client.call(c.StopTrading(symbol="all", flatten=True))
        assert "1 closing orders" in ack.message
        wait_until(lambda: _flat(store), timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        trades = client.call(c.RecentTrades(n=5)).trades
        assert len(trades) == 1 and trades[0].exit_reason == "flatten" and trades[0].fees > 0
        status = client.call(c.Status())
        assert status.symbols[0].trading is False and status.mode == "paper"

        # daily loss: tighten the limit, trade again, let the price fall through it
        client.call(c.SetParameter(name="daily_loss_limit", value="1.5"))
        client.call(c.StartTrading(symbol="BTCUSDT"))
        bus.publish(signal("flat"))  # the re-open block needs a neutral/opposite reading in between
        bus.publish(signal("up"))
        bus.publish(signal("up"))
        wait_until(lambda: store.positions("paper")[0]["qty"] > 0, timeout=5)
        n_intents = svc.runtime.counters["intents"]
        t0 = time.monotonic()
        feed.price = 59000.0  # -1.7 %: about -7 USDT on the position, past the 1.5 limit
        wait_until(lambda: _flat(store), timeout=1.5)
        took = time.monotonic() - t0
        assert took < 1.0, took
        risk = client.call(c.RiskLimits())
        assert risk.halted and risk.halt_reason == "daily_loss"
        assert svc.runtime.counters["intents"] == n_intents + 1  # exactly the closing order
        wait_until(lambda: any(isinstance(x, m.RiskEvent) and x.kind == "daily_loss_limit" for x in seen))
        # no order follows: fresh agreeing signals while halted
        for _ in range(3):
            bus.publish(signal("down"))
        time.sleep(0.5)
        bus.publish(signal("flat"))
        for _ in range(3):
            bus.publish(signal("up"))
        time.sleep(0.7)
        wait_until(lambda: svc.runtime.counters["signals"] >= 12)  # all of them reached the engine
        assert svc.runtime.counters["intents"] == n_intents + 1
        assert store.positions("paper")[0]["qty"] == 0
        pnl = client.call(c.Pnl(period="today"))
        assert pnl.trades == 2 and pnl.realized < 0 and pnl.fees > 0
