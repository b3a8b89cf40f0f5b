"""Trader events as the trader publishes them for a paper round trip (test helper)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from depthpilot import messages as m

D = Decimal
EXCHANGE = "bybit"


def _money(v: Any, floats: bool) -> Any:
    return float(v) if floats and v is not None else v


def order_leg(
    cid: str, symbol: str, side: m.Side, qty: Any, price: Any, fee: Any, fill_id: str, reason: str
) -> list[m.Message]:
    """One market order as the trader reports it: accepted, filled, and its fill."""
    common = {"client_order_id": cid, "exchange": EXCHANGE, "symbol": symbol, "side": side, "qty": qty}
    return [
        m.OrderUpdate(**common, status="accepted", reason=reason),
        m.OrderUpdate(**common, status="filled", filled_qty=qty, avg_price=price, reason=reason),
        m.Fill(**common, price=price, fee=fee, fill_id=fill_id),
    ]


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

    def position(**kw: Any) -> m.PositionUpdate:
        return m.PositionUpdate(exchange=EXCHANGE, symbol=symbol, mode="paper", **{k: f(v) for k, v in kw.items()})

    return [
        *order_leg(f"open-{symbol}{tag}", symbol, m.Side.BUY, f(q), f(pe), f(fee_in), f"f1{symbol}{tag}", "signal"),
        position(qty=q, avg_price=pe, fees_paid=fee_in, stop_price=pe * D("0.99")),
        m.RiskEvent(
            kind="stop_trailed",
            severity="info",
            source="trader",
            exchange=EXCHANGE,
            symbol=symbol,
            message="trailing stop moved",
        ),
        position(
            qty=q,
            avg_price=pe,
            fees_paid=fee_in,
            stop_price=px + 10,
            mark_price=px + 50,
            unrealized_pnl=(px + 50 - pe) * q,
        ),
        *order_leg(
            f"close-{symbol}{tag}", symbol, m.Side.SELL, f(q), f(px), f(fee_out), f"f2{symbol}{tag}", exit_reason
        ),
        position(qty=D(0), avg_price=D(0), realized_pnl=(px - pe) * q, fees_paid=fee_in + fee_out),
    ]
