"""Bus semantics on the real RabbitMQ and on the in-memory bus (issue: foundation, must show 1-6)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from depthpilot import messages as m
from depthpilot.bus import RetryableError, connect_bus
from depthpilot.topology import MARKET_EXCHANGE, STATE_EXCHANGE, DeliveryClass, QueueDef

REPO = Path(__file__).resolve().parent.parent


def sample_messages() -> list[m.Message]:
    rng = np.random.default_rng(7)
    bids = np.column_stack([60000 - np.arange(250) * 0.1, rng.random(250)])
    asks = np.column_stack([60000.1 + np.arange(250) * 0.1, rng.random(250)])
    return [
        m.BookSnapshot(
            exchange="binance", symbol="BTCUSDT", ts_exchange=1, ts_recv=2, seq=3, bids=bids, asks=asks, depth=250
        ),
        m.Trade(
            exchange="binance",
            symbol="BTCUSDT",
            ts_exchange=1,
            ts_recv=2,
            price=60000.5,
            size=0.01,
            side=m.Side.SELL,
            trade_id="42",
        ),
        m.FeatureVector(
            exchange="binance",
            symbol="BTCUSDT",
            ts=5,
            spec_hash="abc123",
            values=rng.random(17),
            names=[f"f{i}" for i in range(17)],
        ),
        m.Signal(
            exchange="binance",
            symbol="BTCUSDT",
            ts=5,
            model_id="klines-default",
            classes=["down", "flat", "up"],
            probs=[0.2, 0.3, 0.5],
            score=0.3,
            expires_at=10**19,
        ),
        m.OrderIntent(client_order_id="c1", exchange="bybit", symbol="BTCUSDT", side=m.Side.BUY, qty=0.001),
        m.OrderUpdate(
            client_order_id="c1",
            exchange="bybit",
            symbol="BTCUSDT",
            status="filled",
            side=m.Side.BUY,
            qty=0.001,
            filled_qty=0.001,
            avg_price=60000.0,
        ),
        m.Fill(
            client_order_id="c1",
            exchange="bybit",
            symbol="BTCUSDT",
            side=m.Side.BUY,
            qty=0.001,
            price=60000.0,
            fee=0.033,
            fill_id="f1",
        ),
        m.PositionUpdate(exchange="bybit", symbol="BTCUSDT", qty=0.001, avg_price=60000.0),
        m.RiskEvent(kind="book_gap", exchange="binance", symbol="BTCUSDT", message="gap", data={"expected": 5}),
        m.ControlCommand(target="nobody", command="status"),
        m.ControlReply(correlation_id="x", source="trader", ok=True, result={"a": 1}),
        m.Notification(level="trade", title="Filled", text="bought"),
        m.ServiceHeartbeat(service="collector", instance="h:1", stats={"x": 1.0}),
    ]


def _plain(msg: m.Message) -> dict:
    d = m.to_builtins(msg)
    d.pop("trace")
    return d


def test_every_message_type_is_sampled() -> None:
    assert {type(x) for x in sample_messages()} == set(m.MESSAGE_TYPES)


def test_codec_errors_are_one_type() -> None:
    for bad in (
        b"",
        b"\x00\x01",
        b"not msgpack at all",
        msgspec.msgpack.encode({"type": "nope", "v": 1}),
        msgspec.msgpack.encode(
            {
                "type": "trade",
                "v": 99,
                "exchange": "x",
                "symbol": "y",
                "ts_exchange": 1,
                "ts_recv": 1,
                "price": 1.0,
                "size": 1.0,
                "side": "buy",
            }
        ),
    ):
        with pytest.raises(m.MessageDecodeError):
            m.decode(bad)
    for msg in sample_messages():
        assert _plain(m.decode(m.encode(msg))) == _plain(msg)
        assert _plain(m.from_json(m.to_json(msg))) == _plain(msg)


def _open(url: str, name: str, **kw):
    bus = connect_bus(url, name, **kw) if url.startswith("amqp") else connect_bus(url, name)
    return bus.start()


def _cleanup(bus, *queues: QueueDef) -> None:
    if hasattr(bus, "delete_queue"):
        for q in queues:
            bus.delete_queue(q)


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ------------------------------------------------------------------------------------ 1
def test_round_trip_every_message_type(bus_url: str, uid: str) -> None:
    qm = QueueDef(f"t.rt.market.{uid}", MARKET_EXCHANGE, ("#",), DeliveryClass.MARKET, max_length=1000)
    qs = QueueDef(f"t.rt.state.{uid}", STATE_EXCHANGE, ("#",), DeliveryClass.STATE, delivery_limit=5)
    bus = _open(bus_url, "test-rt")
    got: dict[str, m.Message] = {}
    try:
        bus.subscribe(qm, lambda msg, d: got.__setitem__(msg.id, msg))
        bus.subscribe(qs, lambda msg, d: got.__setitem__(msg.id, msg))
        time.sleep(0.3)
        sent = sample_messages()
        for msg in sent:
            fut = bus.publish(msg)
            if fut is not None:
                fut.result(5)
        assert _wait(lambda: len(got) >= len(sent)), f"received {len(got)}/{len(sent)}"
        for msg in sent:
            back = got[msg.id]
            assert type(back) is type(msg)
            assert _plain(back) == _plain(msg)
            assert (
                "published" in back.trace
                and f"recv.{qm.name if isinstance(msg, (m.BookSnapshot, m.Trade, m.FeatureVector, m.Signal, m.ServiceHeartbeat)) else qs.name}"
                in back.trace
            )
    finally:
        _cleanup(bus, qm, qs)
        bus.close()


# ------------------------------------------------------------------------------------ 2
def test_poison_messages_go_to_dlq_with_reason(bus_url: str, uid: str) -> None:
    q = QueueDef(f"t.poison.{uid}", STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    bus = _open(bus_url, "test-poison")
    handled: list[str] = []

    def handler(msg: m.Message, d) -> None:
        assert isinstance(msg, m.Notification)
        if msg.text == "explode":
            raise ValueError("cannot handle this one")
        handled.append(msg.text)

    try:
        bus.subscribe(q, handler)
        time.sleep(0.3)
        rk = f"notify.{uid}"
        bus.publish_raw(STATE_EXCHANGE, rk, b"\xff\x00 garbage").result(5)
        future_version = msgspec.msgpack.encode({"type": "notification", "v": 7, "id": "x", "trace": {}, "text": "v7"})
        bus.publish_raw(STATE_EXCHANGE, rk, future_version).result(5)
        bus.publish(m.Notification(text="explode"), routing_key=rk).result(5)
        bus.publish(m.Notification(text="good"), routing_key=rk).result(5)
        assert _wait(lambda: handled == ["good"])
        assert _wait(lambda: bus.stats.dead_lettered == 3)
        dead = bus.get_dead_letters(q.name)
        reasons = [(h["x-dlq-reason"], h["x-dlq-error"]) for _b, h in dead]
        assert [r for r, _ in reasons] == ["decode_error", "decode_error", "handler_error"]
        assert "unsupported schema version 7" in reasons[1][1]
        assert "ValueError: cannot handle this one" in reasons[2][1]
        assert dead[0][0] == b"\xff\x00 garbage"  # original bytes kept: nothing lost
        assert all(h["x-original-routing-key"] == rk and h["x-dlq-queue"] == q.name for _b, h in dead)
    finally:
        _cleanup(bus, q)
        bus.close()


def test_retryable_error_is_redelivered(bus_url: str, uid: str) -> None:
    q = QueueDef(f"t.retry.{uid}", STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    bus = _open(bus_url, "test-retry")
    attempts: list[bool] = []

    def handler(msg: m.Message, d) -> None:
        attempts.append(d.redelivered)
        if len(attempts) < 3:
            raise RetryableError("store briefly down")

    try:
        bus.subscribe(q, handler)
        time.sleep(0.3)
        bus.publish(m.Notification(text="x"), routing_key=f"notify.{uid}").result(5)
        assert _wait(lambda: len(attempts) == 3)
        assert attempts == [False, True, True]
        time.sleep(0.3)
        assert len(attempts) == 3 and bus.stats.dead_lettered == 0
    finally:
        _cleanup(bus, q)
        bus.close()


# ------------------------------------------------------------------------------------ 3
KILLER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[3])
from depthpilot.bus import connect_bus
from depthpilot.topology import QueueDef, DeliveryClass, STATE_EXCHANGE
q = QueueDef(sys.argv[2], STATE_EXCHANGE, ("notify." + sys.argv[2].split(".")[-1],), DeliveryClass.STATE, delivery_limit=5)
bus = connect_bus(sys.argv[1], "killer").start()
def handler(msg, d):
    print("got", msg.id, flush=True)
    os._exit(17)  # dies mid-message, before the ack
bus.subscribe(q, handler)
print("ready", flush=True)
time.sleep(30)
"""


