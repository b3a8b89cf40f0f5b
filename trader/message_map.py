"""Engine actions and venue reports as bus messages (pure conversions, exact Decimals).

* ``OrderRequest`` -> :class:`~depthpilot.messages.OrderIntent` (the intent id is derived from
  the client order id, so a re-sent intent is the same message and deduplicated downstream);
* ``OrderReport`` -> ``OrderUpdate``; ``FillReport`` -> ``Fill`` (message id derived from the
  venue's fill id, so a fill seen twice - poll and reconcile - is stored once);
* ``PositionChange`` -> ``PositionUpdate``; ``RiskAlert`` -> ``RiskEvent``;
* ``ClosedTrade`` -> a closed-trade record for the store (fields of ``control.TradeView``).
"""
from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from depthpilot import messages as m
from trader.actions import ClosedTrade, PositionChange, RiskAlert
from trader.domain import FillReport, OrderReport, OrderRequest, PositionReport


def _id(*parts: object) -> str:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()


def intent_message(req: OrderRequest, signal_id: str = "") -> m.OrderIntent:
    return m.OrderIntent(id=_id("intent", req.client_order_id), client_order_id=req.client_order_id,
                         exchange=req.exchange, symbol=req.symbol, side=m.Side(req.side), qty=req.qty,
                         order_type=req.order_type, price=req.price, reduce_only=req.reduce_only,
                         reason=req.reason, signal_id=signal_id)


def order_update(rep: OrderReport, ts_ns: int) -> m.OrderUpdate:
    ts = rep.ts_ns or ts_ns
    return m.OrderUpdate(id=_id("order", rep.client_order_id, rep.status, rep.filled_qty, ts),
                         client_order_id=rep.client_order_id, exchange=rep.exchange, symbol=rep.symbol,
                         status=rep.status, side=m.Side(rep.side), qty=rep.qty, filled_qty=rep.filled_qty,
                         avg_price=rep.avg_price, exchange_order_id=rep.exchange_order_id, reason=rep.reason, ts=ts)


def fill_message(f: FillReport, ts_ns: int) -> m.Fill:
    key = f.fill_id or f"{f.client_order_id}:{f.qty}:{f.price}:{f.ts_ns}"
    return m.Fill(id=_id("fill", f.exchange, key), client_order_id=f.client_order_id, exchange=f.exchange,
                  symbol=f.symbol, side=m.Side(f.side), qty=f.qty, price=f.price, fee=f.fee, fee_ccy=f.fee_ccy,
                  liquidity=f.liquidity, fill_id=f.fill_id, ts=f.ts_ns or ts_ns)


def position_message(pc: PositionChange, mode: str, mark: Decimal | None = None,
                     unrealized: Decimal = Decimal(0)) -> m.PositionUpdate:
    return m.PositionUpdate(exchange=pc.exchange, symbol=pc.symbol, qty=pc.qty, avg_price=pc.avg_price,
                            realized_pnl=pc.realized_pnl, fees_paid=pc.fees_paid, unrealized_pnl=unrealized,
                            mark_price=mark, stop_price=pc.stop_price, mode=mode, ts=pc.ts_ns)  # type: ignore[arg-type]


def venue_position_message(p: PositionReport, mode: str, ts_ns: int) -> m.PositionUpdate:
    return m.PositionUpdate(exchange=p.exchange, symbol=p.symbol, qty=p.qty, avg_price=p.avg_price,
                            unrealized_pnl=p.unrealized_pnl, stop_price=p.stop_price, mode=mode,  # type: ignore[arg-type]
                            ts=p.ts_ns or ts_ns)


def risk_message(a: RiskAlert, source: str = "trader") -> m.RiskEvent:
    return m.RiskEvent(kind=a.kind, severity=a.severity, source=source, exchange=a.exchange, symbol=a.symbol,
                       message=a.message, data=dict(a.data), ts=a.ts_ns or m.now_ns())


def trade_id(t: ClosedTrade) -> str:
    return _id("trade", t.exchange, t.symbol, t.side, t.entry_ts, t.exit_ts, t.qty, t.exit_price)


def closed_trade_record(t: ClosedTrade) -> dict[str, Any]:
    return {"exchange": t.exchange, "symbol": t.symbol, "side": t.side, "qty": t.qty,
            "entry_price": t.entry_price, "exit_price": t.exit_price, "entry_ts": t.entry_ts, "exit_ts": t.exit_ts,
            "gross_pnl": t.gross_pnl, "pnl": t.pnl, "fees": t.fees, "exit_reason": t.exit_reason}


def trade_notification(t: ClosedTrade, mode: str) -> m.Notification:
    sign = "+" if t.pnl >= 0 else ""
    return m.Notification(level="trade", source="trader", title=f"{t.symbol} {t.side} closed ({t.exit_reason})",
                          text=f"{t.qty} {t.symbol} {t.entry_price} -> {t.exit_price}: {sign}{t.pnl} after "
                               f"{t.fees} fees [{mode}]",
                          data={"pnl": str(t.pnl), "fees": str(t.fees), "mode": mode})
