"""Real aiogram against the local Bot API server, control requests over the real RabbitMQ
(TEST_AMQP_URL), answered by a test responder holding a tiny paper state."""

from __future__ import annotations

import logging
import time

import pytest

from tests.tgbot.conftest import GROUP, OTHER_GROUP, OWNER, STRANGER, VIEWER, start_bot, stop_bot
from tests.tgbot.fakes.bot_api import Call, FakeBotAPI

pytestmark = pytest.mark.rabbitmq


def ask(api: FakeBotAPI, user: int, text: str, chat: int | None = None, timeout: float = 8.0) -> Call:
    chat = user if chat is None else chat
    n = len(api.calls)
    api.message(user, text, chat_id=chat)
    return api.wait_call(lambda c: c.method == "sendMessage" and c.chat_id == chat, after=n, timeout=timeout)


def tap(api: FakeBotAPI, user: int, msg: Call, data: str) -> tuple[Call, int]:
    n = len(api.calls)
    api.callback(user, data, msg)
    ans = api.wait_call(lambda c: c.method == "answerCallbackQuery", after=n)
    return ans, n


def button(msg: Call, text: str) -> str:
    return next(b["callback_data"] for b in msg.buttons() if b["text"] == text)


def test_every_command_reaches_the_trader_and_the_reply_is_rendered(monkeypatch, bot_api, responder, amqp_url):
    svc = start_bot(monkeypatch, bot_api, amqp_url)
    try:
        cases = [
            ("/status", "trader_status", "Mode: PAPER"),
            ("/positions", "positions", "BTCUSDT LONG 0.01 @ 50000"),
            ("/pnl 7d", "pnl", "PnL 7d"),
            ("/balance", "balance", "equity 10,005.00 USDT"),
            ("/trades 5", "trades", "No closed trades yet."),
            ("/risk", "risk", "max_position_usd: 505.00 / 1000"),
            ("/pause btcusdt", "pause", "entries paused on BTCUSDT"),
            ("/resume", "resume", "entries resumed on all"),
            ("/trade ethusdt 3", "trade_start", "trading ETHUSDT for 3 trades"),
            ("/trade DOGEUSDT", "trade_start", "Refused by the service: trade_start: unknown symbol DOGEUSDT"),
            ("/set max_position_usd 500", "set_param", "max_position_usd = 500"),
            ("/mute", "notify_mute", f"muted chat {OWNER}"),
            ("/unmute", "notify_mute", f"unmuted chat {OWNER}"),
        ]
        for i, (text, command, expected) in enumerate(cases, start=1):
            reply = ask(bot_api, OWNER, text)
            assert expected in reply.text, (text, reply.text)
            seen = responder.wait_seen(i)
            assert seen[-1].command == command
            assert seen[-1].requested_by == f"telegram:{OWNER}"
            assert seen[-1].expires_at > 0
        assert responder.seen[1].args == {} and responder.seen[2].args == {"period": "7d"}
        assert responder.seen[8].args == {"symbol": "ETHUSDT", "exchange": "", "n_trades": 3}
        assert responder.muted == {OWNER: False}

        # help is answered by the bot itself, with the quick-action keyboard; nothing on the bus
        n_seen = len(responder.seen)
        help_msg = ask(bot_api, OWNER, "/start")
        assert "/flatten" in help_msg.text and "Never send exchange keys" in help_msg.text
        quick = button(help_msg, "Positions")
        n = len(bot_api.calls)
        bot_api.callback(OWNER, quick, help_msg)
        pos = bot_api.wait_call(lambda c: c.method == "sendMessage" and "Open positions" in c.text, after=n)
        assert pos.chat_id == OWNER and len(responder.wait_seen(n_seen + 1)) == n_seen + 1

        # /stop asks whether to flatten; "Stop and flatten" closes the paper position
        ask_msg = ask(bot_api, OWNER, "/stop BTCUSDT")
        assert "flatten" in ask_msg.text.lower() and "expires in 30 s" in ask_msg.text
        assert {b["text"] for b in ask_msg.buttons()} == {"Stop and flatten", "Stop, keep positions", "Cancel"}
        assert len(responder.seen) == n_seen + 1  # nothing sent before the tap
        ans, n = tap(bot_api, OWNER, ask_msg, button(ask_msg, "Stop and flatten"))
        done = bot_api.wait_call(lambda c: c.method == "sendMessage" and "Done:" in c.text, after=n)
        assert "stopped BTCUSDT; BTCUSDT closed at 50500.0" in done.text
        stop_cmd = responder.seen[-1]
        assert stop_cmd.command == "trade_stop" and stop_cmd.args == {"symbol": "BTCUSDT", "flatten": True}
        assert "BTCUSDT" not in responder.positions
        assert "No open positions." in ask(bot_api, OWNER, "/positions").text
        # a second tap on the same button does nothing
        ans2, _ = tap(bot_api, OWNER, ask_msg, button(ask_msg, "Stop and flatten"))
        assert "already used" in ans2.params.get("text", "")

        # an allowed group works for allowed users
        assert "Mode: PAPER" in ask(bot_api, VIEWER, "/status", chat=GROUP).text
    finally:
        stop_bot(svc)


