"""Pure tgbot logic: allow-list and roles, the key guard, command parsing, confirmations,
reply rendering."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from depthpilot import control as c
from depthpilot import messages as m
from tgbot import render
from tgbot.auth import Access, AccessConfigError, looks_like_secret, parse_users
from tgbot.commands import parse, split_command
from tgbot.confirm import Confirmations


def test_parse_users_roles_and_errors():
    assert parse_users("123:trader, 456:viewer,789") == {123: "trader", 456: "viewer", 789: "trader"}
    assert parse_users("") == {} and parse_users(None) == {}
    assert parse_users("5:VIEWER") == {5: "viewer"}
    for bad, word in (("abc", "'abc'"), ("12:admin", "role must be"), ("-100:trader", "positive")):
        with pytest.raises(AccessConfigError, match=word):
            parse_users(bad)


@pytest.mark.parametrize(
    "user,chat,ctype,needs,ok,why",
    [
        (1, 1, "private", "trader", True, ""),
        (2, 2, "private", "viewer", True, ""),
        (2, 2, "private", "trader", False, "your role is viewer"),
        (3, 3, "private", "viewer", False, "allow-list"),
        (None, -5, "channel", "viewer", False, "allow-list"),
        (1, -10, "supergroup", "trader", True, ""),
        (1, -11, "supergroup", "viewer", False, "chat is not allowed"),
        (3, -10, "supergroup", "viewer", False, "allow-list"),  # an allowed group does not allow its members
        (1, 2, "private", "viewer", False, "does not belong"),
    ],
)
def test_access_matrix(user, chat, ctype, needs, ok, why):
    a = Access({1: "trader", 2: "viewer"}, frozenset({-10}))
    d = a.check(user, chat, ctype, needs)
    assert d.ok is ok and why in d.reason


@pytest.mark.parametrize(
    "text",
    [
        "api_key: abc",
        "API KEY = whatever",
        "my secret key: x",
        "Xk29fLq8Zp3Rt7Vw1Ny4",
        "here 8f4c2a9e1b7d3f6a0c5e9b2d4f8a1c7e",
        "-----BEGIN EC PRIVATE KEY-----",
        "123456789:" + "AAHk4fJ2lQ9mZ8xW3vR7" + "tY1uI0oP6aS5dFg",  # bot-token shaped, built so scanners skip it
        "passphrase=hunter2",
    ],
)
def test_secrets_are_recognised(text):
    assert looks_like_secret(text)


@pytest.mark.parametrize(
    "text",
    [
        "/trade BTCUSDT 3",
        "/status",
        "/pnl 7d",
        "hello there, how is the market",
        "BTCUSDT ETHUSDT SOLUSDT",
        "/set max_position_usd 1500",
        "1000000000 2000000",
        "",
        None,
        "/stop all",
        "trailing_lock_fraction",
    ],
)
def test_ordinary_text_is_not_a_secret(text):
    assert not looks_like_secret(text)


def test_parse_every_command():
    P = lambda t, mode="paper": parse(t, chat_id=42, mode=mode, bot_username="MyBot")  # noqa: E731
    assert P("hello") is None and P("/status@OtherBot") is None
    assert isinstance(P("/status@MyBot").request, c.Status)
    assert P("/start").local == "help" and P("/help").local == "help"
    assert P("/positions").request == c.Positions() and P("/balance").request == c.Balance()
    assert P("/risk").request == c.RiskLimits()
    assert P("/pnl").request == c.Pnl(period="today") and P("/pnl ALL").request == c.Pnl(period="all")
    assert "period must be" in P("/pnl month").error
    assert P("/trades").request == c.RecentTrades(n=10) and P("/trades 3").request == c.RecentTrades(n=3)
    assert "between 1 and 50" in P("/trades 500").error and "whole number" in P("/trades x").error
    t = P("/trade btcusdt 5")
    assert t.request == c.StartTrading(symbol="BTCUSDT", n_trades=5) and t.confirm == "" and t.needs == "trader"
    assert P("/trade btcusdt", mode="live").confirm == "yes"
    assert "usage" in P("/trade").error and "not a symbol" in P("/trade all").error
    assert "not a symbol" in P("/trade $$$").error
    s = P("/stop")
    assert s.request == c.StopTrading(symbol="all") and s.confirm == "stop"
    assert P("/stop ethusdt").request == c.StopTrading(symbol="ETHUSDT")
    f = P("/flatten")
    assert f.request == c.Flatten(symbol="all") and f.confirm == "yes" and f.request.DANGEROUS
    assert P("/pause BTCUSDT").request == c.PauseEntries(symbol="BTCUSDT")
    assert P("/resume").request == c.ResumeEntries(symbol="all") and P("/resume").confirm == ""
    r = P("/reset_risk")
    assert r.request == c.ResetRisk() and r.confirm == "yes"
    assert P("/set a 1").request == c.SetParameter(name="a", value="1") and "usage" in P("/set a").error
    assert P("/mute").request == c.MuteNotifications(chat_id=42, muted=True) and P("/mute").needs == "viewer"
    assert P("/unmute").request == c.MuteNotifications(chat_id=42, muted=False)
    assert "unknown command /frobnicate" in P("/frobnicate").error
    assert split_command("/Stop@MyBot x y", "mybot") == ("stop", ["x", "y"])


def test_every_dangerous_request_is_confirmed():
    for text in ("/flatten", "/reset_risk", "/stop"):
        p = parse(text, chat_id=1)
        assert p.confirm, text
    for req_type in c.REQUESTS:
        if req_type.DANGEROUS:
            assert any(
                parse(t, chat_id=1).request.__class__ is req_type and parse(t, chat_id=1).confirm
                for t in ("/flatten", "/reset_risk")
            ), req_type


def test_confirmations_expire_belong_to_their_user_and_are_used_once():
    now = [100.0]
    cf = Confirmations(ttl_s=30, clock=lambda: now[0])
    p = cf.add(1, 1, "flatten")
    assert cf.take(p.token, 2) == ("wrong_user", None)
    assert cf.take(p.token, 1) == ("ok", p)
    assert cf.take(p.token, 1) == ("unknown", None)
    p2 = cf.add(1, 1, "reset")
    now[0] += 30.0
    assert cf.take(p2.token, 1)[0] == "expired"
    p3 = cf.add(1, 1, "x")
    assert not cf.cancel(p3.token, 2) and cf.cancel(p3.token, 1) and cf.take(p3.token, 1)[0] == "unknown"
    p4 = cf.add(1, 1, "y")
    now[0] += 10_000  # long-expired entries are eventually forgotten
    cf.add(1, 1, "z")
    assert cf.take(p4.token, 1)[0] == "unknown" and len(cf) == 1


def test_rendering():
    st = c.StatusReply(
        mode="live",
        halted=True,
        halt_reason="daily loss",
        model_id="book-default",
        symbols=[
            c.SymbolStatus(
                symbol="BTCUSDT",
                exchange="bybit",
                trading=True,
                paused=False,
                trades_left=2,
                last_signal="up",
                last_score=0.4,
                book_ok=False,
                book_reason="stale",
            )
        ],
    )
    text = render.render(st)
    assert "Mode: LIVE  HALTED: daily loss" in text and "BTCUSDT@bybit: trading (2 trades left)" in text
    assert "book NOT ok (stale)" in text and "signal up +0.40" in text and "book-default" in text
    pos = c.PositionsReply(
        positions=[
            c.PositionView(
                exchange="bybit",
                symbol="ETHUSDT",
                qty=D("-1.5"),
                avg_price=D("3000.10"),
                unrealized_pnl=D("-12.345"),
                stop_price=D("3100"),
            ),
            c.PositionView(exchange="bybit", symbol="BTCUSDT", qty=D("0"), avg_price=D("1")),
        ]
    )
    assert render.render(pos) == "Open positions:\nETHUSDT SHORT 1.5 @ 3000.1, uPnL -12.35, stop 3100"
    assert render.render(c.PositionsReply()) == "No open positions."
    pnl = c.PnlReply(period="7d", since_ts=0, realized=D("12.5"), fees=D("1.25"), unrealized=D("0"), trades=4, wins=3)
    assert "realized +12.50 USDT after 1.25 fees" in render.render(pnl) and "3/4 won" in render.render(pnl)
    bal = c.BalanceReply(mode="paper", currency="USDT", equity=D("10234.5"), available=D("9000"))
    assert render.render(bal) == "Balance (paper): equity 10,234.50 USDT, available 9,000.00 USDT"
    tr = c.TradesReply(
        trades=[
            c.TradeView(
                exchange="bybit",
                symbol="BTCUSDT",
                side="long",
                qty=D("0.01"),
                entry_price=D("50000"),
                exit_price=D("50500"),
                entry_ts=1,
                exit_ts=1,
                pnl=D("4.45"),
                fees=D("0.55"),
                exit_reason="trailing_stop",
            )
        ]
    )
    assert "BTCUSDT long 0.01 50000 -> 50500: +4.45 after 0.55 fees (trailing_stop)" in render.render(tr)
    risk = c.RiskReply(
        limits={"daily_loss_usd": "100"}, usage={"daily_loss_usd": "42.5", "open_orders": "1"}, halted=False
    )
    assert render.render(risk) == "Risk: ok\ndaily_loss_usd: 42.5 / 100\nopen_orders: 1"
    # a limit nothing measures is shown as the limit alone, not as "- / limit"
    bare = c.RiskReply(
        limits={"leverage": "3", "daily_loss_limit": "100"},
        usage={"daily_loss_limit": "0"},
        halted=True,
        halt_reason="daily_loss",
    )
    assert render.render(bare) == "Risk  HALTED: daily_loss\nleverage: 3\ndaily_loss_limit: 0 / 100"
    assert render.render(c.Ack(message="x")) == "Done: x"
    assert "within 2 s" in render.render_timeout(c.Flatten(), 2) and "NOT be executed" in render.render_timeout(
        c.Flatten(), 2
    )


def test_without_a_token_the_service_idles_and_says_so(monkeypatch, uid):
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings
    from tgbot.service import TgbotService

    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    MemoryBroker.reset(uid)
    bus = connect_bus(f"memory://{uid}", "tgbot").start()
    svc = TgbotService(load_settings(), bus).start()
    try:
        client = connect_bus(f"memory://{uid}", "cli").start()
        reply = client.rpc(m.ControlCommand(target="tgbot", command="status"), timeout=5)
        assert reply.ok and "TELEGRAM_BOT_TOKEN is not set" in reply.result["telegram"]
        assert svc.stats() == {}
    finally:
        svc.stop()
        bus.close()
