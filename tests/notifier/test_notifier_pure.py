"""Pure notifier logic: trade messages with PnL after fees, routing, rate limits, retries."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal as D

import pytest

from depthpilot import control as c
from depthpilot import messages as m
from notifier.delivery import (
    Backoff,
    Deliverer,
    DeliveryError,
    DeliveryInterrupted,
    PermanentDeliveryError,
    RateLimiter,
)
from notifier.format import (
    RiskThrottle,
    TradeTracker,
    format_daily_summary,
    format_notification,
    format_risk,
    next_daily_run,
)
from notifier.routing import Routes, RoutesError
from tests.notifier.events import round_trip


def _run(tracker: TradeTracker, events):
    return [o for e in events for o in tracker.on_event(e)]


@pytest.mark.parametrize("floats", [False, True])
def test_round_trip_open_and_close_with_pnl_after_fees(floats):
    outs = _run(TradeTracker(), round_trip(floats=floats))
    assert [o.key.rsplit(":", 1)[1] for o in outs] == ["open", "close"]
    assert outs[0].text == ("🟢 OPEN LONG 0.01 BTCUSDT @ 50000 [paper, bybit]\nreason: signal · stop 49500")
    # (50600 - 50000) * 0.01 = 6.00 gross; fees 0.275 + 0.2783 = 0.5533; net 5.4467
    assert outs[1].text == (
        "✅ CLOSE LONG 0.01 BTCUSDT 50000 → 50600 [paper, bybit]\n"
        "PnL +5.45 USDT after 0.55 fees (+1.09%) · reason: trailing stop"
    )
    assert all(o.level == "trade" and o.symbol == "BTCUSDT" for o in outs)


def test_losing_short_with_partial_fills_and_stop_reason():
    ex, s = "bybit", "ETHUSDT"
    ev = [
        m.OrderUpdate(
            client_order_id="a", exchange=ex, symbol=s, status="accepted", side=m.Side.SELL, qty=D(2), reason="signal"
        ),
        m.Fill(client_order_id="a", exchange=ex, symbol=s, side=m.Side.SELL, qty=D(1), price=D(3000), fee=D("0.5")),
        m.Fill(client_order_id="a", exchange=ex, symbol=s, side=m.Side.SELL, qty=D(1), price=D(3002), fee=D("0.5")),
        m.PositionUpdate(exchange=ex, symbol=s, qty=D(-2), avg_price=D(3001), fees_paid=D(1)),
        m.OrderUpdate(
            client_order_id="b", exchange=ex, symbol=s, status="accepted", side=m.Side.BUY, qty=D(2), reason="stop"
        ),
        m.Fill(client_order_id="b", exchange=ex, symbol=s, side=m.Side.BUY, qty=D(2), price=D(3031), fee=D("1.25")),
        m.PositionUpdate(exchange=ex, symbol=s, qty=D(0), avg_price=D(0), realized_pnl=D(-60), fees_paid=D("2.25")),
    ]
    outs = _run(TradeTracker(), ev)
    assert outs[0].text.startswith("🟢 OPEN SHORT 2 ETHUSDT @ 3001")
    assert outs[1].text == (
        "🔻 CLOSE SHORT 2 ETHUSDT 3001 → 3031 [paper, bybit]\n"
        "PnL -62.25 USDT after 2.25 fees (-1.04%) · reason: stop loss"
    )


def test_close_without_fills_falls_back_to_position_figures_and_survives_a_restart():
    ev = round_trip()
    t = TradeTracker()
    first = _run(t, ev[:4])  # open seen, then the notifier restarts
    assert len(first) == 1
    t2 = TradeTracker.from_dict(t.to_dict())
    # fills of the exit lost (e.g. published before the notifier subscribed): position figures
    outs = _run(t2, [e for e in ev[4:] if not isinstance(e, m.Fill)])
    assert len(outs) == 1 and "PnL +5.45 USDT after 0.55 fees" in outs[0].text and "→ ?" in outs[0].text
    # with state persisted, a restarted tracker still computes the exact close
    t3 = TradeTracker.from_dict(t.to_dict())
    outs = _run(t3, ev[4:])
    assert "50000 → 50600" in outs[0].text and "+5.45" in outs[0].text


def test_flip_closes_and_opens():
    ex, s = "bybit", "BTCUSDT"
    ev = [
        m.Fill(client_order_id="a", exchange=ex, symbol=s, side=m.Side.BUY, qty=D(1), price=D(100), fee=D("0.1")),
        m.PositionUpdate(exchange=ex, symbol=s, qty=D(1), avg_price=D(100), fees_paid=D("0.1")),
        m.Fill(client_order_id="b", exchange=ex, symbol=s, side=m.Side.SELL, qty=D(2), price=D(110), fee=D("0.2")),
        m.PositionUpdate(exchange=ex, symbol=s, qty=D(-1), avg_price=D(110), realized_pnl=D(10), fees_paid=D("0.3")),
    ]
    outs = _run(TradeTracker(), ev)
    assert [o.text.split()[1] for o in outs] == ["OPEN", "CLOSE", "OPEN"]
    assert "PnL +9.80 USDT after 0.20 fees" in outs[1].text  # 10 - 0.1 entry - 0.1 (half the flip fill's fee)
    assert outs[2].text.startswith("🟢 OPEN SHORT 1 BTCUSDT @ 110")


def test_rejected_order_is_an_error_and_other_messages():
    u = m.OrderUpdate(
        client_order_id="x",
        exchange="bybit",
        symbol="BTCUSDT",
        status="rejected",
        side=m.Side.BUY,
        qty=D("0.5"),
        reason="insufficient margin",
    )
    (o,) = TradeTracker().on_event(u)
    assert o.level == "error" and o.text == "❗ ORDER REJECTED BUY 0.5 BTCUSDT on bybit: insufficient margin"
    r = format_risk(m.RiskEvent(kind="daily_loss", severity="critical", source="trader", message="halted"))
    assert r.level == "critical" and r.text == "🚨 CRITICAL daily_loss from trader\nhalted"
    n = format_notification(m.Notification(level="error", title="predictor down", text="no model"))
    assert n.text == "❗ predictor down\nno model" and n.level == "error"


def test_risk_throttle():
    th = RiskThrottle(window_s=300)
    e = lambda ts, sev="warning", kind="book_gap": m.RiskEvent(kind=kind, severity=sev, ts=ts, symbol="BTCUSDT")  # noqa
    assert th.allow(e(0)) and not th.allow(e(10**9)) and th.allow(e(301 * 10**9))
    assert th.allow(e(10**9, kind="feed_stale")) and not th.allow(e(0, sev="info")) and th.allow(e(5, sev="critical"))


def test_daily_summary_and_schedule():
    pnl = c.PnlReply(
        period="today", since_ts=0, realized=D("12.345"), fees=D("1.2"), unrealized=D("-3"), trades=3, wins=2
    )
    assert format_daily_summary(date(2026, 1, 2), pnl) == (
        "📊 Daily summary 2026-01-02\nrealized +12.35 USDT after 1.20 fees · unrealized -3.00\n3 trades, 2/3 won"
    )
    assert "did not answer (timeout)" in format_daily_summary(date(2026, 1, 2), None, "timeout")
    now = datetime(2026, 1, 2, 23, 55, tzinfo=timezone.utc)
    assert next_daily_run(now, "23:55") == datetime(2026, 1, 3, 23, 55, tzinfo=timezone.utc)
    assert next_daily_run(now, "23:56") == datetime(2026, 1, 2, 23, 56, tzinfo=timezone.utc)
    assert next_daily_run(now, "00:00") == datetime(2026, 1, 3, 0, 0, tzinfo=timezone.utc)


def test_routes():
    r = Routes.parse("BTCUSDT:-100123,btcusdt:webhook,*:456", default_chats=[1, 2])
    assert r.targets("BTCUSDT") == ("telegram:-100123", "webhook")
    assert r.targets("ETHUSDT") == ("telegram:456",) and r.targets("") == ("telegram:456",)
    assert r.targets("BTCUSDT", "critical") == ("telegram:-100123", "webhook", "telegram:456")
    assert Routes.parse("", [1, 2]).targets("X") == ("telegram:1", "telegram:2")
    assert Routes.parse("BTCUSDT:7", [1]).targets("ETHUSDT") == ("telegram:1",)
    assert Routes.parse("BTC/USDT:USDT:-5", []).targets("BTC/USDT:USDT") == ("telegram:-5",)
    for bad in ("BTCUSDT", "BTCUSDT:abc", "$$:1"):
        with pytest.raises(RoutesError):
            Routes.parse(bad)


class FakeChannel:
    def __init__(self, script):
        self.script = list(script)  # DeliveryError instances or None (= accepted)
        self.sent = []

    def send(self, target, text):
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        self.sent.append((target, text))


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(round(s, 3))
        self.t += s
        return False


def test_deliverer_retries_honours_retry_after_and_backs_off():
    clock = FakeClock()
    ch = FakeChannel(
        [DeliveryError("429", retry_after=7), DeliveryError("502"), DeliveryError("502"), DeliveryError("net")]
    )
    d = Deliverer({"telegram": ch}, RateLimiter(1.0, 30.0), Backoff(0.5, 2.0, 1.5), clock=clock, sleep=clock.sleep)
    assert d.deliver("telegram:1", "hi") == 5
    assert clock.sleeps == [7.0, 0.5, 1.0, 1.5]  # retry_after exact, then 0.5, 1, capped at 1.5
    assert ch.sent == [("telegram:1", "hi")] and d.stats.rate_limited == 1 and d.stats.retries == 4


def test_rate_limits_per_chat_and_global():
    clock = FakeClock()
    ch = FakeChannel([])
    d = Deliverer({"telegram": ch}, RateLimiter(1.0, 4.0), clock=clock, sleep=clock.sleep)
    for target in ("telegram:1", "telegram:1", "telegram:2", "telegram:3"):
        d.deliver(target, "x")
    # second message to chat 1 waits 1 s; the others are spaced by the global 0.25 s
    assert clock.sleeps == [1.0, 0.25, 0.25]


def test_permanent_errors_and_interruption():
    clock = FakeClock()
    d = Deliverer(
        {"telegram": FakeChannel([DeliveryError("chat not found", permanent=True)])}, clock=clock, sleep=clock.sleep
    )
    with pytest.raises(PermanentDeliveryError, match="chat not found"):
        d.deliver("telegram:1", "x")
    with pytest.raises(PermanentDeliveryError, match="no 'webhook' channel"):
        d.deliver("webhook", "x")
    d2 = Deliverer({"telegram": FakeChannel([DeliveryError("502")] * 100)}, sleep=lambda s: True)
    with pytest.raises(DeliveryInterrupted):
        d2.deliver("telegram:1", "x")


def test_service_watch():
    from notifier.watch import ServiceWatch

    w = ServiceWatch(silent_after_s=30, ignore=("notifier",))
    hb = lambda svc, status, ts: m.ServiceHeartbeat(service=svc, instance="i", status=status, ts=ts)  # noqa: E731
    s = 10**9
    assert w.on_heartbeat(hb("trader", "ok", 0)) == [] and w.on_heartbeat(hb("notifier", "ok", 0)) == []
    (a,) = w.on_heartbeat(hb("trader", "degraded", 5 * s))
    assert a.level == "error" and "trader is DEGRADED" in a.text
    assert a.text == "trader is DEGRADED (instance i)"  # no reason given, none invented
    assert "recovered" in w.on_heartbeat(hb("trader", "ok", 10 * s))[0].text
    assert w.check(40 * s) == []
    (silent,) = w.check(41 * s)
    assert "trader SILENT: no heartbeat for 31 s" in silent.text and w.check(60 * s) == []
    assert "trader is back" in w.on_heartbeat(hb("trader", "ok", 70 * s))[0].text
    w2 = ServiceWatch(silent_after_s=30)
    w2.on_heartbeat(hb("trader", "ok", 10 * s))
    why = m.ServiceHeartbeat(
        service="trader", instance="i", status="degraded", ts=11 * s, problems=["bybit: 10006 rate limit", "book stale"]
    )
    (b,) = w2.on_heartbeat(why)  # the user reads why, not only that
    assert b.text == "trader is DEGRADED (instance i): bybit: 10006 rate limit; book stale"
    w2.on_heartbeat(hb("trader", "ok", 12 * s))
    (c,) = w2.on_heartbeat(
        m.ServiceHeartbeat(service="trader", instance="i", status="degraded", ts=13 * s, problems=["x" * 1000])
    )
    assert c.text.endswith("x…") and len(c.text) < 460
