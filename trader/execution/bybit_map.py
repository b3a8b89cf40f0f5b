"""Bybit v5 (linear) JSON -> the trader's domain, and what each retCode means. Pure.

retCodes (Bybit v5 docs, "Error codes" + UTA trade codes):
* success-in-disguise: 110043 set leverage not modified, 34040 trading stop not modified;
* retry with backoff: 10006 too many visits, 10016 / 10000 server error / timeout (a create is
  looked up first), 10429 system frequency protection, 10002 timestamp/recv_window (HTTP 429 /
  403 too);
* credentials (10003 key, 10004 sign, 10005 permission, 10010 IP ...): an ``ExecutionError``;
* duplicate orderLinkId: 110072 (look the order up, never a second order);
* order gone: 110001 order does not exist / too late to cancel;
* everything else on an order (110007 / 110004 / 110012 / 110044 / 110045 insufficient
  balance or margin, 110017 reduce-only rule, 10001 params, 110094 min order value ...) is a
  rejection: never retried.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trader.domain import (
    FillReport,
    Instrument,
    OrderReport,
    OrderStatus,
    PositionReport,
    Side,
)
from trader.execution.common import dec

EXCHANGE = "bybit"

NOT_MODIFIED = frozenset({110043, 34040})
RETRYABLE = frozenset({10006, 10016, 10000, 10429, 10002})
SERVER_SIDE = frozenset({10016, 10000})  # server error / timeout: a create may have gone through
AUTH = frozenset({10003, 10004, 10005, 10007, 10009, 10010, 33004})  # key, sign, permission, IP: not the order
DUPLICATE_LINK_ID = 110072
ORDER_NOT_FOUND = 110001
INSUFFICIENT = frozenset({110007, 110004, 110012, 110044, 110045, 110052, 110053})
REDUCE_ONLY = frozenset({110017, 110018})

_STATUS: dict[str, OrderStatus] = {
    "Created": "new",
    "New": "accepted",
    "Untriggered": "accepted",
    "Triggered": "accepted",
    "PartiallyFilled": "partially_filled",
    "Filled": "filled",
    "Cancelled": "cancelled",
    "PartiallyFilledCanceled": "cancelled",
    "Deactivated": "cancelled",
    "Rejected": "rejected",
}


def side_out(side: Side) -> str:
    return "Buy" if side == "buy" else "Sell"


def side_in(side: str) -> Side:
    return "buy" if side == "Buy" else "sell"


def instrument(row: dict[str, Any]) -> Instrument:
    lot, px, lev = row["lotSizeFilter"], row["priceFilter"], row.get("leverageFilter") or {}
    return Instrument(
        exchange=EXCHANGE,
        symbol=row["symbol"],
        tick_size=Decimal(px["tickSize"]),
        lot_step=Decimal(lot["qtyStep"]),
        min_qty=Decimal(lot["minOrderQty"]),
        min_notional=dec(lot.get("minNotionalValue"), Decimal(0)) or Decimal(0),
        max_qty=dec(lot.get("maxMktOrderQty") or lot.get("maxOrderQty")),
        quote_ccy=row.get("quoteCoin", "USDT"),
        settle_ccy=row.get("settleCoin", "USDT"),
        max_leverage=dec(lev.get("maxLeverage")),
    )


def order_report(o: dict[str, Any], client_order_id: str) -> OrderReport:
    filled = dec(o.get("cumExecQty"), Decimal(0)) or Decimal(0)
    avg = dec(o.get("avgPrice"))
    return OrderReport(
        client_order_id=client_order_id,
        exchange=EXCHANGE,
        symbol=o["symbol"],
        side=side_in(o["side"]),
        qty=Decimal(o["qty"]),
        status=_STATUS.get(o.get("orderStatus", ""), "accepted"),
        filled_qty=filled,
        avg_price=avg if avg else None,
        exchange_order_id=o.get("orderId", ""),
        reason="" if o.get("rejectReason") in (None, "", "EC_NoError") else o["rejectReason"],
        ts_ns=int(o.get("updatedTime") or o.get("createdTime") or 0) * 1_000_000,
    )


def fill_report(e: dict[str, Any], client_order_id: str) -> FillReport:
    return FillReport(
        client_order_id=client_order_id,
        exchange=EXCHANGE,
        symbol=e["symbol"],
        side=side_in(e["side"]),
        qty=Decimal(e["execQty"]),
        price=Decimal(e["execPrice"]),
        fee=dec(e.get("execFee"), Decimal(0)) or Decimal(0),
        fee_ccy=e.get("feeCurrency") or "USDT",
        liquidity="maker" if e.get("isMaker") else "taker",
        fill_id=e["execId"],
        ts_ns=int(e.get("execTime") or 0) * 1_000_000,
    )


def position_report(p: dict[str, Any]) -> PositionReport | None:
    size = dec(p.get("size"), Decimal(0)) or Decimal(0)
    if size == 0:
        return None
    stop = dec(p.get("stopLoss"))
    liq = dec(p.get("liqPrice"))
    return PositionReport(
        exchange=EXCHANGE,
        symbol=p["symbol"],
        qty=size if p.get("side") == "Buy" else -size,
        avg_price=dec(p.get("avgPrice") or p.get("entryPrice"), Decimal(0)) or Decimal(0),
        stop_price=stop if stop else None,
        liq_price=liq if liq else None,
        leverage=dec(p.get("leverage")),
        unrealized_pnl=dec(p.get("unrealisedPnl"), Decimal(0)) or Decimal(0),
        ts_ns=int(p.get("updatedTime") or 0) * 1_000_000,
    )


def balances(result: dict[str, Any]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for acct in result.get("list", []):
        for c in acct.get("coin", []):
            eq = dec(c.get("equity"))
            if eq is not None:
                out[c["coin"]] = out.get(c["coin"], Decimal(0)) + eq
    return out
