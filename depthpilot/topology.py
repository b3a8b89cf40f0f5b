"""The broker topology, defined once.

Exchanges, routing keys, consumer queues (with their delivery class, bounds, dead-letter
queue) live here and nowhere else. ``rabbitmq/definitions.json`` is generated from this
module (``depthpilot topology --write``) and a test fails when it is stale; the RabbitMQ
bus declares the same objects idempotently at connect time and the in-memory bus builds
its queues from them.

Two delivery classes:

* ``MARKET``: book snapshots, trades, features, signals, heartbeats. High rate, transient
  (non-persistent), no publisher-confirm wait, consumer queues bounded with
  ``x-max-length`` + ``drop-head`` and a TTL, so a slow consumer cannot blow the broker and
  always sees the freshest data.
* ``STATE``: orders, fills, positions, risk events, control, notifications. Persistent,
  publisher-confirmed, never dropped: quorum queues with a dead-letter exchange and a
  delivery limit (a message that crashes its consumer over and over ends in the DLQ
  instead of looping forever).

Per-symbol stateful consumers (features, predictor) use single-active-consumer queues so
that running several replicas never breaks per-symbol order (one consumes, the others
stand by); sharding by symbol with a consistent-hash exchange is the planned next step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from depthpilot import messages as m


class DeliveryClass(str, Enum):
    MARKET = "market"
    STATE = "state"


MARKET_EXCHANGE = "depthpilot.market"
STATE_EXCHANGE = "depthpilot.state"
DEAD_LETTER_EXCHANGE = "depthpilot.dlx"

DEFAULT_MARKET_MAX_LENGTH = 10_000
DEFAULT_MARKET_TTL_MS = 60_000
DEFAULT_DELIVERY_LIMIT = 5
# State queues: a bound far above any backlog we expect; a full queue refuses publishes
# (the publisher gets a nack and keeps the message buffered) instead of dropping anything.
DEFAULT_STATE_MAX_LENGTH = 1_000_000
# Control queues: the broker drops a command after 60 s whatever its deadline says; services
# also drop any command past its own ``expires_at`` (Service._on_control).
CONTROL_TTL_MS = 60_000


@dataclass(frozen=True)
class ExchangeDef:
    name: str
    type: str = "topic"
    durable: bool = True


@dataclass(frozen=True)
class Route:
    """Where a message type is published."""

    exchange: str
    key: str  # template formatted with the message's fields
    delivery: DeliveryClass


@dataclass(frozen=True)
class QueueDef:
    """A consumer queue. ``bindings`` are topic patterns on ``exchange``."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    delivery: DeliveryClass
    max_length: int | None = None  # market queues: bound, drop-head
    message_ttl_ms: int | None = None
    single_active_consumer: bool = False
    delivery_limit: int | None = None  # state queues: after N redeliveries -> DLQ

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def arguments(self) -> dict[str, Any]:
        """Every argument that shapes behaviour is set explicitly, so a broker version's or a
        vhost's defaults (default queue type, RabbitMQ 4's quorum delivery limit of 20...) never
        decide it. Supported by RabbitMQ 3.10 and later (quorum queues with message TTL)."""
        args: dict[str, Any] = {}
        if self.delivery is DeliveryClass.MARKET:
            args["x-queue-type"] = "classic"
            if self.max_length is not None:
                args["x-max-length"] = self.max_length
                args["x-overflow"] = "drop-head"
            if self.message_ttl_ms is not None:
                args["x-message-ttl"] = self.message_ttl_ms
            # no broker-side DLX on market queues: overflow drops must not flood the DLQ.
            # Poison market messages are dead-lettered by the bus itself, with a reason.
        else:
            args["x-queue-type"] = "quorum"
            args["x-dead-letter-exchange"] = DEAD_LETTER_EXCHANGE
            args["x-dead-letter-routing-key"] = self.name
            args["x-dead-letter-strategy"] = "at-most-once"
            args["x-delivery-limit"] = (
                self.delivery_limit if self.delivery_limit is not None else DEFAULT_DELIVERY_LIMIT
            )
            args["x-max-length"] = self.max_length if self.max_length is not None else DEFAULT_STATE_MAX_LENGTH
            args["x-overflow"] = "reject-publish"
            if self.message_ttl_ms is not None:
                args["x-message-ttl"] = self.message_ttl_ms
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        return args


EXCHANGES: tuple[ExchangeDef, ...] = (
    ExchangeDef(MARKET_EXCHANGE, "topic"),
    ExchangeDef(STATE_EXCHANGE, "topic"),
    ExchangeDef(DEAD_LETTER_EXCHANGE, "direct"),
)

_M, _S = DeliveryClass.MARKET, DeliveryClass.STATE

ROUTES: dict[type[m.Message], Route] = {
    m.BookSnapshot: Route(MARKET_EXCHANGE, "book.{exchange}.{symbol}", _M),
    m.Trade: Route(MARKET_EXCHANGE, "trade.{exchange}.{symbol}", _M),
    m.FeatureVector: Route(MARKET_EXCHANGE, "features.{exchange}.{symbol}", _M),
    m.Signal: Route(MARKET_EXCHANGE, "signals.{exchange}.{symbol}", _M),
    m.ServiceHeartbeat: Route(MARKET_EXCHANGE, "heartbeat.{service}", _M),
    m.OrderIntent: Route(STATE_EXCHANGE, "order.intent.{exchange}.{symbol}", _S),
    m.OrderUpdate: Route(STATE_EXCHANGE, "order.update.{exchange}.{symbol}", _S),
    m.Fill: Route(STATE_EXCHANGE, "fill.{exchange}.{symbol}", _S),
    m.PositionUpdate: Route(STATE_EXCHANGE, "position.{exchange}.{symbol}", _S),
    m.RiskEvent: Route(STATE_EXCHANGE, "risk.{severity}.{kind}", _S),
    m.ControlCommand: Route(STATE_EXCHANGE, "control.{target}", _S),
    m.ControlReply: Route(STATE_EXCHANGE, "control_reply.{source}", _S),
    m.Notification: Route(STATE_EXCHANGE, "notify.{level}", _S),
}