def test_strangers_viewers_and_foreign_groups_never_reach_the_bus(monkeypatch, bot_api, responder, amqp_url, caplog):
    svc = start_bot(monkeypatch, bot_api, amqp_url)
    try:
        caplog.set_level(logging.WARNING, logger="tgbot")
        refusals = [
            (STRANGER, "/status", None, "not on this bot's allow-list"),
            (STRANGER, "/flatten", None, "not on this bot's allow-list"),
            (STRANGER, "/help", None, "not on this bot's allow-list"),
            (VIEWER, "/flatten", None, "your role is viewer; this needs trader"),
            (VIEWER, "/trade BTCUSDT", None, "your role is viewer"),
            (VIEWER, "/stop all", None, "your role is viewer"),
            (VIEWER, "/reset_risk", None, "your role is viewer"),
            (OWNER, "/status", OTHER_GROUP, "this chat is not allowed"),
            (STRANGER, "/status", GROUP, "not on this bot's allow-list"),
        ]
        for user, text, chat, why in refusals:
            reply = ask(bot_api, user, text, chat=chat)
            assert reply.text.startswith("Refused:") and why in reply.text, (user, text, reply.text)
        # a stranger tapping the owner's confirmation button is refused too
        confirm = ask(bot_api, OWNER, "/flatten")
        ans, _ = tap(bot_api, STRANGER, confirm, button(confirm, "Yes, do it"))
        assert "only the user who asked" in ans.params["text"]
        # a stranger tapping a quick button
        n = len(bot_api.calls)
        bot_api.callback(
            STRANGER, "q:status", {**confirm.params["_result"], "chat": {"id": STRANGER, "type": "private"}}
        )
        assert bot_api.wait_call(
            lambda c: c.method == "sendMessage" and c.chat_id == STRANGER, after=n
        ).text.startswith("Refused:")
        time.sleep(0.3)
        assert responder.seen == [] and responder.expired == []
        assert svc.gateway.sent == 0
        assert svc.bus.queue_depth("trader.control") == 0
        assert svc.core.stats.refused == len(refusals) + 2
        assert any("refused /flatten from user 1002" in r.getMessage() for r in caplog.records)
    finally:
        stop_bot(svc)


def test_confirmation_expires_and_does_nothing(monkeypatch, bot_api, responder, amqp_url):
    svc = start_bot(monkeypatch, bot_api, amqp_url, TELEGRAM_CONFIRM_TTL_S="0.5")
    try:
        confirm = ask(bot_api, OWNER, "/flatten BTCUSDT")
        assert "close the BTCUSDT position at market" in confirm.text and "expires in 0.5 s" in confirm.text
        time.sleep(0.8)
        ans, n = tap(bot_api, OWNER, confirm, button(confirm, "Yes, do it"))
        assert "Expired" in ans.params["text"]
        edit = bot_api.wait_call(lambda c: c.method == "editMessageText", after=n)
        assert edit.text.startswith("Expired: nothing was done")
        # cancel works and also does nothing
        confirm2 = ask(bot_api, OWNER, "/reset_risk")
        ans, n = tap(bot_api, OWNER, confirm2, button(confirm2, "Cancel"))
        assert bot_api.wait_call(lambda c: c.method == "editMessageText", after=n).text.startswith("Cancelled")
        time.sleep(0.3)
        assert responder.seen == [] and "BTCUSDT" in responder.positions
        # within the TTL, confirming runs it
        confirm3 = ask(bot_api, OWNER, "/reset_risk")
        ans, n = tap(bot_api, OWNER, confirm3, button(confirm3, "Yes, do it"))
        assert (
            "risk halt lifted"
            in bot_api.wait_call(lambda c: c.method == "sendMessage" and "Done" in c.text, after=n).text
        )
        assert [c.command for c in responder.seen] == ["risk_reset"]
    finally:
        stop_bot(svc)


def test_keys_in_chat_are_deleted_refused_and_not_logged(monkeypatch, bot_api, responder, amqp_url, caplog):
    svc = start_bot(monkeypatch, bot_api, amqp_url)
    try:
        caplog.set_level(logging.DEBUG)
        secret = "Xk29fLq8Zp3Rt7Vw1Ny4Bs6Hd0Jm5Gc2"
        for user, text in ((OWNER, f"api_key: {secret}"), (OWNER, secret), (STRANGER, f"/trade {secret}")):
            n = len(bot_api.calls)
            mid = bot_api.message(user, text)
            reply = bot_api.wait_call(lambda c, user=user: c.method == "sendMessage" and c.chat_id == user, after=n)
            assert "looked like an API key" in reply.text
            assert (user, mid) in bot_api.deleted
        assert secret not in caplog.text
        assert responder.seen == [] and svc.gateway.sent == 0
    finally:
        stop_bot(svc)


def test_a_silent_trader_times_out_and_never_executes_the_command_later(monkeypatch, bot_api, clean_control):
    from tests.tgbot.fakes.responder import PaperResponder

    svc = start_bot(monkeypatch, bot_api, clean_control, TELEGRAM_CONTROL_TIMEOUT_S="1")
    try:
        t0 = time.monotonic()
        reply = ask(bot_api, OWNER, "/pause BTCUSDT")
        elapsed = time.monotonic() - t0
        assert reply.text.startswith("Timed out") and "will NOT be executed later" in reply.text
        assert elapsed < 3.0
        # the trader comes back: the command is still queued, but past its deadline
        late = PaperResponder(clean_control).run()
        try:
            deadline = time.monotonic() + 5
            while not late.expired and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [c.command for c in late.expired] == ["pause"]
            assert late.seen == [] and late.paused == set()
            # and it still serves fresh commands
            assert "Mode: PAPER" in ask(bot_api, OWNER, "/status").text
        finally:
            late.close()
    finally:
        stop_bot(svc)
