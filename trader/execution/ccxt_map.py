"""ccxt unified structures -> the trader's domain, and what a ccxt exception means. Pure.

Binance's error code is read from the message (ccxt puts the venue's JSON body there) because
ccxt picks its USD-M code table by host name: pointed at a mirror or a local server it falls
back to the generic table (e.g. -2019 becomes a plain ``ExchangeError``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

import ccxt

from trader.domain import (
    FillReport,
    Instrument,
    OrderReport,
    OrderStatus,
    PositionReport,
)
from trader.execution.common import dec

_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')

# Binance (spot/USD-M) codes that settle the classification whatever class ccxt raised
BINANCE_RATE = frozenset({"-1003", "-1015"})
BINANCE_RETRY = frozenset({"-1001", "-1008", "-1021"})  # disconnected / busy / clock: safe to retry
BINANCE_UNKNOWN = frozenset({"-1007"})  # "timeout waiting for backend: execution status unknown"
BINANCE_DUPLICATE = frozenset({"-4116"})
BINANCE_NOT_FOUND = frozenset({"-2013", "-2011"})
BINANCE_AUTH = frozenset({"-2014", "-2015", "-1022", "-1002"})

Kind = Literal["rate", "retry", "unknown", "duplicate", "not_found", "auth", "reject", "error"]


def error_code(exc: BaseException) -> str:
    m = _CODE_RE.search(str(exc))
    return m.group(1) if m else ""


def classify(exc: BaseException) -> Kind:
    """What the adapter does with a ccxt exception (see ``CcxtExecution._call``)."""
    code = error_code(exc)
    by_code: tuple[tuple[frozenset[str], Kind], ...] = (
        (BINANCE_RATE, "rate"),
        (BINANCE_RETRY, "retry"),
        (BINANCE_UNKNOWN, "unknown"),
        (BINANCE_DUPLICATE, "duplicate"),
        (BINANCE_NOT_FOUND, "not_found"),
        (BINANCE_AUTH, "auth"),
    )
    for codes, kind in by_code:
        if code in codes:
            return kind
    if isinstance(exc, ccxt.RequestTimeout):
        return "unknown"
    if isinstance(exc, ccxt.DDoSProtection):  # RateLimitExceeded is one
        return "rate"
    if isinstance(exc, ccxt.NetworkError):  # ExchangeNotAvailable, InvalidNonce, ...
        return "retry"
    if isinstance(exc, ccxt.OrderNotFound):
        return "not_found"
    if isinstance(exc, ccxt.DuplicateOrderId):
        return "duplicate"
    if isinstance(exc, (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended)):
        return "auth"
    if isinstance(
        exc, (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.ExchangeError, ccxt.OperationRejected)
    ):
        return "reject"
    return "error"


_STATUS: dict[str, OrderStatus] = {
    "open": "accepted",
    "closed": "filled",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "expired": "expired",
    "rejected": "rejected",
}


def instrument(exchange: str, symbol: str, m: dict[str, Any]) -> Instrument:
    """A ccxt market (precisionMode TICK_SIZE: precision = step) -> Instrument."""
    prec, lim = m.get("precision") or {}, m.get("limits") or {}
    tick, step = dec(prec.get("price")), dec(prec.get("amount"))
    if tick is None or step is None:
        raise ValueError(f"{exchange} {symbol}: market has no price/amount precision")
    market = lim.get("market") or {}
    amount = market if market.get("min") is not None else lim.get("amount") or {}
    return Instrument(
        exchange=exchange,
        symbol=symbol,
        tick_size=tick,
        lot_step=step,
        min_qty=dec(amount.get("min"), step) or step,
        max_qty=dec(amount.get("max")),
        min_notional=dec((lim.get("cost") or {}).get("min"), Decimal(0)) or Decimal(0),
        contract_value=dec(m.get("contractSize"), Decimal(1)) or Decimal(1),
        quote_ccy=m.get("quote") or "USDT",
        settle_ccy=m.get("settle") or m.get("quote") or "USDT",
        max_leverage=dec((lim.get("leverage") or {}).get("max")),
    )


def order_report(exchange: str, symbol: str, o: dict[str, Any], client_order_id: str) -> OrderReport:
    filled = dec(o.get("filled"), Decimal(0)) or Decimal(0)
    status = _STATUS.get(o.get("status") or "", "accepted")
    if status == "accepted" and filled > 0:
        status = "partially_filled"
    avg = dec(o.get("average"))
    return OrderReport(
        client_order_id=client_order_id,
        exchange=exchange,
        symbol=symbol,
        side=o["side"],
        qty=dec(o.get("amount"), Decimal(0)) or Decimal(0),
        status=status,
        filled_qty=filled,
        avg_price=avg if avg else None,
        exchange_order_id=str(o.get("id") or ""),
        ts_ns=int(o.get("lastUpdateTimestamp") or o.get("timestamp") or 0) * 1_000_000,
    )


def fill_report(exchange: str, symbol: str, t: dict[str, Any], client_order_id: str) -> FillReport:
    fee = t.get("fee") or {}
    return FillReport(
        client_order_id=client_order_id,
        exchange=exchange,
        symbol=symbol,
        side=t["side"],
        qty=dec(t.get("amount"), Decimal(0)) or Decimal(0),
        price=dec(t.get("price"), Decimal(0)) or Decimal(0),
        fee=dec(fee.get("cost"), Decimal(0)) or Decimal(0),
        fee_ccy=fee.get("currency") or "USDT",
        liquidity="maker" if t.get("takerOrMaker") == "maker" else "taker",
        fill_id=str(t.get("id") or ""),
        ts_ns=int(t.get("timestamp") or 0) * 1_000_000,
    )


def position_report(exchange: str, symbol: str, p: dict[str, Any], stop: Decimal | None) -> PositionReport | None:
    size = dec(p.get("contracts"), Decimal(0)) or Decimal(0)
    if size == 0:
        return None
    csize = dec(p.get("contractSize"), Decimal(1)) or Decimal(1)
    liq = dec(p.get("liquidationPrice"))
    return PositionReport(
        exchange=exchange,
        symbol=symbol,
        qty=size * csize * (-1 if p.get("side") == "short" else 1),
        avg_price=dec(p.get("entryPrice"), Decimal(0)) or Decimal(0),
        stop_price=stop,
        liq_price=liq if liq else None,
        leverage=dec(p.get("leverage")),
        unrealized_pnl=dec(p.get("unrealizedPnl"), Decimal(0)) or Decimal(0),
        ts_ns=int(p.get("timestamp") or 0) * 1_000_000,
    )


def equity(balance: dict[str, Any]) -> dict[str, Decimal]:
    """Equity per currency: Binance USD-M ``marginBalance`` (wallet + unrealised PnL) when the
    raw account is there, else ccxt's ``total``."""
    info = balance.get("info") or {}
    assets = info.get("assets") if isinstance(info, dict) else None
    if assets:
        return {a["asset"]: Decimal(a["marginBalance"]) for a in assets if a.get("marginBalance") is not None}
    return {c: v for c, v in ((c, dec(x)) for c, x in (balance.get("total") or {}).items()) if v is not None}
