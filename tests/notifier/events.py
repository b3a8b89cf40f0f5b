"""Trader events as the trader publishes them for a paper round trip (test helper)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from depthpilot import messages as m

D = Decimal


def _money(v: Any, floats: bool) -> Any:
    return float(v) if floats and v is not None else v


def round_trip(
    symbol: str = "BTCUSDT",
    floats: bool = False,
    exit_reason: str = "trailing_stop",
    entry: str = "50000",
    exit_: str = "50600",
    qty: str = "0.010",
    tag: str = "",
) -> list[m.Message]:
    """Open long -> trailing stop moves -> stopped out. Fees 0.055 % taker."""
    q, pe, px = D(qty), D(entry), D(exit_)
    fee_in, fee_out = (q * pe * D("0.00055")), (q * px * D("0.00055"))
    f = lambda v: _money(v, floats)  # noqa: E731
    ex = "bybit"
    o1, o2 = f"open-{symbol}{tag}", f"close-{symbol}{tag}"
    return [
        m.OrderUpdate(
            client_order_id=o1,
            exchange=ex,
            symbol=symbol,
            status="accepted",
            side=m.Side.BUY,
            qty=f(q),
            reason="signal",
        ),
        m.OrderUpdate(
            client_order_id=o1,
            exchange=ex,
            symbol=symbol,
            status="filled",
            side=m.Side.BUY,
            qty=f(q),
            filled_qty=f(q),
            avg_price=f(pe),
            reason="signal",
        ),
        m.Fill(
            client_order_id=o1,
            exchange=ex,
            symbol=symbol,
            side=m.Side.BUY,
            qty=f(q),
            price=f(pe),
            fee=f(fee_in),
            fill_id=f"f1{symbol}{tag}",
        ),
        m.PositionUpdate(
            exchange=ex,
            symbol=symbol,
            qty=f(q),
            avg_price=f(pe),
            fees_paid=f(fee_in),
            stop_price=f(pe * D("0.99")),
            mode="paper",
        ),
        m.RiskEvent(
            kind="stop_trailed",
            severity="info",
            source="trader",
            exchange=ex,
            symbol=symbol,
            message="trailing stop moved",
        ),
        m.PositionUpdate(
            exchange=ex,
            symbol=symbol,
            qty=f(q),
            avg_price=f(pe),
            fees_paid=f(fee_in),
            stop_price=f(px + 10),
            mark_price=f(px + 50),
            unrealized_pnl=f((px + 50 - pe) * q),
            mode="paper",
        ),
        m.OrderUpdate(
            client_order_id=o2,
            exchange=ex,
            symbol=symbol,
            status="accepted",
            side=m.Side.SELL,
            qty=f(q),
            reason=exit_reason,
        ),
        m.OrderUpdate(
            client_order_id=o2,
            exchange=ex,
            symbol=symbol,
            status="filled",
            side=m.Side.SELL,
            qty=f(q),
            filled_qty=f(q),
            avg_price=f(px),
            reason=exit_reason,
        ),
        m.Fill(
            client_order_id=o2,
            exchange=ex,
            symbol=symbol,
            side=m.Side.SELL,
            qty=f(q),
            price=f(px),
            fee=f(fee_out),
            fill_id=f"f2{symbol}{tag}",
        ),
        m.PositionUpdate(
            exchange=ex,
            symbol=symbol,
            qty=f(D(0)),
            avg_price=f(D(0)),
            realized_pnl=f((px - pe) * q),
            fees_paid=f(fee_in + fee_out),
            mode="paper",
        ),
    ]
