"""Engine actions and execution reports as bus messages (``depthpilot.messages``) and control
views. Pure mapping, no I/O: the trader service publishes what these return.

Money stays exact: the trading messages (v2) carry ``Decimal`` prices, quantities, fees and PnL,
as the engine, its snapshot and the store do.
"""

from __future__ import annotations

from decimal import Decimal

from depthpilot import messages as m
from depthpilot.control import TradeView
from trader.actions import ClosedTrade, PositionChange, RiskAlert
from trader.domain import ZERO, FillReport, Mode, OrderReport, OrderRequest


def risk_event(a: RiskAlert, source: str = "trader") -> m.RiskEvent:
    return m.RiskEvent(
        kind=a.kind,
        severity=a.severity,
        source=source,
        exchange=a.exchange,
        symbol=a.symbol,
        message=a.message,
        data=dict(a.data),
        ts=a.ts_ns or m.now_ns(),
    )


def order_intent(r: OrderRequest, signal_id: str = "") -> m.OrderIntent:
    return m.OrderIntent(
        client_order_id=r.client_order_id,
        exchange=r.exchange,
        symbol=r.symbol,
        side=m.Side(r.side),
        qty=r.qty,
        order_type=r.order_type,
        price=r.price,
        reduce_only=r.reduce_only,
        reason=r.reason,
        signal_id=signal_id,
    )


def order_update(r: OrderReport) -> m.OrderUpdate:
    return m.OrderUpdate(
        client_order_id=r.client_order_id,
        exchange=r.exchange,
        symbol=r.symbol,
        status=r.status,
        side=m.Side(r.side),
        qty=r.qty,
        filled_qty=r.filled_qty,
        avg_price=r.avg_price,
        exchange_order_id=r.exchange_order_id,
        reason=r.reason,
        ts=r.ts_ns,
    )


def fill(f: FillReport) -> m.Fill:
    return m.Fill(
        client_order_id=f.client_order_id,
        exchange=f.exchange,
        symbol=f.symbol,
        side=m.Side(f.side),
        qty=f.qty,
        price=f.price,
        fee=f.fee,
        fee_ccy=f.fee_ccy,
        liquidity=f.liquidity,
        fill_id=f.fill_id,
        ts=f.ts_ns,
    )


def position_update(
    p: PositionChange, mode: Mode = "paper", unrealized: Decimal = ZERO, mark: Decimal | None = None
) -> m.PositionUpdate:
    return m.PositionUpdate(
        exchange=p.exchange,
        symbol=p.symbol,
        qty=p.qty,
        avg_price=p.avg_price,
        realized_pnl=p.realized_pnl,
        unrealized_pnl=unrealized,
        fees_paid=p.fees_paid,
        mark_price=mark,
        stop_price=p.stop_price,
        mode=mode,
        ts=p.ts_ns,
    )


def trade_view(t: ClosedTrade) -> TradeView:
    return TradeView(
        exchange=t.exchange,
        symbol=t.symbol,
        side=t.side,
        qty=t.qty,
        entry_price=t.entry_price,
        exit_price=t.exit_price,
        entry_ts=t.entry_ts,
        exit_ts=t.exit_ts,
        pnl=t.pnl,
        fees=t.fees,
        exit_reason=t.exit_reason,
    )
