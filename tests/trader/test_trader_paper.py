"""The paper exchange on REAL books (Binance USD-M BTCUSDT, derived top-25 snapshots): level
walking, partial depth, fees, slippage, latency, the venue-side stop, exact Decimal accounting.
Expected values are recomputed by hand from the CSV's own text (the exchange's price/amount
strings), independent of the float arrays the exchange reads."""

from __future__ import annotations

import csv
import gzip
import random
from decimal import Decimal as D

import pytest

from trader.backtest import BookView
from trader.domain import Fees, FillReport, Instrument, OrderRejected, OrderReport, OrderRequest
from trader.ledger import PositionLedger
from trader.paper import DEPTH_EXHAUSTED, PaperExchange
from tests.trader.helpers import need_data

REL = "binance-usdm-btcusdt-2024-07-18-l2diff/derived_book_snapshot_25.csv.gz"
SYM = "BTCUSDT"
INST = Instrument("binance", SYM, tick_size=D("0.1"), lot_step=D("0.001"), min_qty=D("0.001"), min_notional=D("5"))
TAKER = D("0.00055")


@pytest.fixture(scope="module")
def rows():
    """Every row as text: (ts_ns, [(ask px, amt)], [(bid px, amt)]) with Decimal from the strings."""
    path = need_data(REL)
    out = []
    with gzip.open(path, "rt", newline="") as fh:
        r = csv.reader(fh)
        head = next(r)
        n = sum(1 for h in head if h.startswith("asks[") and h.endswith(".price"))
        ia = [(head.index(f"asks[{k}].price"), head.index(f"asks[{k}].amount")) for k in range(n)]
        ib = [(head.index(f"bids[{k}].price"), head.index(f"bids[{k}].amount")) for k in range(n)]
        its = head.index("timestamp")
        for row in r:
            out.append(
                (
                    int(row[its]) * 1000,
                    [(D(row[p]), D(row[a])) for p, a in ia if row[p]],
                    [(D(row[p]), D(row[a])) for p, a in ib if row[p]],
                )
            )
    assert len(out) > 9000
    return out


@pytest.fixture(scope="module")
def books(rows):
    from features.io import load_book_snapshots_csv

    ts, bids, asks = load_book_snapshots_csv(need_data(REL))
    assert len(ts) == len(rows)
    return [BookView("binance", SYM, int(rows[i][0]), bids[i], asks[i]) for i in range(len(ts))]


def paper(latency_ns=0, balance=D("100000000")):
    p = PaperExchange({SYM: INST}, fees=Fees(), latency_ns=latency_ns, balance=balance)
    p.set_leverage(SYM, D("10"))
    return p


def fills_of(events, cid=None):
    return [e for e in events if isinstance(e, FillReport) and (cid is None or e.client_order_id == cid)]


def reports_of(events):
    return [e for e in events if isinstance(e, OrderReport)]


@pytest.mark.parametrize("i,side", [(1000, "buy"), (4321, "sell"), (8000, "buy")])
def test_market_order_walks_the_levels_fees_and_slippage_by_hand(rows, books, i, side):
    _, asks, bids = rows[i]
    levels = asks if side == "buy" else bids
    # three whole levels and part of the fourth
    qty = levels[0][1] + levels[1][1] + levels[2][1] + INST.round_qty(levels[3][1] / 2 + D("0.001"))
    px = paper()
    px.on_book(books[i])
    px.submit(OrderRequest("o1", "binance", SYM, side, qty, ts_ns=rows[i][0]))
    ev = px.poll_events()
    fills = fills_of(ev)
    want = [(levels[k][0], levels[k][1]) for k in range(3)] + [(levels[3][0], qty - sum(lv[1] for lv in levels[:3]))]
    assert [(f.price, f.qty) for f in fills] == want
    assert [f.fee for f in fills] == [p * q * TAKER for p, q in want]
    notional = sum(p * q for p, q in want)
    assert sum(f.fee for f in fills) == notional * TAKER
    best = levels[0][0]
    slip = sum((p - best) * q for p, q in want) * (1 if side == "buy" else -1)
    assert slip > 0  # walking the book costs
    assert px.slippage["o1"] == slip == px.slippage_total
    vwap = notional / qty
    assert reports_of(ev)[-1].status == "filled" and reports_of(ev)[-1].avg_price == vwap
    assert (notional - best * qty) * (1 if side == "buy" else -1) == slip  # = (vwap - best) * qty, exactly
    pos = px.positions()[0]
    assert pos.qty == (qty if side == "buy" else -qty) and pos.avg_price == vwap


