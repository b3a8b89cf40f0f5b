"""The Telegram bot against the REAL trader service (paper venue, real recorded books), over the
real RabbitMQ and real aiogram talking to the local Bot API server."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from depthpilot import control as c
from tests.tgbot.conftest import OWNER, VIEWER, start_bot, stop_bot
from tests.tgbot.real_trader import TRADER_QUEUES, RealBookFeeder, RealTrader, purge, real_books, signal
from tests.tgbot.test_tgbot_integration import ask, button, tap
from tests.trader.svc_helpers import wait_until
from tgbot.render import money, plain, signed

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def trader_env(amqp_url, uid, monkeypatch):
    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    purge(amqp_url, *TRADER_QUEUES, "notifier.control")
    return amqp_url, uid


def _flat(store) -> bool:
    pos = store.positions("paper")
    return bool(pos) and all(Decimal(str(p["qty"])) == 0 for p in pos)


def test_bot_drives_the_real_trader_and_stop_flattens(monkeypatch, bot_api, trader_env):
    amqp_url, uid = trader_env
    bids, asks, exchange, symbol = real_books()
    trader = RealTrader(amqp_url, uid).start()
    svc = start_bot(monkeypatch, bot_api, amqp_url)
    client = c.ControlClient(trader.bus, requested_by="test", timeout_s=5)
    try:
        # a viewer's /trade is refused by the bot: the trader never sees it
        assert "your role is viewer" in ask(bot_api, VIEWER, f"/trade {symbol}").text
        assert f"{symbol}@{exchange}: stopped" in ask(bot_api, OWNER, "/status").text
        assert [x.command for x in trader.handled] == ["trader_status"]
        with RealBookFeeder(trader.bus, index=0) as feed:
            wait_until(lambda: trader.svc.runtime.counters["books"] > 3)
            assert (
                ask(bot_api, OWNER, f"/trade {symbol.lower()}").text == f"Done: trading {symbol} on {exchange} (paper)"
            )
            assert f"{symbol}@{exchange}: trading, book ok" in ask(bot_api, OWNER, "/status").text
            assert ask(bot_api, OWNER, "/positions").text == "No open positions."
            assert "realized 0.00 USDT after 0.00 fees, unrealized 0.00; 0 trades" in ask(bot_api, OWNER, "/pnl").text
            assert (
                ask(bot_api, OWNER, "/balance").text
                == "Balance (paper): equity 10,000.00 USDT, available 10,000.00 USDT"
            )
            assert ask(bot_api, OWNER, "/trades").text == "No closed trades yet."
            risk = ask(bot_api, OWNER, "/risk").text
            assert risk.startswith("Risk: ok") and "daily_loss_limit: 0 / 100" in risk and "- /" not in risk
            assert ask(bot_api, OWNER, f"/pause {symbol}").text == f"Done: entries paused on {symbol}"
            trader.bus.publish(signal("up"))
            trader.bus.publish(signal("up"))
            time.sleep(0.5)
            assert trader.store.positions("paper") == [] or _flat(trader.store)  # paused: no entry
            assert ask(bot_api, OWNER, "/resume").text == "Done: entries resumed on all"

            # open a paper long on the recorded book; the bot shows the trader's position
            trader.bus.publish(signal("flat"))
            trader.bus.publish(signal("up"))
            trader.bus.publish(signal("up"))
            wait_until(lambda: trader.store.positions("paper") and not _flat(trader.store), timeout=5)
            pos = client.call(c.Positions()).positions[0]
            assert pos.qty > 0 and pos.avg_price == Decimal(str(asks[feed.index, 0, 0]))  # best ask of the row
            text = ask(bot_api, OWNER, "/positions").text
            assert f"{symbol} LONG {pos.qty.normalize():f} @ {pos.avg_price.normalize():f}" in text, text
            assert "stop " in text
            risk = ask(bot_api, OWNER, "/risk").text
            assert "max_total_exposure: " in risk and "max_total_exposure: 0 /" not in risk

            # /stop -> "Stop and flatten" -> flat, and the chat says so
            ask_msg = ask(bot_api, OWNER, f"/stop {symbol}")
            assert "flatten" in ask_msg.text.lower()
            n_handled = len(trader.handled)
            _, n = tap(bot_api, OWNER, ask_msg, button(ask_msg, "Stop and flatten"))
            done = bot_api.wait_call(lambda x: x.method == "sendMessage" and "Done:" in x.text, after=n)
            assert f"{symbol}" in done.text and "1 closing orders sent" in done.text, done.text
            assert trader.handled[n_handled].command == "trade_stop"
            assert trader.handled[n_handled].args == {"symbol": symbol, "flatten": True}
            wait_until(lambda: _flat(trader.store), timeout=2)
            assert client.call(c.Positions()).positions == [] or all(
                p.qty == 0 for p in client.call(c.Positions()).positions
            )
            assert ask(bot_api, OWNER, "/positions").text == "No open positions."
            trade = client.call(c.RecentTrades(n=5)).trades
            assert len(trade) == 1 and trade[0].exit_reason == "flatten"
            t = trade[0]
            text = ask(bot_api, OWNER, "/trades").text
            assert (
                f"{symbol} long {plain(t.qty)} {plain(t.entry_price)} -> {plain(t.exit_price)}: {signed(t.pnl)} "
                f"after {money(t.fees)} fees (flatten)" in text
            ), text
            assert t.entry_price == pos.avg_price and t.pnl == (t.exit_price - t.entry_price) * t.qty - t.fees
            pnl = ask(bot_api, OWNER, "/pnl").text
            assert (
                f"realized {signed(t.pnl)} USDT after {money(t.fees)} fees, unrealized 0.00; 1 trades, "
                f"{int(t.pnl > 0)}/1 won" in pnl
            ), pnl
            assert f"{symbol}@{exchange}: stopped" in ask(bot_api, OWNER, "/status").text
        # the viewer never reached the trader: every command it saw came from the owner
        assert {x.requested_by for x in trader.handled} == {f"telegram:{OWNER}", "test"}
        assert "trade_start" in [x.command for x in trader.handled]
    finally:
        stop_bot(svc)
        trader.close()


def test_a_trader_that_does_not_answer_times_out_and_later_never_executes(monkeypatch, bot_api, trader_env):
    amqp_url, uid = trader_env
    _, _, exchange, symbol = real_books()
    svc = start_bot(monkeypatch, bot_api, amqp_url, TELEGRAM_CONTROL_TIMEOUT_S="1")
    trader = None
    try:
        t0 = time.monotonic()
        reply = ask(bot_api, OWNER, f"/trade {symbol}")
        assert time.monotonic() - t0 < 3.0
        assert reply.text.startswith("Timed out") and "will NOT be executed later" in reply.text
        assert svc.bus.queue_depth("trader.control") == 1  # still queued, past its deadline
        trader = RealTrader(amqp_url, uid).start()
        wait_until(lambda: trader.svc.expired_commands == 1, timeout=5)
        assert trader.handled == []  # dropped before any handler
        assert svc.bus.queue_depth("trader.control") == 0
        # the trader did not start trading; fresh commands are served
        status = ask(bot_api, OWNER, "/status").text
        assert f"{symbol}@{exchange}: stopped" in status, status
        assert [x.command for x in trader.handled] == ["trader_status"]
    finally:
        stop_bot(svc)
        if trader is not None:
            trader.close()
