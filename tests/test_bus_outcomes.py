"""Honest publish outcomes, close() accounting, rpc deadlines and stall detection, on both
buses where the semantics are shared."""

from __future__ import annotations

import logging
import threading
import time

import pika
import pytest

from depthpilot import messages as m
from depthpilot.bus import PublishNacked, PublishTimeout, RpcTimeout, Unroutable, connect_bus
from depthpilot.bus.base import expire_by
from depthpilot.bus.connection import backoff_delay
from depthpilot.bus.consumer import is_stalled
from depthpilot.topology import MARKET_EXCHANGE, STATE_EXCHANGE, DeliveryClass, QueueDef


def _open(url: str, name: str, **kw):
    return (connect_bus(url, name, **kw) if url.startswith("amqp") else connect_bus(url, name)).start()


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ------------------------------------------------------------------ pure logic
@pytest.mark.parametrize(
    "unacked,prefetch,idle,after,stalled",
    [
        (200, 200, 31.0, 30.0, True),
        (200, 200, 29.0, 30.0, False),  # at the limit, but not for long
        (199, 200, 999.0, 30.0, False),  # below the limit: a slow handler, not a stall
        (250, 200, 30.0, 30.0, True),
        (0, 0, 999.0, 30.0, False),  # prefetch 0 = unlimited: never "at the limit"
    ],
)
def test_is_stalled(unacked: int, prefetch: int, idle: float, after: float, stalled: bool) -> None:
    assert is_stalled(unacked, prefetch, idle, after) is stalled


