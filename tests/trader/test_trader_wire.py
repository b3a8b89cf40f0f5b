"""Engine actions become valid bus messages (they round-trip through the wire codec)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from depthpilot import messages as m
from trader import wire
from trader.actions import ClosedTrade, PositionChange, RiskAlert
from trader.domain import FillReport, OrderReport, OrderRequest
from tests.trader.helpers import DOWN, EX, SYM, UP, Clock, harness


def roundtrip(msg):
    return m.decode(m.encode(msg))


def test_every_action_maps_to_a_message():
    sim = harness()
    c = Clock(sim)
    c.book(60000.0)
    acts = c.signal(UP) + c.book(60000.0, dt=0) + c.book(60300.0) + c.signal(DOWN) + c.book(60300.0, dt=0)
    seen = set()
    for a in acts:
        if isinstance(a, RiskAlert):
            msg = wire.risk_event(a)
            assert msg.kind == a.kind and msg.source == "trader"
        elif isinstance(a, OrderRequest):
            msg = wire.order_intent(a)
            assert msg.qty == a.qty and msg.reduce_only == a.reduce_only
        elif isinstance(a, PositionChange):
            msg = wire.position_update(a)
        elif isinstance(a, ClosedTrade):
            view = wire.trade_view(a)
            assert view.pnl == a.pnl and view.exit_reason == "signal"
            continue
        else:
            continue
        seen.add(type(msg).__name__)
        back = roundtrip(msg)
        assert type(back) is type(msg)
    assert seen >= {"RiskEvent", "OrderIntent", "PositionUpdate"}


def test_reports_map_to_messages():
    r = OrderReport("c1", EX, SYM, "buy", D("0.010"), "filled", D("0.010"), D("60000.1"), "x1", "", 5)
    f = FillReport("c1", EX, SYM, "buy", D("0.010"), D("60000.1"), D("0.33000055"), fill_id="e1", ts_ns=5)
    u, fm = wire.order_update(r), wire.fill(f)
    assert (u.status, u.filled_qty, u.avg_price) == ("filled", D("0.010"), D("60000.1"))
    assert (fm.price, fm.fee, fm.fill_id) == (D("60000.1"), D("0.33000055"), "e1")  # exact (messages v2)
    assert type(roundtrip(u)) is m.OrderUpdate and type(roundtrip(fm)) is m.Fill


def test_sides_are_the_message_enum_as_a_decoded_message_carries_them():
    """The bus messages declare ``side: Side`` (an enum): what the trader publishes carries the
    same type a consumer decodes, not a bare string that only happens to encode alike."""
    req = OrderRequest("c1", EX, SYM, "sell", D("0.010"))
    r = OrderReport("c1", EX, SYM, "buy", D("0.010"), "filled", D("0.010"), D("60000.1"), "x1", "", 5)
    f = FillReport("c1", EX, SYM, "sell", D("0.010"), D("60000.1"), D("0.33"), fill_id="e1", ts_ns=5)
    for msg, side in ((wire.order_intent(req), m.Side.SELL), (wire.order_update(r), m.Side.BUY)):
        assert msg.side is side and roundtrip(msg).side is side
    assert wire.fill(f).side is m.Side.SELL


def test_a_position_update_refuses_an_unknown_mode():
    from trader.message_map import position_message

    pc = PositionChange(EX, SYM, D("0.010"), D("60000"), D("0"), D("0"), None, 5)
    assert position_message(pc, "testnet").mode == "testnet"
    with pytest.raises(ValueError, match="mode must be paper, testnet or live, not 'papr'"):
        position_message(pc, "papr")
