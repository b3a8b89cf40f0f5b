"""What the trading engine asks the outside world to do or know. Pure dataclasses.

The engine's event methods return ``list[Action]``; the service (or the backtest loop) acts on
them in order:

* :class:`~trader.domain.OrderRequest` -> ``ExecutionClient.submit``;
* :class:`StopMove` -> ``ExecutionClient.set_stop`` (``None`` removes the stop);
* :class:`RiskAlert` -> a ``RiskEvent`` message (same fields);
* :class:`PositionChange` -> a ``PositionUpdate`` message;
* :class:`ClosedTrade` -> stored / notified (matches ``control.TradeView``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Union

from trader.domain import ZERO, OrderRequest

ExitReason = Literal["signal", "stop", "trailing_stop", "limit", "manual", "flatten"]
Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class StopMove:
    """Place or move the venue-side stop of ``symbol``'s position (``None`` = remove)."""

    exchange: str
    symbol: str
    stop_price: Decimal | None
    kind: Literal["initial", "trailing", "remove"] = "initial"
    ts_ns: int = 0


@dataclass(frozen=True)
class RiskAlert:
    """One risk action or finding; the service publishes it as a ``RiskEvent`` message.

    ``kind``: ``order_refused``, ``size_capped``, ``stop_set``, ``stop_trailed``,
    ``stop_clamped_to_liq``, ``daily_loss_limit``, ``daily_loss_reset``, ``data_halt``,
    ``data_resumed``, ``kill_switch``, ``risk_reset``, ``position_mismatch``, ``order_rejected``,
    ``partial_fill``, ``exit_incomplete``, ``session_complete``.
    """

    kind: str
    severity: Severity = "warning"
    exchange: str = ""
    symbol: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts_ns: int = 0


@dataclass(frozen=True)
class PositionChange:
    """The engine's book of one position after a fill (signed ``qty``)."""

    exchange: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    realized_pnl: Decimal = ZERO  # cumulative for the symbol, before fees
    fees_paid: Decimal = ZERO  # cumulative for the symbol
    stop_price: Decimal | None = None
    ts_ns: int = 0


@dataclass(frozen=True)
class ClosedTrade:
    """A completed round trip; ``pnl`` is after entry and exit fees."""

    exchange: str
    symbol: str
    side: Literal["long", "short"]
    qty: Decimal
    entry_price: Decimal  # volume-weighted
    exit_price: Decimal  # volume-weighted
    entry_ts: int
    exit_ts: int
    gross_pnl: Decimal
    fees: Decimal
    pnl: Decimal
    exit_reason: str = ""


Action = Union[OrderRequest, StopMove, RiskAlert, PositionChange, ClosedTrade]

__all__ = ["Action", "ClosedTrade", "ExitReason", "PositionChange", "RiskAlert", "StopMove"]