@pytest.mark.rabbitmq
def test_consumer_killed_mid_message_redelivers(amqp_url: str, uid: str, tmp_path: Path) -> None:
    qname = f"t.kill.{uid}"
    q = QueueDef(qname, STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    bus = _open(amqp_url, "test-kill")
    try:
        bus.declare(q)
        proc = subprocess.Popen(
            [sys.executable, str(script), amqp_url, qname, str(REPO)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        msg = m.Notification(text="important")
        bus.publish(msg, routing_key=f"notify.{uid}").result(5)
        assert proc.wait(timeout=20) == 17
        got: list[tuple[str, bool]] = []
        bus.subscribe(q, lambda mm, d: got.append((mm.id, d.redelivered)))
        assert _wait(lambda: len(got) == 1, 15)
        assert got == [(msg.id, True)]
    finally:
        _cleanup(bus, q)
        bus.close()


# ------------------------------------------------------------------------------------ 4
@pytest.mark.rabbitmq
def test_slow_handler_keeps_connection(amqp_url: str, uid: str) -> None:
    heartbeat = 2
    q = QueueDef(f"t.slow.{uid}", STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    bus = connect_bus(amqp_url, "test-slow", heartbeat=heartbeat).start()
    done: list[str] = []

    def handler(msg: m.Message, d) -> None:
        if msg.text == "slow":
            time.sleep(3 * heartbeat + 0.5)
        done.append(msg.text)

    try:
        bus.subscribe(q, handler)
        time.sleep(0.3)
        bus.publish(m.Notification(text="slow"), routing_key=f"notify.{uid}").result(5)
        bus.publish(m.Notification(text="after"), routing_key=f"notify.{uid}").result(5)
        assert _wait(lambda: done == ["slow", "after"], 20)
        assert bus.stats.reconnects == 0
        assert _wait(lambda: bus.queue_depth(q.name) == 0, 5)
        time.sleep(1.0)
        assert bus.stats.consumed == 2, "a lost ack would have redelivered the slow message"
    finally:
        _cleanup(bus, q)
        bus.close()


# ------------------------------------------------------------------------------------ 5
# The broker-restart test runs on a RabbitMQ node of its own: tests/test_bus_resilience.py


# ------------------------------------------------------------------------------------ 6
def test_market_queue_is_bounded_for_a_stalled_consumer(bus_url: str, uid: str) -> None:
    bound = 100
    q = QueueDef(f"t.bounded.{uid}", MARKET_EXCHANGE, (f"trade.{uid}.*",), DeliveryClass.MARKET, max_length=bound)
    bus = _open(bus_url, "test-bounded", prefetch=5)
    release = threading.Event()
    seen: list[int] = []

    def stalled(msg: m.Message, d) -> None:
        release.wait(30)
        seen.append(int(msg.trade_id))

    try:
        bus.subscribe(q, stalled, prefetch=5)
        time.sleep(0.3)
        for i in range(2000):
            bus.publish(
                m.Trade(
                    exchange=uid,
                    symbol="BTCUSDT",
                    ts_exchange=i,
                    ts_recv=i,
                    price=1.0,
                    size=1.0,
                    side=m.Side.BUY,
                    trade_id=str(i),
                )
            )
        assert bus.flush(10)
        time.sleep(0.5)
        depth = bus.queue_depth(q.name)
        assert 0 < depth <= bound
        release.set()
        assert _wait(lambda: seen and seen[-1] == 1999, 10), "drop-head must keep the newest data"
        assert len(seen) <= bound + 5 + 1
    finally:
        release.set()
        _cleanup(bus, q)
        bus.close()
