"""The notifier fed by the REAL trader service (paper venue) trading on real recorded books:
signal -> open -> the trailing stop ratchets -> the stop closes; the chat gets the open and the
close message, the close with the trader's own PnL after fees (to the cent, from the exact
Decimal of the trader's closed trade)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Iterator

import numpy as np
import pytest

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from notifier.format import num, usd
from tests.notifier.test_notifier_integration import MAIN_CHAT, start_notifier, stop_notifier, wait_for
from tests.tgbot.fakes.bot_api import FakeBotAPI
from tests.tgbot.real_trader import TRADER_QUEUES, RealBookFeeder, RealTrader, mids, purge, real_books, signal

pytestmark = pytest.mark.rabbitmq

D = Decimal
OUT_QUEUE = "api.state"  # the trader's order/fill/position messages, as the API sees them


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


def test_a_real_trailing_stop_round_trip_reaches_the_chat_with_the_traders_pnl(monkeypatch, bot_api, amqp_url, uid):
    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    purge(amqp_url, *TRADER_QUEUES, OUT_QUEUE, "notifier.events", "notifier.control", "notifier.heartbeats")
    bids, asks, exchange, symbol = real_books()
    mid = mids()
    # a short from the highest mid of the first half of the recording, into what follows
    entry_i = int(np.argmax(mid[: len(mid) // 2]))
    assert mid[entry_i:].min() < mid[entry_i] * (1 - 0.002), "the recording must fall after its high"
    trader = RealTrader(
        amqp_url, uid, trader_autostart=[symbol], trader_trailing_activation=D("0.0005"), trader_trailing_lock=D("0.8")
    ).start()
    seen: list[m.Message] = []
    lock = threading.Lock()
    watch = connect_bus(amqp_url, "api").start()

    def collect(msg: m.Message, _d) -> None:
        with lock:
            seen.append(msg)

    watch.subscribe(OUT_QUEUE, collect)
    from depthpilot.store import Store

    nstore = Store.connect(f"mongomock://n{uid}", f"notifier_{uid}")
    notifier = start_notifier(monkeypatch, bot_api, amqp_url, nstore, NOTIFY_ROUTES=f"*:{MAIN_CHAT}")
    client = c.ControlClient(watch, requested_by="test", timeout_s=5)
    try:
        with RealBookFeeder(trader.bus, index=entry_i, every_s=0.01) as feed:
            wait_for(lambda: trader.svc.runtime.counters["books"] > 3, 10)
            trader.bus.publish(signal("down"))
            trader.bus.publish(signal("down"))
            wait_for(lambda: any(isinstance(x, m.PositionUpdate) and x.qty < 0 for x in list(seen)), 5)
            feed.play(len(mid) - 1, step=4)
            wait_for(lambda: any(isinstance(x, m.PositionUpdate) and x.qty == 0 for x in list(seen)), 20)
        trades = client.call(c.RecentTrades(n=5)).trades
        assert len(trades) == 1
        t = trades[0]
        assert t.side == "short" and t.exit_reason == "trailing_stop", t
        # the trailing stop ratcheted down (a short's stop only ever moves down) before it closed
        stops = [x.stop_price for x in seen if isinstance(x, m.PositionUpdate) and x.qty < 0 and x.stop_price]
        moved = [b for a, b in zip(stops, stops[1:]) if b != a]
        assert len(moved) >= 2 and all(b < a for a, b in zip(stops, stops[1:]) if b != a), stops
        assert t.exit_price > min(asks[entry_i : feed.index + 1, 0, 0]) and t.exit_price < t.entry_price
        # the trader's PnL after fees, exact: from its own stored fills
        fills = trader.store.fills()
        notional = {"buy": D(0), "sell": D(0)}
        qty = {"buy": D(0), "sell": D(0)}
        for f in fills:  # a market order may fill over several levels of the recorded book
            notional[f["side"]] += D(str(f["qty"])) * D(str(f["price"]))
            qty[f["side"]] += D(str(f["qty"]))
        fees = sum((D(str(f["fee"])) for f in fills), D(0))
        assert qty["buy"] == qty["sell"] == t.qty
        assert t.fees == fees and t.pnl == notional["sell"] - notional["buy"] - fees
        assert t.pnl > 0  # the trailing stop locked in a gain on the fall
        stored = trader.store.closed_trades(mode="paper")
        assert len(stored) == 1 and stored[0]["pnl"] == t.pnl and stored[0]["fees"] == t.fees
        assert stored[0]["exit_reason"] == "trailing_stop"
        # the closing order's update says so too (the notifier reads the reason from it)
        closing = [x for x in seen if isinstance(x, m.OrderUpdate) and x.side == m.Side.BUY]
        assert closing and {x.reason for x in closing} == {"trailing_stop"}, closing

        wait_for(lambda: sum("CLOSE" in x for x in bot_api.sent_to(MAIN_CHAT)) == 1, 10)
        texts = bot_api.sent_to(MAIN_CHAT)
        opened = next(x for x in texts if "OPEN" in x)
        assert opened.startswith(f"🟢 OPEN SHORT {num(t.qty)} {symbol} @ {num(t.entry_price)} [paper, {exchange}]")
        assert "reason: signal" in opened
        closed = next(x for x in texts if "CLOSE" in x)
        assert closed.startswith(f"✅ CLOSE SHORT {num(t.qty)} {symbol} {num(t.entry_price)} → {num(t.exit_price)}")
        assert f"PnL {usd(t.pnl)} USDT after {usd(t.fees).lstrip('+')} fees" in closed, (closed, t)
        assert "reason: trailing stop" in closed
        assert texts.index(opened) < texts.index(closed)
    finally:
        stop_notifier(notifier)
        watch.close()
        trader.close()
        nstore.drop_database()
