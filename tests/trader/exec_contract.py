"""Behaviour every venue execution client shares, checked against each venue's local fake."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from trader.domain import FillReport, OrderReport, OrderRequest, PositionReport


def check_limit_order_rests_fills_and_cancels(
    c: Any, fake: Any, buy: Callable[..., OrderRequest], resting_price: Callable[[str], Any]
) -> None:
    """A limit buy is rounded to the tick and rests; a venue fill arrives through ``poll_events``
    (order, maker fill, position); a resting reduce-only sell is cancelled and reported once.
    ``resting_price(cid)`` reads the price the fake holds for the order."""
    rep = c.submit(buy("lim-1", "0.01", order_type="limit", price=Decimal("64000.06")))
    assert (rep.status, rep.filled_qty) == ("accepted", 0) and Decimal(resting_price("lim-1")) == Decimal("64000")
    assert [o.client_order_id for o in c.open_orders("BTCUSDT")] == ["lim-1"]
    assert [e for e in c.poll_events() if isinstance(e, OrderReport)] == []  # nothing new since submit
    fake.fill("lim-1")
    ev = c.poll_events()
    [order] = [e for e in ev if isinstance(e, OrderReport)]
    [fill] = [e for e in ev if isinstance(e, FillReport)]
    assert (order.status, order.filled_qty, order.avg_price) == ("filled", Decimal("0.01"), Decimal("64000"))
    assert (fill.client_order_id, fill.price, fill.liquidity) == ("lim-1", Decimal("64000"), "maker")
    assert [e.qty for e in ev if isinstance(e, PositionReport)] == [Decimal("0.01")]
    c.submit(buy("lim-2", "0.01", side="sell", reduce_only=True, order_type="limit", price=Decimal("70000")))
    assert c.cancel("BTCUSDT", "lim-2").status == "cancelled"
    assert [e.status for e in c.poll_events() if isinstance(e, OrderReport)] == ["cancelled"]
    assert c.poll_events() == [] and c.open_orders() == []