def test_backoff_delay_doubles_caps_and_jitters() -> None:
    assert [backoff_delay(a, 2.0, 0.999999) for a in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    assert backoff_delay(3, 2.0, 0.0) == pytest.approx(0.4)
    assert backoff_delay(10_000, 2.0, 0.5) == pytest.approx(1.5)


def test_expire_by_sets_and_clamps_never_extends() -> None:
    cmd = m.ControlCommand(target="t", command="c")  # default: now + 30 s
    before = time.time_ns()
    expire_by(cmd, 2.0)
    assert before + 2e9 <= cmd.expires_at <= time.time_ns() + 2e9
    early = time.time_ns() + 500_000_000
    cmd.expires_at = early
    expire_by(cmd, 5.0)
    assert cmd.expires_at == early


# ------------------------------------------------------------------ both buses
def test_unroutable_state_message_fails_market_is_counted(bus_url: str, uid: str) -> None:
    bus = _open(bus_url, "test-unroutable")
    try:
        intent = m.OrderIntent(
            client_order_id=f"c{uid}", exchange="bybit", symbol="BTCUSDT", side=m.Side.BUY, qty=0.001
        )
        with pytest.raises(Unroutable) as err:
            bus.publish(intent, routing_key=f"nowhere.{uid}").result(10)
        assert err.value.routing_key == f"nowhere.{uid}" and err.value.message_id == intent.id
        fut = bus.publish(m.Notification(text="x"), routing_key=f"nowhere.{uid}")
        with pytest.raises(Unroutable):
            fut.result(10)
        assert bus.stats.unroutable == 2 and bus.stats.confirmed == 0
        assert [type(e) for e in bus.take_failures()] == [Unroutable, Unroutable] and bus.take_failures() == []
        assert bus.flush(5), "a failed publish is settled, not outstanding"
        # market class: dropped and counted (memory bus), never raised
        assert (
            bus.publish(
                m.Trade(exchange=f"x{uid}", symbol="S", ts_exchange=1, ts_recv=1, price=1.0, size=1.0, side=m.Side.BUY)
            )
            is None
        )
    finally:
        bus.close()
    if bus_url.startswith("memory"):
        assert bus.stats.market_unroutable == 1


def test_publish_and_wait_raises_unroutable(bus_url: str, uid: str) -> None:
    bus = _open(bus_url, "test-pw")
    q = QueueDef(f"t.pw.{uid}", STATE_EXCHANGE, (f"risk.*.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    try:
        bus.declare(q)
        bus.publish_and_wait(m.RiskEvent(kind=uid, message="routed"), timeout=10)  # risk.<sev>.<uid> has a queue
        with pytest.raises(Unroutable):
            bus.publish_and_wait(m.ControlCommand(target=f"ghost{uid}", command="x"), timeout=10)
    finally:
        if hasattr(bus, "delete_queue"):
            bus.delete_queue(q)
        bus.close()


def test_memory_market_overflow_is_counted(uid: str) -> None:
    from depthpilot.bus.memory import MemoryBroker

    MemoryBroker.reset(uid)
    bus = _open(f"memory://{uid}", "test-overflow")
    try:
        bus.declare(QueueDef(f"t.of.{uid}", MARKET_EXCHANGE, (f"trade.{uid}.*",), DeliveryClass.MARKET, max_length=10))
        for i in range(25):
            bus.publish(
                m.Trade(exchange=uid, symbol="S", ts_exchange=i, ts_recv=i, price=1.0, size=1.0, side=m.Side.BUY)
            )
        assert bus.stats.market_overflow == 15 and bus.stats.market_unroutable == 0
    finally:
        bus.close()


def test_rpc_clamps_expires_at_to_the_callers_timeout(bus_url: str, uid: str) -> None:
    bus = _open(bus_url, "test-rpc-exp")
    q = QueueDef(f"t.ctl.{uid}", STATE_EXCHANGE, (f"control.svc{uid}",), DeliveryClass.STATE, delivery_limit=5)
    seen: list[int] = []

    def server(cmd: m.Message, d):
        seen.append(cmd.expires_at)
        return m.ControlReply(correlation_id=cmd.correlation_id, source="svc", ok=True)

    try:
        bus.subscribe(q, server)
        time.sleep(0.3)
        cmd = m.ControlCommand(target=f"svc{uid}", command="status")
        assert cmd.expires_at > time.time_ns() + 20e9  # the message default is far away
        t0 = time.time_ns()
        assert bus.rpc(cmd, timeout=3).ok
        assert len(seen) == 1 and t0 < seen[0] <= t0 + 3e9 + 50e6, (seen, t0)
        t1 = time.monotonic()
        with pytest.raises(RpcTimeout, match="not delivered|no reply"):
            bus.rpc(m.ControlCommand(target=f"ghost{uid}", command="status"), timeout=5)
        assert time.monotonic() - t1 < 3, "an unroutable command fails fast instead of waiting the timeout out"
    finally:
        if hasattr(bus, "delete_queue"):
            bus.delete_queue(q)
        bus.close()


def test_memory_close_reports_zero(uid: str) -> None:
    assert connect_bus(f"memory://{uid}", "x").start().close() == 0


# ------------------------------------------------------------------ RabbitMQ only
@pytest.mark.rabbitmq
def test_nacked_publish_raises(amqp_url: str, uid: str) -> None:
    """A full ``reject-publish`` queue makes the broker nack: the publish fails with
    PublishNacked (it used to be re-published forever)."""
    name, rk = f"t.full.{uid}", f"full.{uid}"
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.exchange_declare(STATE_EXCHANGE, "topic", durable=True)
    ch.queue_declare(name, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_bind(name, STATE_EXCHANGE, routing_key=rk)
    bus = _open(amqp_url, "test-nack")
    try:
        bus.publish(m.Notification(text="fits"), routing_key=rk).result(10)
        with pytest.raises(PublishNacked) as err:
            bus.publish(m.Notification(text="does not fit"), routing_key=rk).result(10)
        assert err.value.routing_key == rk
        assert bus.stats.nacked == 1 and bus.stats.confirmed == 1
    finally:
        ch.queue_delete(name)
        conn.close()
        bus.close()


@pytest.mark.rabbitmq
def test_close_reports_unconfirmed_messages(caplog: pytest.LogCaptureFixture) -> None:
    """Broker away: state messages wait in the buffer; close() gives up after its timeout,
    says how many were never confirmed (log + return value) and fails their futures."""
    from tests.rabbit_admin import free_port

    caplog.set_level(logging.INFO)
    bus = connect_bus(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", "test-close", reconnect_max_delay=0.2)
    bus.start(wait=None)
    futs = [bus.publish(m.Notification(text=str(i)), routing_key="notify.info") for i in range(3)]
    assert (
        bus.publish(m.Trade(exchange="b", symbol="S", ts_exchange=1, ts_recv=1, price=1.0, size=1.0, side=m.Side.BUY))
        is None
    )
    t0 = time.monotonic()
    assert bus.close(timeout=0.5) == 3
    assert time.monotonic() - t0 < 5
    assert bus.stats.unconfirmed_at_close == 3 and bus.stats.market_dropped == 1
    for f in futs:
        with pytest.raises(PublishTimeout):
            f.result(0)
    assert any(r.levelno == logging.ERROR and "3 state messages" in r.getMessage() for r in caplog.records)
    assert any("attempt 1 failed, next in" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], "connection refused is expected: no traceback"


@pytest.mark.rabbitmq
def test_stall_at_prefetch_limit_is_detected(amqp_url: str, uid: str, caplog: pytest.LogCaptureFixture) -> None:
    """A consumer at its prefetch limit with no ack going out is reported (WARNING, stats,
    health_problems()) and recovers when acks flow again."""
    q = QueueDef(f"t.stall.{uid}", STATE_EXCHANGE, (f"t.stall.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    bus = connect_bus(amqp_url, "test-stall", prefetch=3, stall_after=0.5).start()
    release = threading.Event()
    done: list[str] = []

    def handler(msg: m.Message, d) -> None:
        release.wait(30)
        done.append(msg.id)

    try:
        bus.subscribe(q, handler)
        for i in range(6):
            bus.publish(m.Notification(text=str(i)), routing_key=f"t.stall.{uid}")
        assert bus.flush(10)
        assert _wait(lambda: bus.stats.consumers_stalled == 1, 10), bus.stats
        problems = bus.health_problems()
        assert len(problems) == 1 and q.name in problems[0] and "stalled" in problems[0]
        assert bus.stats.consumer_stalls == 1
        assert any(r.levelno == logging.WARNING and "stalled" in r.getMessage() for r in caplog.records)
        release.set()
        assert _wait(lambda: len(done) == 6, 10)
        assert _wait(lambda: bus.health_problems() == [], 5)
        assert bus.stats.consumers_stalled == 0 and bus.stats.consumer_stalls == 1
    finally:
        release.set()
        bus.delete_queue(q)
        bus.close()


def test_memory_bus_health_is_fine_by_default(uid: str) -> None:
    bus = connect_bus(f"memory://{uid}", "x").start()
    try:
        assert bus.health_problems() == []
    finally:
        bus.close()


def test_cancelled_subscription_consumes_nothing(bus_url: str, uid: str) -> None:
    q = QueueDef(f"t.cancel.{uid}", STATE_EXCHANGE, (f"t.cancel.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    bus = _open(bus_url, "test-cancel")
    got: list[str] = []
    try:
        sub = bus.subscribe(q, lambda msg, d: got.append(msg.id))
        bus.publish(m.Notification(text="before"), routing_key=f"t.cancel.{uid}").result(10)
        assert _wait(lambda: len(got) == 1, 10)
        sub.cancel()
        bus.publish(m.Notification(text="after"), routing_key=f"t.cancel.{uid}").result(10)
        time.sleep(0.5)
        assert len(got) == 1 and bus.queue_depth(q.name) == 1
    finally:
        if hasattr(bus, "delete_queue"):
            bus.delete_queue(q)
        bus.close()
