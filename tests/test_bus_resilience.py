"""The RabbitMQ bus across broker outages, on a RabbitMQ node of the test session's own
(``own_rabbit``): stopping it never touches the shared broker.

``BUS_RESTART_ROUNDS=50`` repeats the restart test 50 times in one session (one node start);
see the bus section of README.md for the soak recipe beside CPU burners.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.topology import STATE_EXCHANGE, DeliveryClass, QueueDef

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

ROUNDS = int(os.environ.get("BUS_RESTART_ROUNDS", "1"))


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _nothing_left(bus, consumer, queue: str) -> bool:
    """Close the consumer (its unacked messages go back to ready), then the queue must be
    empty: every message was acked. Asked over AMQP: the Erlang CLI is slow on a busy box."""
    consumer.close()
    return _wait(lambda: bus.queue_depth(queue) == 0, 10)


def _outage(node, buses, down_s: float = 1.0, before_start=None) -> None:
    node.ctl("stop_app")
    assert _wait(lambda: not any(b.connected for b in buses), 15), "buses did not notice the broker stop"
    time.sleep(down_s)
    if before_start is not None:
        before_start()
    node.ctl("start_app")


def _bus_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("depthpilot.bus", "pika"))]


def _assert_quiet_outage(caplog: pytest.LogCaptureFixture, services: list[str]) -> None:
    """No traceback anywhere; exactly one "reconnected" line per connection."""
    recs = _bus_records(caplog)
    with_tb = [r.getMessage() for r in recs if r.exc_info or r.exc_text]
    assert not with_tb, f"tracebacks logged during a plain outage: {with_tb}"
    for svc in services:
        lines = [r for r in recs if r.getMessage().startswith(f"{svc}: reconnected to RabbitMQ")]
        assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in lines]
    assert not [r for r in recs if r.name.startswith("pika") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_broker_restart_loses_nothing(own_rabbit, round_: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    n = 5000
    uid = f"{os.getpid()}x{round_}"
    q = QueueDef(f"t.restart.{uid}", STATE_EXCHANGE, (f"t.restart.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    pub = connect_bus(own_rabbit.url, "test-restart-pub").start()
    con = connect_bus(own_rabbit.url, "test-restart-con").start()
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def handler(msg: m.Message, d) -> None:
        with lock:
            counts[msg.id] = counts.get(msg.id, 0) + 1

    sent: list[str] = []
    try:
        con.subscribe(q, handler)
        assert _wait(lambda: all(s.consuming.is_set() for s in con._subs), 10)

        def producer() -> None:
            for i in range(n):
                msg = m.Notification(text=str(i))
                sent.append(msg.id)
                pub.publish(msg, routing_key=f"t.restart.{uid}")
                if i % 50 == 0:
                    time.sleep(0.02)  # a stream lasting a few seconds, not one burst

        t = threading.Thread(target=producer)
        t.start()
        assert _wait(lambda: len(sent) > 1000, 20)
        _outage(own_rabbit, [pub, con])
        restarted = time.monotonic()
        assert _wait(lambda: pub.connected, 15), "publisher did not reconnect within 15 s"
        assert _wait(lambda: con.connected, 15), "consumer did not reconnect within 15 s"
        assert time.monotonic() - restarted <= 15.5
        t.join(60)
        assert pub.flush(60), "publisher still holds unconfirmed messages"
        assert _wait(lambda: len(counts) == n, 60), f"consumed {len(counts)}/{n}"
        time.sleep(1.0)
        assert set(counts) == set(sent)
        assert max(counts.values()) == 1, "a message was handled twice"
        assert pub.stats.reconnects == 1 and con.stats.reconnects == 1
        assert con.health_problems() == [] and pub.health_problems() == []
        assert _nothing_left(pub, con, q.name), f"{pub.queue_depth(q.name)} messages left unacked or ready"
        _assert_quiet_outage(caplog, ["test-restart-pub", "test-restart-con"])
    finally:
        pub.delete_queue(q) if pub.connected else None
        assert pub.close() == 0
        con.close()


def test_settle_scheduled_during_outage_still_acks_everything(own_rabbit, caplog: pytest.LogCaptureFixture) -> None:
    """The handler is held across the outage, so its ack is handed to the I/O thread while
    the connection is gone/closing; after the reconnect every message must be acked (the
    old code never queued a settle again: stuck at the prefetch limit, ``consumed 20/200``)."""
    caplog.set_level(logging.INFO)
    n, prefetch = 200, 20
    uid = f"{os.getpid()}h"
    q = QueueDef(f"t.held.{uid}", STATE_EXCHANGE, (f"t.held.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    pub = connect_bus(own_rabbit.url, "test-held-pub").start()
    con = connect_bus(own_rabbit.url, "test-held-con", prefetch=prefetch).start()
    held, release = threading.Event(), threading.Event()
    handled: set[str] = set()

    def handler(msg: m.Message, d) -> None:
        if not held.is_set():
            held.set()
            release.wait(30)  # the outage happens while this message is being handled
        handled.add(msg.id)

    try:
        pub.declare(q)
        ids = []
        for i in range(n):
            msg = m.Notification(text=str(i))
            ids.append(msg.id)
            pub.publish(msg, routing_key=f"t.held.{uid}")
        assert pub.flush(20)
        con.subscribe(q, handler)
        assert held.wait(10)

        def let_go() -> None:  # broker down, connection gone: the settle is handed over now
            release.set()
            assert _wait(lambda: len(handled) >= 1, 5)
            time.sleep(0.3)

        _outage(own_rabbit, [pub, con], down_s=0.5, before_start=let_go)
        assert _wait(lambda: con.connected and pub.connected, 15)
        assert _wait(lambda: handled == set(ids), 30), f"consumed {len(handled)}/{n}"
        assert con.health_problems() == []
        assert _nothing_left(pub, con, q.name), f"{pub.queue_depth(q.name)} messages never acked after the reconnect"
        _assert_quiet_outage(caplog, ["test-held-pub", "test-held-con"])
    finally:
        release.set()
        pub.delete_queue(q) if pub.connected else None
        pub.close()
        con.close()