def test_partial_depth_fills_what_is_there_and_cancels_the_rest(rows, books):
    i = 2500
    _, asks, _ = rows[i]
    depth_qty = sum(a for _, a in asks)
    want_qty = depth_qty + D("1")
    px = paper()
    px.on_book(books[i])
    px.submit(OrderRequest("big", "binance", SYM, "buy", want_qty, ts_ns=rows[i][0]))
    ev = px.poll_events()
    fills = fills_of(ev)
    assert len(fills) == len(asks) == 25
    assert [(f.price, f.qty) for f in fills] == asks
    reps = reports_of(ev)
    assert [r.status for r in reps] == ["accepted", "partially_filled", "cancelled"]
    assert reps[-1].filled_qty == depth_qty and reps[-1].reason.startswith(DEPTH_EXHAUSTED)
    assert px.lookup(SYM, "big").terminal


def test_latency_fills_on_the_first_book_at_or_after_decision_plus_latency(rows, books):
    i = 3000
    lat = 200_000_000  # 200 ms
    j = next(k for k in range(i, len(rows)) if rows[k][0] >= rows[i][0] + lat)
    assert j > i + 1  # several books pass in between
    px = paper(latency_ns=lat)
    px.on_book(books[i])
    px.submit(OrderRequest("lat", "binance", SYM, "sell", D("0.002"), ts_ns=rows[i][0]))
    for k in range(i + 1, j):
        px.on_book(books[k])
        assert fills_of(px.events) == [], k
    px.on_book(books[j])
    f = fills_of(px.poll_events())
    assert f[0].price == rows[j][2][0][0] and f[0].ts_ns == rows[j][0]


def test_submit_is_idempotent_by_client_order_id(books, rows):
    px = paper()
    px.on_book(books[10])
    req = OrderRequest("same", "binance", SYM, "buy", D("0.010"), ts_ns=rows[10][0])
    first = px.submit(req)
    again = px.submit(req)
    assert again == px.lookup(SYM, "same") and first.client_order_id == again.client_order_id
    assert sum(f.qty for f in fills_of(px.poll_events())) == D("0.010")
    assert px.positions()[0].qty == D("0.010")


def test_venue_side_stop_triggers_when_the_best_bid_crosses(rows, books):
    i = 100
    px = paper()
    px.on_book(books[i])
    px.submit(OrderRequest("in", "binance", SYM, "buy", D("0.050"), ts_ns=rows[i][0]))
    stop = rows[i][2][0][0] - D("20")
    j = next(k for k in range(i + 1, len(rows)) if rows[k][2][0][0] <= stop)
    px.set_stop(SYM, stop)
    px.poll_events()
    for k in range(i + 1, j):
        px.on_book(books[k])
    assert fills_of(px.events) == [] and px.positions()[0].stop_price == stop
    px.on_book(books[j])
    ev = px.poll_events()
    f = fills_of(ev)
    assert f and all(x.client_order_id.startswith("stop-") and x.side == "sell" for x in f)
    assert f[0].price == rows[j][2][0][0]  # the crossing book's best bid
    assert sum(x.qty for x in f) == D("0.050") and px.positions() == []
    assert any(r.reason == "stop" for r in reports_of(ev))


def test_reduce_only_margin_and_rules(books, rows):
    px = paper(balance=D("100"))
    px.on_book(books[0])
    with pytest.raises(OrderRejected, match="insufficient balance"):
        px.submit(OrderRequest("fat", "binance", SYM, "buy", D("1.000"), ts_ns=rows[0][0]))  # 64k / 10 > 100
    with pytest.raises(OrderRejected, match="lot step"):
        px.submit(OrderRequest("odd", "binance", SYM, "buy", D("0.0015"), ts_ns=rows[0][0]))
    px.submit(OrderRequest("ro", "binance", SYM, "sell", D("0.001"), reduce_only=True, ts_ns=rows[0][0]))
    assert px.lookup(SYM, "ro").status == "cancelled"  # nothing to reduce
    px.submit(OrderRequest("in", "binance", SYM, "buy", D("0.002"), ts_ns=rows[0][0]))
    px.submit(OrderRequest("out", "binance", SYM, "sell", D("0.005"), reduce_only=True, ts_ns=rows[0][0]))
    assert px.lookup(SYM, "out").filled_qty == D("0.002") and px.positions() == []


def test_funding_is_charged_exactly(books, rows):
    px = paper()
    px.on_book(books[0])
    px.submit(OrderRequest("in", "binance", SYM, "sell", D("0.100"), ts_ns=rows[0][0]))
    before = px.cash
    mark = D("64000.5")
    paid = px.apply_funding(SYM, D("0.0001"), mark)
    assert paid == D("-0.100") * mark * D("0.0001")  # shorts receive a positive rate
    assert px.cash == before - paid


