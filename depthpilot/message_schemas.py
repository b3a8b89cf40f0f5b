"""Message schemas: every message type the services exchange, typed and versioned.

Pure data definitions (msgspec Structs), no wire format: :mod:`depthpilot.message_codec`
turns them into bytes and back. Import both through :mod:`depthpilot.messages`.

Every message carries:
  * ``v``      schema version of its type (``VERSION`` class attribute),
  * ``id``     a unique message id (dedup key for at-least-once delivery),
  * ``trace``  ``{stage: unix_ns}`` stamps added by each hop, so end-to-end latency
               can be measured (``created`` is stamped on construction).
"""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Literal, Union

import msgspec
import numpy as np


def now_ns() -> int:
    return time.time_ns()


def new_id() -> str:
    return uuid.uuid4().hex


def _created_trace() -> dict[str, int]:
    return {"created": time.time_ns()}


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class Message(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=False):
    """Base of every message. Subclasses set ``VERSION`` and a ``tag`` (wire type name)."""

    VERSION: ClassVar[int] = 1

    v: int = 0  # 0 = "stamp with the class VERSION" (see __post_init__)
    id: str = msgspec.field(default_factory=new_id)
    trace: dict[str, int] = msgspec.field(default_factory=_created_trace)

    def __post_init__(self) -> None:
        if self.v == 0:
            self.v = type(self).VERSION

    @property
    def type_name(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    def stamp(self, stage: str, ts_ns: int | None = None) -> "Message":
        """Add a trace timestamp for ``stage`` (returns self for chaining)."""
        self.trace[stage] = ts_ns if ts_ns is not None else time.time_ns()
        return self

    def latency_ns(self, start: str = "created", end: str | None = None) -> int | None:
        t0 = self.trace.get(start)
        t1 = self.trace.get(end) if end else time.time_ns()
        if t0 is None or t1 is None:
            return None
        return t1 - t0


# --------------------------------------------------------------------------- market data


class BookSnapshot(Message, tag="book_snapshot"):
    """Top-N levels of one order book.

    ``bids``/``asks`` are float64 arrays of shape (n, 2): [price, size]; bids sorted by
    price descending, asks ascending. ``valid`` is False when the collector knows the
    book is not tradeable (crossed, stale, resyncing); downstream must not trade on it.
    """

    exchange: str
    symbol: str
    ts_exchange: int  # ns since epoch, exchange's event time (0 if unknown)
    ts_recv: int  # ns since epoch, when the collector received the update
    seq: int  # exchange update id / sequence of the last applied update
    bids: np.ndarray
    asks: np.ndarray
    depth: int = 0  # levels requested; bids/asks may hold fewer
    valid: bool = True
    reason: str = ""  # why not valid
    # unit of the sizes, as the venue quotes them: "base" (base asset: spot, USD-M) or
    # "contracts" (COIN-M: each worth ``contract_value`` quote units). Added with defaults:
    # messages from before still decode (as base-asset sizes).
    size_unit: str = "base"
    contract_value: float = 0.0

    def best_bid(self) -> float:
        return float(self.bids[0, 0]) if len(self.bids) else float("nan")

    def best_ask(self) -> float:
        return float(self.asks[0, 0]) if len(self.asks) else float("nan")

    def mid(self) -> float:
        return 0.5 * (self.best_bid() + self.best_ask())


class Trade(Message, tag="trade"):
    exchange: str
    symbol: str
    ts_exchange: int
    ts_recv: int
    price: float
    size: float
    side: Side  # aggressor side
    trade_id: str = ""


class FeatureVector(Message, tag="feature_vector"):
    exchange: str
    symbol: str
    ts: int  # ns; the time the features describe (data up to and including ts)
    spec_hash: str  # hash of the FeatureSpec that produced ``values``
    values: np.ndarray  # float64 (n_features,)
    names: list[str] = msgspec.field(default_factory=list)  # may be omitted on the hot path
    interval: str = ""  # "" = per-snapshot, otherwise the aggregation interval ("1m")
    valid: bool = True
    reset: bool = False  # per-symbol state restarted at this row (resync, invalid book, feed gap)


class Signal(Message, tag="signal"):
    exchange: str
    symbol: str
    ts: int  # ns: timestamp of the last feature vector in the window
    model_id: str
    classes: list[str]  # e.g. ["down", "flat", "up"]
    probs: list[float]
    score: float  # in [-1, 1]: P(up) - P(down)
    expires_at: int  # ns; a signal past this time must not be acted on
    decision: str = ""  # smoothed decision ("up", "down", "flat", "" = none)


# --------------------------------------------------------------------------- trading state


def _exact(value: Any) -> Any:
    """Money fields are exact: a float given by a caller becomes the Decimal of its shortest
    repr (``0.1`` -> ``Decimal('0.1')``); ints and strings become Decimal; None stays None."""
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return Decimal(value)
    return value


class _Money(Message):
    """Base of trading-state messages: the fields named in ``MONEY`` are ``Decimal``
    (MessagePack/JSON carry them as strings, so nothing is rounded on the wire)."""

    MONEY: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.MONEY:
            v = getattr(self, name)
            if not isinstance(v, Decimal) and v is not None:
                setattr(self, name, _exact(v))


class OrderIntent(_Money, tag="order_intent"):
    """What the strategy wants; the trader's risk layer decides whether it is sent.
    v2: ``qty``/``price`` are Decimal (v1 carried floats)."""

    VERSION: ClassVar[int] = 2
    MONEY: ClassVar[tuple[str, ...]] = ("qty", "price")

    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: Literal["market", "limit"] = "market"
    price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""
    signal_id: str = ""


class OrderUpdate(_Money, tag="order_update"):
    """v2: quantities and prices are Decimal."""

    VERSION: ClassVar[int] = 2
    MONEY: ClassVar[tuple[str, ...]] = ("qty", "filled_qty", "avg_price")

    client_order_id: str
    exchange: str
    symbol: str
    status: Literal["new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired"]
    side: Side
    qty: Decimal
    filled_qty: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    exchange_order_id: str = ""
    reason: str = ""
    ts: int = 0


class Fill(_Money, tag="fill"):
    """v2: qty, price and fee are Decimal (fee > 0 paid, < 0 rebate)."""

    VERSION: ClassVar[int] = 2
    MONEY: ClassVar[tuple[str, ...]] = ("qty", "price", "fee")

    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_ccy: str = "USDT"
    liquidity: Literal["maker", "taker", ""] = ""
    fill_id: str = ""
    ts: int = 0


class PositionUpdate(_Money, tag="position_update"):
    """v2: every amount is Decimal. ``realized_pnl`` and ``fees_paid`` are cumulative per
    (exchange, symbol, mode); ``realized_pnl`` is before fees."""

    VERSION: ClassVar[int] = 2
    MONEY: ClassVar[tuple[str, ...]] = (
        "qty",
        "avg_price",
        "realized_pnl",
        "unrealized_pnl",
        "fees_paid",
        "mark_price",
        "stop_price",
    )

    exchange: str
    symbol: str
    qty: Decimal  # signed: > 0 long, < 0 short
    avg_price: Decimal
    realized_pnl: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)
    fees_paid: Decimal = Decimal(0)
    mark_price: Decimal | None = None
    stop_price: Decimal | None = None
    mode: Literal["paper", "testnet", "live"] = "paper"
    ts: int = 0


