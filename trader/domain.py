"""The trader's shared vocabulary: instruments, order requests, execution reports, fills,
positions, and the one :class:`ExecutionClient` interface that paper, Bybit v5 and ccxt
execution implement. Pure: dataclasses and ``Decimal`` money, no I/O.

Money is exact: prices, quantities, fees and PnL are ``Decimal`` (never binary floats).
Book levels arrive as float64 arrays; they become ``Decimal`` through :func:`to_decimal`
(shortest repr, so 64123.1 stays 64123.1) and are snapped to the instrument's tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal, Protocol, runtime_checkable

Side = Literal["buy", "sell"]
Mode = Literal["paper", "testnet", "live"]
Liquidity = Literal["maker", "taker", ""]
MODES: tuple[Mode, ...] = ("paper", "testnet", "live")
OrderStatus = Literal["new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "rejected", "expired"})

ZERO = Decimal(0)


def as_mode(value: str) -> Mode:
    """``value`` as a :data:`Mode`; anything but paper/testnet/live is a ValueError."""
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"mode must be paper, testnet or live, not {value!r}")


def to_decimal(x: float | int | str | Decimal) -> Decimal:
    """Exact decimal of a float's shortest repr (``0.1`` -> ``Decimal('0.1')``)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


@dataclass(frozen=True)
class Instrument:
    """Trading rules of one contract, loaded from the venue (Bybit ``get_instruments_info``,
    ccxt ``load_markets``) and cached."""

    exchange: str
    symbol: str
    tick_size: Decimal
    lot_step: Decimal
    min_qty: Decimal
    min_notional: Decimal = ZERO
    max_qty: Decimal | None = None
    contract_value: Decimal = Decimal(1)  # base units per contract (1 for linear USDT perps)
    quote_ccy: str = "USDT"
    settle_ccy: str = "USDT"
    max_leverage: Decimal | None = None

    def round_qty(self, qty: Decimal) -> Decimal:
        """Floor to the lot step (never trade more than asked)."""
        steps = (qty / self.lot_step).to_integral_value(rounding=ROUND_FLOOR)
        return (steps * self.lot_step).quantize(self.lot_step)

    def round_price(self, price: Decimal, side: Side | None = None) -> Decimal:
        """Snap to the tick: down for a buy limit/stop, up for a sell, nearest without a side."""
        q = price / self.tick_size
        if side == "buy":
            steps = q.to_integral_value(rounding=ROUND_FLOOR)
        elif side == "sell":
            steps = q.to_integral_value(rounding=ROUND_CEILING)
        else:
            steps = q.to_integral_value()
        return (steps * self.tick_size).quantize(self.tick_size)

    def violation(self, qty: Decimal, price: Decimal) -> str:
        """Why an order of ``qty`` at ``price`` breaks the rules ('' when it does not)."""
        if qty <= 0:
            return f"quantity {qty} is not positive"
        if qty % self.lot_step != 0:
            return f"quantity {qty} is not a multiple of the lot step {self.lot_step}"
        if qty < self.min_qty:
            return f"quantity {qty} is below the minimum {self.min_qty}"
        if self.max_qty is not None and qty > self.max_qty:
            return f"quantity {qty} is above the maximum {self.max_qty}"
        notional = qty * price * self.contract_value
        if notional < self.min_notional:
            return f"notional {notional} is below the minimum {self.min_notional}"
        return ""


@dataclass(frozen=True)
class OrderRequest:
    """An order as it leaves the trader (already rounded to the instrument's rules).
    ``client_order_id`` is derived from the intent id, so a redelivered intent maps to the same
    venue order (Bybit ``orderLinkId``, ccxt ``clientOrderId``)."""

    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: Literal["market", "limit"] = "market"
    price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""  # signal / stop / trailing_stop / limit / manual / flatten
    ts_ns: int = 0  # decision time


@dataclass(frozen=True)
class OrderReport:
    """The venue's view of one order."""

    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal = ZERO
    avg_price: Decimal | None = None
    exchange_order_id: str = ""
    reason: str = ""
    ts_ns: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class FillReport:
    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal  # positive = paid, negative = rebate
    fee_ccy: str = "USDT"
    liquidity: Liquidity = "taker"
    fill_id: str = ""  # venue execution id (dedup key)
    ts_ns: int = 0


@dataclass(frozen=True)
class PositionReport:
    """The venue's view of one position (signed ``qty``: > 0 long, < 0 short)."""

    exchange: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    stop_price: Decimal | None = None
    liq_price: Decimal | None = None
    leverage: Decimal | None = None
    unrealized_pnl: Decimal = ZERO
    ts_ns: int = 0


ExecEvent = OrderReport | FillReport | PositionReport


# --------------------------------------------------------------------------- errors


class ExecutionError(Exception):
    """Base of execution failures; ``str(exc)`` is one line naming venue, symbol and cause."""


class RetryableExecutionError(ExecutionError):
    """Rate limit (Bybit 10006, HTTP 429), network error, 5xx: retry with backoff."""


class OrderRejected(ExecutionError):
    """Insufficient balance, reduce-only violation, rule violation, venue rejection: never
    retried; the trader emits a RiskEvent and a notification."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class OrderOutcomeUnknown(ExecutionError):
    """A create timed out or the connection dropped after sending: the order may exist. The
    caller looks it up by client order id before anything is re-sent (never a blind re-send)."""


# --------------------------------------------------------------------------- the interface


@runtime_checkable
class ExecutionClient(Protocol):
    """One interface, three implementations (paper, Bybit v5 via pybit, ccxt).

    Calls are synchronous and may block on I/O (adapters retry retryable errors with backoff
    inside ``submit``/``set_stop`` up to a deadline and then raise). ``submit`` is idempotent by
    ``client_order_id``: submitting the same id twice returns the existing order, never a second
    one. Asynchronous outcomes (fills, order and position changes from a private WebSocket,
    polling, or paper fills on the next book) are collected with ``poll_events``.
    """

    exchange: str
    mode: Mode

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]: ...

    def set_leverage(self, symbol: str, leverage: Decimal) -> None: ...

    def submit(self, req: OrderRequest) -> OrderReport: ...

    def lookup(self, symbol: str, client_order_id: str) -> OrderReport | None: ...

    def cancel(self, symbol: str, client_order_id: str) -> OrderReport | None: ...

    def set_stop(self, symbol: str, stop_price: Decimal | None) -> None:
        """Place/move (or with ``None`` remove) the venue-side stop-loss of the position."""
        ...

    def positions(self, symbols: list[str] | None = None) -> list[PositionReport]: ...

    def open_orders(self, symbol: str | None = None) -> list[OrderReport]: ...

    def balance(self) -> dict[str, Decimal]:
        """Equity per settle currency."""
        ...

    def poll_events(self) -> list[ExecEvent]: ...

    def close(self) -> None: ...


@dataclass
class Fees:
    """Taker/maker rates as fractions of notional (Bybit linear defaults: 0.055 % / 0.02 %)."""

    taker: Decimal = Decimal("0.00055")
    maker: Decimal = Decimal("0.0002")
    extra: dict[str, Decimal] = field(default_factory=dict)
