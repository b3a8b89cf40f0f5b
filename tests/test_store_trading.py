"""Trading state in the store: exact Decimal money (BSON Decimal128) on mongomock-ng and, when
MONGO_URL=mongodb://... is set, on a real server; closed trades and PnL by period."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128

from depthpilot import messages as m
from depthpilot.store import Store, StoreError, doc_to_message, message_to_doc

MONGO_URL = os.environ.get("MONGO_URL", "")
T0 = m.now_ns() // 10**9 * 10**9
DAY = 86_400 * 10**9


@pytest.fixture(params=["mongomock", "mongodb"])
def store(request):
    if request.param == "mongodb":
        if not MONGO_URL.startswith(("mongodb://", "mongodb+srv://")):
            pytest.skip("set MONGO_URL=mongodb://... to run the store tests against a real server")
        url = MONGO_URL
    else:
        url = "mongomock://test_store_trading"
    s = Store.connect(url, f"depthpilot_test_{uuid.uuid4().hex[:12]}")
    yield s
    s.drop_database()
    s.close()


AWKWARD = [
    Decimal("0.1"),
    Decimal("0.00000001"),
    Decimal("64123.10"),
    Decimal("-12.3456789012345678"),
    Decimal("100000.00000000000000000001"),
]


@pytest.mark.parametrize("x", AWKWARD)
def test_decimal_round_trips_exactly_through_messages_and_store(store, x):
    f = m.Fill(
        client_order_id="c1",
        exchange="bybit",
        symbol="BTCUSDT",
        side=m.Side.SELL,
        qty=x,
        price=x,
        fee=x,
        fill_id=f"f{x}",
        ts=T0,
    )
    assert m.decode(m.encode(f)).fee == x and str(m.from_json(m.to_json(f)).price) == str(x)
    assert store.insert_fill(f, mode="paper")
    raw = store.db.fills.find_one({"_id": f.id})
    assert isinstance(raw["qty"], Decimal128)  # numeric on the server, not a string
    back = doc_to_message(raw)
    assert (back.qty, back.price, back.fee) == (x, x, x) and str(back.fee) == str(x)  # trailing zeros kept
    assert store.fills(mode="paper")[0]["fee"] == x
    p = m.PositionUpdate(
        exchange="bybit", symbol="BTCUSDT", qty=x, avg_price=x, realized_pnl=x, fees_paid=x, stop_price=x, ts=T0
    )
    store.upsert_position(p)
    pos = store.positions("paper")[0]
    assert (pos["qty"], pos["stop_price"], pos["realized_pnl"]) == (x, x, x)


def test_floats_given_to_trading_messages_become_their_shortest_decimal():
    it = m.OrderIntent(client_order_id="c", exchange="bybit", symbol="X", side=m.Side.BUY, qty=0.1, price=64123.1)
    assert it.qty == Decimal("0.1") and it.price == Decimal("64123.1") and it.v == 2
    assert message_to_doc(it)["qty"] == Decimal128("0.1")


def test_old_float_v1_messages_are_refused():
    raw = m.encode(m.Fill(client_order_id="c", exchange="b", symbol="X", side=m.Side.BUY, qty=1, price=2, fee=0))
    import msgspec

    d = msgspec.msgpack.decode(raw)
    d.update(v=1, qty=1.0, price=2.0, fee=0.0)
    with pytest.raises(m.MessageDecodeError):
        m.decode(msgspec.msgpack.encode(d))


def test_filled_qty_comparison_is_numeric_not_lexical(store):
    """'9' > '10' as strings; Decimal128 compares as numbers, so 10 after 9 is progress."""
    upd = lambda fq, ts: m.OrderUpdate(  # noqa: E731
        client_order_id="c9",
        exchange="bybit",
        symbol="BTCUSDT",
        status="partially_filled",
        side=m.Side.BUY,
        qty=Decimal(20),
        filled_qty=fq,
        ts=ts,
    )
    assert store.upsert_order(upd(Decimal("9"), T0 + 1))
    assert store.upsert_order(upd(Decimal("10"), T0 + 2))
    assert store.upsert_order(upd(Decimal("9.5"), T0 + 3)) is False
    assert store.order("c9")["filled_qty"] == Decimal("10")
    assert [o["client_order_id"] for o in store.open_orders()] == ["c9"]


def trade(i: int, pnl: str, exit_ts: int, mode: str = "paper") -> tuple[str, dict]:
    return f"t{i}", dict(
        exchange="bybit",
        symbol="BTCUSDT",
        side="long",
        qty=Decimal("0.01"),
        entry_price=Decimal("60000.1"),
        exit_price=Decimal("60100.2"),
        entry_ts=exit_ts - 10**9,
        exit_ts=exit_ts,
        pnl=Decimal(pnl),
        fees=Decimal("0.066"),
        exit_reason="signal",
    )


def test_closed_trades_idempotent_and_pnl_by_period(store):
    rows = [
        trade(1, "1.10", T0 - 10 * DAY),
        trade(2, "-0.30", T0 - 2 * DAY),
        trade(3, "0.20", T0 - 1000),
        trade(4, "0.10", T0 - 500),
        trade(5, "99", T0, mode="live"),
    ]
    for tid, t in rows[:4]:
        assert store.record_closed_trade(tid, t, mode="paper")
    assert store.record_closed_trade(*rows[4], mode="live")
    assert store.record_closed_trade(*rows[0], mode="paper") is False  # recorded twice -> once
    allp = store.pnl("paper")
    assert allp == {"realized": Decimal("1.10"), "fees": Decimal("0.264"), "trades": 4, "wins": 3}
    week = store.pnl("paper", since=T0 - 7 * DAY)
    assert week["realized"] == Decimal("0.00") and week["trades"] == 3 and week["wins"] == 2
    today = store.pnl("paper", since=T0 - 2000)
    assert today["realized"] == Decimal("0.30") and today["trades"] == 2
    recent = store.closed_trades("paper", n=2)
    assert [t["id"] for t in recent] == ["t4", "t3"] and recent[0]["exit_price"] == Decimal("60100.2")
    with pytest.raises(StoreError, match="lacks"):
        store.record_closed_trade("bad", {"exchange": "x"}, mode="paper")


def test_state_keeps_decimals(store):
    store.set_state("trader:engine", {"stop": Decimal("60123.5"), "nested": {"hwm": Decimal("0.0001")}})
    st = store.get_state("trader:engine")
    assert st == {"stop": Decimal("60123.5"), "nested": {"hwm": Decimal("0.0001")}}
