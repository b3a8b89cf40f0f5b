"""The notifier over the real RabbitMQ (TEST_AMQP_URL), sending through real aiogram to the
local Bot API server: outages delay but lose nothing, order per chat holds, nothing is sent
twice (even across restarts), mute is honoured."""

from __future__ import annotations

import time
from typing import Iterator

import msgspec
import pytest

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.store import Store
from tests.notifier.events import round_trip
from tests.tgbot.fakes.bot_api import FakeBotAPI

pytestmark = pytest.mark.rabbitmq

BTC_CHAT, MAIN_CHAT = -100123, 456
# messages v1 carry money as float, v2 (the trader's branch) as Decimal: publish what the schema holds
FLOATS = next(f.type for f in msgspec.structs.fields(m.Fill) if f.name == "qty") is float
INTERVAL = 0.2


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
def publisher(amqp_url: str):
    bus = connect_bus(amqp_url, "trader").start()
    for q in ("notifier.events", "notifier.control", "notifier.heartbeats"):
        bus.purge(q)
    yield bus
    bus.close()


def start_notifier(monkeypatch, api: FakeBotAPI, amqp_url: str, store: Store, **extra: str):
    from depthpilot.settings import load_settings
    from notifier.service import NotifierService

    env = {
        "TELEGRAM_BOT_TOKEN": api.token,
        "TELEGRAM_API_BASE_URL": api.base_url,
        "AMQP_URL": amqp_url,
        "NOTIFY_ROUTES": f"BTCUSDT:{BTC_CHAT},*:{MAIN_CHAT}",
        "NOTIFY_PER_CHAT_INTERVAL_S": str(INTERVAL),
        "NOTIFY_DAILY_SUMMARY_UTC": "",
        "NOTIFY_RETRY_MAX_S": "0.4",
        "TELEGRAM_USERS": "1001",
        "NOTIFY_SERVICE_SILENT_S": "0",
        **extra,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bus = connect_bus(amqp_url, "notifier").start()
    return NotifierService(load_settings(), bus, store).start()


def stop_notifier(svc) -> None:
    t0 = time.monotonic()
    svc.stop()
    svc.bus.close()
    assert time.monotonic() - t0 < 8


def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def events() -> list[m.Message]:
    out: list[m.Message] = []
    out += round_trip("BTCUSDT", floats=FLOATS)
    out.append(m.Notification(level="warning", title="features lagging", text="3 s behind", source="features"))
    out += round_trip("ETHUSDT", entry="3000", exit_="2970", qty="1", exit_reason="stop", floats=FLOATS)
    out.append(
        m.RiskEvent(
            kind="daily_loss",
            severity="critical",
            source="trader",
            symbol="BTCUSDT",
            message="daily loss limit hit: entries halted",
        )
    )
    out.append(m.Notification(level="trade", source="trader", title="BTCUSDT long closed", text="dup of tracker"))
    return out


EXPECTED = {
    BTC_CHAT: [
        "🟢 OPEN LONG 0.01 BTCUSDT @ 50000",
        "✅ CLOSE LONG 0.01 BTCUSDT 50000 → 50600",
        "🚨 CRITICAL daily_loss",
    ],
    MAIN_CHAT: [
        "⚠️ features lagging",
        "🟢 OPEN LONG 1 ETHUSDT @ 3000",
        "🔻 CLOSE LONG 1 ETHUSDT 3000 → 2970",
        "🚨 CRITICAL daily_loss",
    ],
}


def delivered(api: FakeBotAPI) -> dict[int, list[str]]:
    return {chat: api.sent_to(chat) for chat in EXPECTED}


def check_exactly_once_in_order(api: FakeBotAPI) -> None:
    got = delivered(api)
    for chat, prefixes in EXPECTED.items():
        assert len(got[chat]) == len(prefixes), (chat, got[chat])
        for text, prefix in zip(got[chat], prefixes):
            assert text.startswith(prefix), (chat, text, prefix)


def test_outage_429_then_502_delays_but_loses_nothing_and_keeps_order(monkeypatch, bot_api, publisher, amqp_url, uid):
    store = Store.connect(f"mongomock://notifier-{uid}")
    bot_api.fail("sendMessage", 429, retry_after=1)
    bot_api.fail("sendMessage", 502, times=1)
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        evs = events()
        for e in evs[:6]:
            publisher.publish(e)
        bot_api.fail_for("sendMessage", 502, 1.5)  # a longer outage mid-stream
        for e in evs[6:]:
            publisher.publish(e)
        assert publisher.flush(10)
        wait_for(lambda: sum(map(len, delivered(bot_api).values())) >= 7)
        time.sleep(0.5)
        check_exactly_once_in_order(bot_api)
        failed = [c for c in bot_api.snapshot("sendMessage", ok_only=False) if not c.ok]
        assert len(failed) >= 3  # the 429, the 502 and at least one in the outage window
        close = next(t for t in bot_api.sent_to(BTC_CHAT) if "CLOSE" in t)
        assert "PnL +5.45 USDT after 0.55 fees" in close and "reason: trailing stop" in close
        eth = next(t for t in bot_api.sent_to(MAIN_CHAT) if "CLOSE" in t)
        assert "PnL -33.28 USDT after 3.28 fees" in eth and "reason: stop loss" in eth  # -30 - 1.65 - 1.6335
        # per-chat spacing held (429 window included)
        for chat in EXPECTED:
            ts = [c.ts for c in bot_api.snapshot("sendMessage") if c.chat_id == chat]
            assert all(b - a >= INTERVAL * 0.9 for a, b in zip(ts, ts[1:])), (chat, ts)
        assert svc.deliverer.stats.rate_limited == 1 and svc.deliverer.stats.retries >= 3
        wait_for(lambda: publisher.queue_depth("notifier.events") == 0, 5)
        assert publisher.get_dead_letters("notifier.events") == []
    finally:
        stop_notifier(svc)

    # a restarted notifier that gets the same events again (same ids) sends nothing new
    n_before = len(bot_api.snapshot("sendMessage"))
    svc2 = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        for e in evs:
            publisher.publish(e)
        assert publisher.flush(10)
        wait_for(lambda: publisher.queue_depth("notifier.events") == 0, 10)
        time.sleep(0.5)
        assert len(bot_api.snapshot("sendMessage")) == n_before
    finally:
        stop_notifier(svc2)


def test_stopping_mid_outage_requeues_and_the_next_instance_delivers(monkeypatch, bot_api, publisher, amqp_url, uid):
    store = Store.connect(f"mongomock://notifier-{uid}")
    bot_api.fail_for("sendMessage", 502, 60)
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        publisher.publish(m.Notification(id=f"n1-{uid}", level="error", title="first", source="t"))
        publisher.publish(m.Notification(id=f"n2-{uid}", level="error", title="second", source="t"))
        wait_for(lambda: len(bot_api.snapshot("sendMessage", ok_only=False)) >= 2)
    finally:
        stop_notifier(svc)  # blocked in the retry loop: interrupted, the message is requeued
    assert bot_api.sent_to(MAIN_CHAT) == []
    bot_api.fail_for("sendMessage", 502, 0)
    svc2 = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 2)
        time.sleep(0.4)
        assert bot_api.sent_to(MAIN_CHAT) == ["❗ first", "❗ second"]
    finally:
        stop_notifier(svc2)