def _market(name: str, *keys: str, max_length: int = DEFAULT_MARKET_MAX_LENGTH, sac: bool = False) -> QueueDef:
    return QueueDef(
        name,
        MARKET_EXCHANGE,
        keys,
        _M,
        max_length=max_length,
        message_ttl_ms=DEFAULT_MARKET_TTL_MS,
        single_active_consumer=sac,
    )


def _state(name: str, *keys: str, ttl_ms: int | None = None) -> QueueDef:
    return QueueDef(
        name,
        STATE_EXCHANGE,
        keys,
        _S,
        max_length=DEFAULT_STATE_MAX_LENGTH,
        message_ttl_ms=ttl_ms,
        delivery_limit=DEFAULT_DELIVERY_LIMIT,
    )


def control_queue(service: str) -> QueueDef:
    """A service's control queue. Commands expire (broker TTL; the service also checks each
    command's own deadline), so a command nobody was around to answer never runs later."""
    return _state(f"{service}.control", f"control.{service}", "control.all", ttl_ms=CONTROL_TTL_MS)


QUEUES: dict[str, QueueDef] = {
    q.name: q
    for q in (
        # market data consumers
        _market("features.book", "book.*.*", sac=True),
        _market("features.trades", "trade.*.*", sac=True),
        _market("predictor.features", "features.*.*", sac=True),
        # the trader: model signals, and the books it marks positions with (paper fills too)
        _market("trader.signals", "signals.*.*", max_length=1_000),
        _market("trader.book", "book.*.*", max_length=1_000),
        _market("api.heartbeats", "heartbeat.*", max_length=1_000),
        _market("notifier.heartbeats", "heartbeat.*", max_length=1_000),
        # state consumers
        _state("notifier.events", "order.update.#", "fill.#", "position.#", "risk.#", "notify.#"),
        # order intents are executed inside the trader and published for the record (api.state)
        _state("api.state", "order.intent.#", "order.update.#", "fill.#", "position.#", "risk.#"),
        # control channel, one queue per service
        *(control_queue(s) for s in ("collector", "features", "predictor", "trader", "notifier", "tgbot", "api")),
    )
}

_SEGMENT_RE = re.compile(r"[^A-Za-z0-9_-]+")


def key_segment(value: object) -> str:
    """Make a value safe as one routing-key word ('BTC/USDT:USDT' -> 'BTC-USDT-USDT')."""
    s = value.value if isinstance(value, Enum) else str(value)
    return _SEGMENT_RE.sub("-", s).strip("-") or "_"


def route_for(msg_type: type[m.Message]) -> Route:
    try:
        return ROUTES[msg_type]
    except KeyError:
        raise KeyError(f"no route defined for {msg_type.__name__}") from None


_FIELD_RE = re.compile(r"{(\w+)}")


def routing_key(msg: m.Message) -> str:
    route = route_for(type(msg))
    return _FIELD_RE.sub(lambda mm: key_segment(getattr(msg, mm.group(1))), route.key)


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: '*' = exactly one word, '#' = zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(key.split(".")))


def _match(p: tuple[str, ...], k: tuple[str, ...]) -> bool:
    if not p:
        return not k
    head = p[0]
    if head == "#":
        return any(_match(p[1:], k[i:]) for i in range(len(k) + 1))
    if not k:
        return False
    return (head == "*" or head == k[0]) and _match(p[1:], k[1:])


# ------------------------------------------------------------------------ definitions.json


def definitions(queues: dict[str, QueueDef] | None = None) -> dict[str, Any]:
    """RabbitMQ definitions (exchanges, queues, bindings) for the management plugin's
    ``load_definitions``. No users or permissions: credentials come from the environment."""
    queues = QUEUES if queues is None else queues
    vhost = "/"
    out: dict[str, Any] = {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": e.durable,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in EXCHANGES
        ],
        "queues": [],
        "bindings": [],
        "policies": [],
    }
    for q in sorted(queues.values(), key=lambda q: q.name):
        out["queues"].append(
            {"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": q.arguments()}
        )
        out["queues"].append(
            {
                "name": q.dlq,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": "quorum"},
            }
        )
        for key in q.bindings:
            out["bindings"].append(
                {
                    "source": q.exchange,
                    "vhost": vhost,
                    "destination": q.name,
                    "destination_type": "queue",
                    "routing_key": key,
                    "arguments": {},
                }
            )
        out["bindings"].append(
            {
                "source": DEAD_LETTER_EXCHANGE,
                "vhost": vhost,
                "destination": q.dlq,
                "destination_type": "queue",
                "routing_key": q.name,
                "arguments": {},
            }
        )
    return out


def definitions_json(queues: dict[str, QueueDef] | None = None) -> str:
    return json.dumps(definitions(queues), indent=2, sort_keys=True) + "\n"
