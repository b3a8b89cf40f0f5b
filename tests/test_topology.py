"""Topology is defined once in Python; the broker definitions file is generated from it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from depthpilot import messages as m
from depthpilot.paths import REPO_ROOT
from depthpilot.topology import QUEUES, ROUTES, DeliveryClass, definitions_json, key_segment, routing_key, topic_matches


def test_definitions_file_is_generated_from_code() -> None:
    path = REPO_ROOT / "rabbitmq" / "definitions.json"
    assert path.read_text() == definitions_json(), "stale: run `depthpilot topology --write`"
    proc = subprocess.run(
        [sys.executable, "-m", "depthpilot_cli", "topology", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_definitions_have_no_credentials() -> None:
    d = json.loads(definitions_json())
    assert "users" not in d and "permissions" not in d
    assert "guest" not in definitions_json()


def test_every_state_message_reaches_a_queue() -> None:
    """State messages are mandatory-published: each route must be matched by some consumer
    queue (ControlReply travels by reply_to instead)."""
    assert set(ROUTES) == set(m.MESSAGE_TYPES)
    for msg_type, route in ROUTES.items():
        if route.delivery is not DeliveryClass.STATE or msg_type is m.ControlReply:
            continue
        sample_key = route.key.replace("{target}", "trader").replace("{severity}", "warning")
        sample_key = re.sub(r"{\w+}", "x", sample_key)
        assert any(
            q.exchange == route.exchange and any(topic_matches(b, sample_key) for b in q.bindings)
            for q in QUEUES.values()
        ), f"{msg_type.__name__} ({sample_key}) has no consumer queue"


@pytest.mark.rabbitmq
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl not on this machine")
def test_broker_accepts_definitions_and_bus_agrees(amqp_url: str, tmp_path) -> None:
    """The generated file imports into the real broker (into the tests' own vhost), and the bus
    then declares the same objects without a PRECONDITION_FAILED (arguments identical)."""
    from depthpilot.bus.rabbit import RabbitBus
    from tests.rabbit_admin import vhost_of

    # imported into this session's private vhost (deleted at the end), never into "/"
    vhost = vhost_of(amqp_url)
    defs = json.loads(definitions_json())
    for section in ("queues", "exchanges", "bindings", "policies"):
        for item in defs.get(section, []):
            item["vhost"] = vhost
    defs["vhosts"] = [{"name": vhost}]
    proc = subprocess.run(
        ["rabbitmqctl", "import_definitions", "--format", "json"],
        input=json.dumps(defs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the import is asynchronous
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name"], capture_output=True, text=True, timeout=60
        ).stdout.split()
        if all(q in listed for q in QUEUES):
            break
        time.sleep(0.5)
    else:
        pytest.fail("imported queues did not appear")
    bus = RabbitBus(amqp_url, "topology-check")
    bus._declare_topology(list(QUEUES.values()))


def test_market_queues_bounded_state_queues_quorum_with_dlx() -> None:
    for q in QUEUES.values():
        args = q.arguments()
        if q.delivery is DeliveryClass.MARKET:
            assert args["x-max-length"] > 0 and args["x-overflow"] == "drop-head"
            assert "x-dead-letter-exchange" not in args
        else:
            assert args["x-queue-type"] == "quorum" and args["x-dead-letter-routing-key"] == q.name


@pytest.mark.parametrize(
    "pattern,key,ok",
    [
        ("book.*.*", "book.binance.BTCUSDT", True),
        ("book.*.*", "book.binance", False),
        ("order.update.#", "order.update", True),
        ("order.update.#", "order.update.bybit.BTCUSDT", True),
        ("#", "anything.at.all", True),
        ("control.trader", "control.all", False),
        ("*.x.#", "a.x", True),
    ],
)
def test_topic_matching(pattern: str, key: str, ok: bool) -> None:
    assert topic_matches(pattern, key) is ok


def test_routing_keys_are_safe_words() -> None:
    snap = m.Trade(
        exchange="binance", symbol="BTC/USDT:USDT", ts_exchange=0, ts_recv=0, price=1, size=1, side=m.Side.BUY
    )
    assert routing_key(snap) == "trade.binance.BTC-USDT-USDT"
    assert key_segment("") == "_"


def test_every_queue_argument_is_explicit() -> None:
    """Behaviour never rests on a broker's or vhost's defaults (default queue type, RabbitMQ 4's
    quorum delivery limit of 20, unbounded state queues)."""
    for q in QUEUES.values():
        args = q.arguments()
        if q.delivery is DeliveryClass.MARKET:
            assert {"x-queue-type", "x-max-length", "x-overflow", "x-message-ttl"} <= set(args), q.name
            assert args["x-queue-type"] == "classic"
        else:
            assert {"x-queue-type", "x-delivery-limit", "x-max-length", "x-overflow", "x-dead-letter-strategy"} <= set(
                args
            ), q.name
            assert args["x-overflow"] == "reject-publish"  # a full state queue refuses, never drops
        if q.name.endswith(".control"):
            assert args["x-message-ttl"] > 0, q.name