class RiskEvent(Message, tag="risk_event"):
    """Anything risk-relevant: book health (gap/resync/crossed/stale), limit breaches,
    anomalies, kill switch. ``severity`` drives notification routing."""

    kind: str  # e.g. "book_gap", "book_resync", "book_crossed", "feed_stale", "max_drawdown"
    severity: Literal["info", "warning", "critical"] = "warning"
    source: str = ""  # service that raised it
    exchange: str = ""
    symbol: str = ""
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    ts: int = msgspec.field(default_factory=now_ns)


class ControlCommand(Message, tag="control_command"):
    """A command for one service (``target``) or all (``"all"``), answered by a ControlReply
    carrying the same ``correlation_id``."""

    target: str  # service name or "all"
    command: str  # e.g. "start_trading", "stop_trading", "status", "reload_model"
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    correlation_id: str = msgspec.field(default_factory=new_id)
    requested_by: str = ""  # e.g. "telegram:12345", "api"
    # ns since epoch; a command received after this is never executed (dropped, counted and, if
    # anyone still listens, answered as expired). Every command has one: 30 s unless the sender
    # sets it (the bus's rpc() sets it from its timeout).
    expires_at: int = msgspec.field(default_factory=lambda: time.time_ns() + 30_000_000_000)


class ControlReply(Message, tag="control_reply"):
    correlation_id: str
    source: str
    ok: bool
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str = ""


class Notification(Message, tag="notification"):
    level: Literal["info", "trade", "warning", "error", "critical"] = "info"
    title: str = ""
    text: str = ""
    source: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ServiceHeartbeat(Message, tag="service_heartbeat"):
    service: str
    instance: str
    status: Literal["starting", "ok", "degraded", "stopping"] = "ok"
    uptime_s: float = 0.0
    stats: dict[str, float] = msgspec.field(default_factory=dict)
    ts: int = msgspec.field(default_factory=now_ns)
    problems: list[str] = msgspec.field(default_factory=list)  # why the status is "degraded"


MESSAGE_TYPES: tuple[type[Message], ...] = (
    BookSnapshot,
    Trade,
    FeatureVector,
    Signal,
    OrderIntent,
    OrderUpdate,
    Fill,
    PositionUpdate,
    RiskEvent,
    ControlCommand,
    ControlReply,
    Notification,
    ServiceHeartbeat,
)
MESSAGE_BY_TAG: dict[str, type[Message]] = {t.__struct_config__.tag: t for t in MESSAGE_TYPES}  # type: ignore[misc]

AnyMessage = Union[tuple(MESSAGE_TYPES)]  # type: ignore[valid-type]


def instance_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"