def test_mute_is_honoured_but_critical_alerts_still_come(monkeypatch, bot_api, publisher, amqp_url, uid):
    store = Store.connect(f"mongomock://notifier-{uid}")
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        client = c.ControlClient(publisher, requested_by="telegram:1001", timeout_s=5)
        ack = client.call(c.MuteNotifications(chat_id=MAIN_CHAT, muted=True))
        assert "muted in chat 456" in ack.message
        publisher.publish(m.Notification(level="warning", title="muted one", source="t"))
        publisher.publish(m.RiskEvent(kind="kill_switch", severity="critical", source="trader", message="stop"))
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 1)  # both handled (in order) before unmuting
        client.call(c.MuteNotifications(chat_id=MAIN_CHAT, muted=False))
        publisher.publish(m.Notification(level="warning", title="after unmute", source="t"))
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 2)
        time.sleep(0.4)
        assert [t.split("\n")[0] for t in bot_api.sent_to(MAIN_CHAT)] == [
            "🚨 CRITICAL kill_switch from trader",
            "⚠️ after unmute",
        ]
        assert store.get_state("notifier.muted") == {"targets": []}
    finally:
        stop_notifier(svc)


def test_daily_summary_is_published_once_per_day(monkeypatch, bot_api, publisher, amqp_url, uid):
    from datetime import date

    store = Store.connect(f"mongomock://notifier-{uid}")
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        svc.send_daily_summary(date(2026, 3, 1), timeout_s=0.5)  # no trader answers: the summary says so
        svc.send_daily_summary(date(2026, 3, 1), timeout_s=0.5)  # same day again: same id, sent once
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 1, 25)
        time.sleep(0.5)
        texts = bot_api.sent_to(MAIN_CHAT)
        assert len(texts) == 1 and texts[0].startswith("📊 Daily summary 2026-03-01: the trader did not answer")
    finally:
        stop_notifier(svc)


def test_service_status_changes_are_reported(monkeypatch, bot_api, publisher, amqp_url, uid):
    store = Store.connect(f"mongomock://notifier-{uid}")
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store, NOTIFY_SERVICE_SILENT_S="1.5")
    try:
        publisher.publish(m.ServiceHeartbeat(service="trader", instance="t1", status="ok"))
        publisher.publish(m.ServiceHeartbeat(service="trader", instance="t1", status="degraded"))
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 2, 15)  # degraded, then silent (no more beats)
        texts = bot_api.sent_to(MAIN_CHAT)
        assert texts[0] == "❗ trader is DEGRADED (instance t1)" and texts[1].startswith("❗ trader SILENT")
        publisher.publish(m.ServiceHeartbeat(service="trader", instance="t1", status="ok"))
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 3, 10)
        assert bot_api.sent_to(MAIN_CHAT)[2] == "✅ trader is back (ok)"
    finally:
        stop_notifier(svc)


def test_a_chat_that_refuses_permanently_dead_letters_the_event_others_still_get_it(
    monkeypatch, bot_api, publisher, amqp_url, uid
):
    store = Store.connect(f"mongomock://notifier-{uid}")
    bot_api.fail("sendMessage", 400, description="Bad Request: chat not found")
    svc = start_notifier(monkeypatch, bot_api, amqp_url, store)
    try:
        # critical + BTCUSDT: both chats; the first send (BTC chat) is refused for good
        publisher.publish(m.RiskEvent(kind="kill_switch", severity="critical", source="trader", symbol="BTCUSDT"))
        publisher.publish(m.Notification(level="error", title="next", source="t"))
        wait_for(lambda: len(bot_api.sent_to(MAIN_CHAT)) >= 2)
        assert bot_api.sent_to(MAIN_CHAT)[0].startswith("🚨 CRITICAL kill_switch") and bot_api.sent_to(BTC_CHAT) == []
        dead: list = []
        wait_for(lambda: bool(dead.extend(publisher.get_dead_letters("notifier.events")) or dead), 5)
        assert "chat not found" in dead[0][1]["x-dlq-error"] and dead[0][1]["x-dlq-reason"] == "handler_error"
    finally:
        stop_notifier(svc)