def test_no_drift_over_10000_fills_on_real_books(rows, books):
    """Random orders over the whole recording until 10,000 fills: position, fees and PnL equal
    the sums over the fills exactly (cash-flow identity, no FIFO involved)."""
    rng = random.Random(7)
    px = paper()
    events = []
    n = 0
    k = 0
    while len(fills_of(events)) < 10_000:
        b = books[k % len(books)]
        k += 1
        px.on_book(b)
        side = rng.choice(["buy", "sell"])
        qty = D(rng.randint(1, 4000)) * D("0.001")
        n += 1
        px.submit(OrderRequest(f"o{n}", "binance", SYM, side, qty, ts_ns=b.ts))
        events += px.poll_events()
    fills = fills_of(events)
    signed = sum((f.qty if f.side == "buy" else -f.qty) for f in fills)
    fees = sum(f.fee for f in fills)
    cash_flow = sum((-f.qty * f.price if f.side == "buy" else f.qty * f.price) for f in fills)
    led = px.ledgers[SYM]
    assert led.signed_qty == signed
    assert led.fees == fees == sum(f.qty * f.price * TAKER for f in fills)
    mark = D("64000.3")
    # realised + unrealised = cash flows + position value, to the last digit
    assert led.realized + led.unrealized(mark) == cash_flow + signed * mark
    assert px.cash == D("100000000") + led.realized - fees
    # the engine's own ledger fed the same fills agrees exactly
    mine = PositionLedger()
    for f in fills:
        mine.apply(f.side, f.qty, f.price, f.fee, f.ts_ns)
    assert (mine.signed_qty, mine.realized, mine.fees, mine.cost) == (led.signed_qty, led.realized, led.fees, led.cost)


def test_funding_needs_a_mark():
    px = paper()
    px.ledgers[SYM].apply("buy", D("0.001"), D("60000"), D("0"))
    with pytest.raises(ValueError, match="no mark price"):
        px.apply_funding(SYM, D("0.0001"))


def test_limit_order_marketable_part_then_maker_fill_on_real_books(rows, books):
    """A buy limit one tick above the best ask at book i: the levels up to it fill as taker,
    the rest rests; it fills as maker at its price on the first later book whose best ask is
    strictly below it."""
    i = 1500
    _, asks, _ = rows[i]
    limit = asks[0][0] + D("0.1")
    take = sum(a for p, a in asks if p <= limit)
    qty = take + D("0.500")
    px = paper()
    px.on_book(books[i])
    px.submit(OrderRequest("lim", "binance", SYM, "buy", qty, order_type="limit", price=limit, ts_ns=rows[i][0]))
    ev = px.poll_events()
    taker = fills_of(ev)
    assert [(f.price, f.qty, f.liquidity) for f in taker] == [(p, a, "taker") for p, a in asks if p <= limit]
    assert px.lookup(SYM, "lim").status == "partially_filled" and px.open_orders(SYM)
    j = next(k for k in range(i + 1, len(rows)) if rows[k][1][0][0] < limit)
    for k in range(i + 1, j):
        px.on_book(books[k])
    assert fills_of(px.events) == []
    px.on_book(books[j])
    (maker,) = fills_of(px.poll_events())
    assert (maker.price, maker.qty, maker.liquidity) == (limit, D("0.500"), "maker")
    assert maker.fee == limit * D("0.500") * D("0.0002")
    rep = px.lookup(SYM, "lim")
    assert rep.status == "filled"
    assert rep.avg_price == (sum(p * a for p, a in asks if p <= limit) + limit * D("0.5")) / qty
    assert px.open_orders(SYM) == []


def test_resting_limit_can_be_cancelled(rows, books):
    px = paper()
    px.on_book(books[0])
    low = rows[0][2][0][0] - D("500")
    px.submit(OrderRequest("far", "binance", SYM, "buy", D("0.010"), order_type="limit", price=low, ts_ns=rows[0][0]))
    assert px.open_orders(SYM)[0].client_order_id == "far"
    assert px.cancel(SYM, "far").status == "cancelled"
    px.on_book(books[1])
    assert px.open_orders(SYM) == [] and px.positions() == []
    with pytest.raises(OrderRejected, match="tick"):
        px.submit(OrderRequest("bad", "binance", SYM, "buy", D("0.010"), order_type="limit", price=D("60000.05")))


def test_fill_counter_and_ids(rows, books):
    px = paper()
    px.on_book(books[5])
    px.submit(OrderRequest("a", "binance", SYM, "buy", rows[5][1][0][1] + D("0.001"), ts_ns=rows[5][0]))
    px.submit(OrderRequest("b", "binance", SYM, "sell", D("0.001"), ts_ns=rows[5][0]))
    f = fills_of(px.poll_events())
    assert px.n_fills == len(f) == 3
    assert len({x.fill_id for x in f}) == 3
