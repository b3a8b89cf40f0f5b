"""Engine wiring: restart (snapshot/restore, rebuild from venue positions), queries as control
replies, parameter validation, partial fills, duplicate fills, latency, a backtest on real books."""

from __future__ import annotations

import json
from decimal import Decimal as D

import msgspec
import pytest

from depthpilot import control
from trader.actions import ClosedTrade, RiskAlert, StopMove
from trader.backtest import BookView, Simulator
from trader.config import TraderConfig, config_from_dict, config_to_dict
from trader.domain import FillReport, OrderRequest, PositionReport, to_decimal
from trader.engine import TradingEngine
from trader.paper import PaperExchange
from tests.trader.helpers import DOWN, EX, INST, S, SYM, T0, UP, Clock, harness, need_data

CFG = TraderConfig(confirm_k=1, trailing_activation_fraction=D("0.001"), trailing_lock_fraction=D("0.5"))


def open_long(cfg=CFG, **kw):
    sim = harness(cfg, **kw)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    return sim, c


def test_restore_refuses_a_snapshot_of_an_unknown_mode():
    sim, _ = open_long()
    state = json.loads(json.dumps(sim.engine.snapshot()))
    assert TradingEngine.restore(state).mode == "paper"
    with pytest.raises(ValueError, match="mode must be paper, testnet or live, not 'real'"):
        TradingEngine.restore({**state, "mode": "real"})


def test_snapshot_restore_continues_the_trailing_stop():
    sim, c = open_long()
    c.book(60300.0)  # trails to entry + 150
    before = sim.engine.positions().positions[0]
    state = json.loads(json.dumps(sim.engine.snapshot()))  # survives JSON (a Mongo document)
    eng2 = TradingEngine.restore(state)
    strip = lambda r: [(p.qty, p.avg_price, p.stop_price, p.fees_paid, p.opened_ts) for p in r.positions]  # noqa: E731
    assert strip(eng2.positions()) == strip(sim.engine.positions())  # marks come with the next book
    assert eng2.pnl("all").realized == sim.engine.pnl("all").realized
    assert eng2.snapshot() == state
    # the restarted engine keeps managing the same position on the same (paper) venue
    sim2 = Simulator(eng2, sim.paper)
    c.sim = sim2
    moves = [a for a in c.book(60500.0) if isinstance(a, StopMove)]
    assert moves and moves[0].kind == "trailing" and moves[0].stop_price > before.stop_price
    acts = c.book(60200.0)
    assert [t.exit_reason for t in acts if isinstance(t, ClosedTrade)] == ["trailing_stop"]


def test_rebuild_from_the_venue_position_after_a_cold_start():
    eng = TradingEngine(CFG, {SYM: INST})
    acts = eng.on_position(PositionReport(EX, SYM, D("-0.010"), D("61000.0"), ts_ns=T0))
    assert [a.kind for a in acts if isinstance(a, RiskAlert)] == ["position_mismatch", "stop_set"]
    stops = [a for a in acts if isinstance(a, StopMove)]
    assert len(stops) == 1 and stops[0].stop_price > D("61000")  # a short's stop sits above
    assert eng.positions().positions[0].qty == D("-0.010")
    # a venue stop already in place is adopted, not replaced
    eng2 = TradingEngine(CFG, {SYM: INST})
    acts2 = eng2.on_position(PositionReport(EX, SYM, D("0.010"), D("61000.0"), stop_price=D("60000.0")))
    assert not [a for a in acts2 if isinstance(a, StopMove)]
    assert eng2.positions().positions[0].stop_price == D("60000.0")


def test_queries_are_control_replies_and_serialise():
    sim, c = open_long()
    c.book(60100.0)
    sim.control("flatten", SYM)
    c.book(60100.0, dt=0)
    eng = sim.engine
    replies = [
        eng.status(),
        eng.positions(),
        eng.pnl("today"),
        eng.pnl("7d"),
        eng.pnl("all"),
        eng.trades(5),
        eng.risk(),
    ]
    kinds = [
        control.StatusReply,
        control.PositionsReply,
        control.PnlReply,
        control.PnlReply,
        control.PnlReply,
        control.TradesReply,
        control.RiskReply,
    ]
    for r, k in zip(replies, kinds, strict=True):
        assert isinstance(r, k)
        assert msgspec.convert(msgspec.to_builtins(r), k, strict=False) == r
    t = eng.trades(5).trades[0]
    assert t.exit_reason == "flatten" and t.side == "long"
    pnl = eng.pnl("all")
    assert pnl.trades == 1 and pnl.realized == t.pnl == (t.exit_price - t.entry_price) * t.qty - t.fees
    assert eng.pnl("today").since_ts == (c.t // (86_400 * S)) * 86_400 * S
    with pytest.raises(ValueError, match="period"):
        eng.pnl("month")


@pytest.mark.parametrize(
    "name,value,error",
    [
        ("nope", "1", "unknown parameter 'nope'"),
        ("leverage", "abc", "leverage: 'abc' is not a decimal number"),
        ("leverage", "-2", "leverage=-2 must be > 0"),
        ("confirm_k", "0", "confirm_k=0 must be >= 1"),
        ("exit_on_neutral", "maybe", "exit_on_neutral: 'maybe' is not a boolean"),
        ("trailing_lock_fraction", "1.5", "trailing_lock_fraction=1.5 must be in (0, 1]"),
        ("maintenance_margin_rate", "0.5", "maintenance_margin_rate=0.5 must be below 1/leverage"),
    ],
)
def test_set_param_validates(name, value, error):
    eng = TradingEngine(CFG, {SYM: INST})
    with pytest.raises(ValueError) as exc:
        eng.set_param(name, value)
    assert error in str(exc.value)
    assert eng.cfg == CFG


def test_set_param_applies_and_config_round_trips():
    eng = TradingEngine(CFG, {SYM: INST})
    eng.set_param("confirm_k", "3")
    eng.set_param("budget", "250.5")
    eng.set_param("exit_on_neutral", "true")
    assert (eng.cfg.confirm_k, eng.cfg.budget, eng.cfg.exit_on_neutral) == (3, D("250.5"), True)
    assert eng.symbols[SYM].strat.readings.maxlen == 3
    assert config_from_dict(config_to_dict(eng.cfg)) == eng.cfg


def test_thin_book_partial_entry_is_protected_and_a_partial_exit_is_retried():
    sim = harness(TraderConfig(confirm_k=1, budget=D("1000"), leverage=D("1")))  # wants 0.016
    c = Clock(sim)
    c.book(60000.0, size=0.004, levels=2)
    acts = c.signal(UP) + c.book(60000.0, dt=0, size=0.004, levels=2)
    assert [a.kind for a in acts if isinstance(a, RiskAlert)] == ["partial_fill", "stop_set"]
    pos = sim.engine.positions().positions[0]
    assert pos.qty == D("0.008") and pos.stop_price is not None  # what filled is protected
    c.book(60000.0, size=0.005, levels=1)
    acts = sim.control("flatten", SYM)  # 0.005 of 0.008 on this book, then the engine re-sends the rest
    assert [e.qty for e in acts if isinstance(e, OrderRequest)] == [D("0.008")]
    assert sim.engine.positions().positions[0].qty == D("0.003")
    acts = c.book(60000.0)
    assert [e.qty for e in acts if isinstance(e, OrderRequest)] == [D("0.003")]
    assert [t.qty for t in acts if isinstance(t, ClosedTrade)] == [D("0.008")]
    assert sim.engine.positions().positions == []


def test_duplicate_fill_reports_are_ignored():
    eng = TradingEngine(CFG, {SYM: INST})
    f = FillReport("x", EX, SYM, "buy", D("0.01"), D("60000"), D("0.33"), fill_id="e1", ts_ns=T0)
    eng.on_fill(f)
    eng.on_fill(f)
    assert eng.positions().positions[0].qty == D("0.01")


def test_latency_delays_the_entry_fill_to_a_later_book():
    sim = harness(CFG, latency_ns=300_000_000)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    assert c.book(60005.0, dt=0.1) == []  # 100 ms later: not yet
    acts = c.book(60010.0, dt=0.25)  # 350 ms after the decision
    assert sim.engine.positions().positions[0].avg_price == D("60010.1")
    assert any(isinstance(a, StopMove) for a in acts)


def test_backtest_on_real_books_is_consistent():
    """A short backtest over the real USD-M books with a trivial signal (the sign of the last
    mid change, known at the book's time): engine and paper agree to the last digit."""
    from features.io import load_book_snapshots_csv
    from tests.trader.helpers import signal

    ts, bids, asks = load_book_snapshots_csv(
        need_data("binance-usdm-btcusdt-2024-07-18-l2diff/derived_book_snapshot_25.csv.gz")
    )
    inst = INST
    cfg = TraderConfig(confirm_k=2, trailing_activation_fraction=D("0.0002"), stop_cooldown_s=5)
    eng = TradingEngine(cfg, {SYM: inst})
    sim = Simulator(eng, PaperExchange({SYM: inst}, balance=D("100000"), latency_ns=50_000_000))
    sim.control("start", SYM)
    mid_ref = None
    for i in range(len(ts)):
        sim.book(BookView(EX, SYM, int(ts[i]), bids[i], asks[i]))
        if i % 20:
            continue
        mid = (bids[i, 0, 0] + asks[i, 0, 0]) / 2
        if mid_ref is not None:
            p = UP if mid > mid_ref else DOWN if mid < mid_ref else (0.3, 0.3)
            sim.signal(signal(int(ts[i]), *p))
        mid_ref = mid
    closed = eng.closed
    assert len(closed) >= 5
    assert {t.exit_reason for t in closed} <= {"signal", "stop", "trailing_stop"}
    led = sim.paper.ledgers[SYM]
    assert eng.symbols[SYM].led.signed_qty == led.signed_qty
    assert sum(t.pnl for t in closed) == led.realized - led.fees + (eng.symbols[SYM].led.trip.fees if led.qty else 0)


def test_flatten_during_an_entry_in_flight_closes_once_it_fills():
    sim = harness(CFG, latency_ns=500_000_000)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    assert sim.control("flatten", SYM) == []  # nothing filled yet: remembered
    acts = c.book(60000.0, dt=0.6)  # the entry fills, the close follows at once
    reqs = [a for a in acts if isinstance(a, OrderRequest)]
    assert [(r.reduce_only, r.reason) for r in reqs] == [(True, "flatten")]
    acts = c.book(60000.0, dt=0.6)
    assert [t.exit_reason for t in acts if isinstance(t, ClosedTrade)] == ["flatten"]


def test_restart_with_an_order_in_flight_reconciles_from_the_venue():
    sim = harness(CFG, latency_ns=500_000_000)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    state = json.loads(json.dumps(sim.engine.snapshot()))
    eng2 = TradingEngine.restore(state)
    (req,) = eng2.pending_orders()
    from tests.trader.helpers import book

    sim.paper.on_book(book(c.t + 600_000_000, 60000.0, 60000.1))  # the venue fills it while the trader is down
    events = sim.paper.poll_events()
    assert sim.paper.lookup(SYM, req.client_order_id).status == "filled"
    acts = eng2.on_events(events)  # the restarted service feeds what the venue reports
    assert eng2.pending_orders() == []
    assert eng2.positions().positions[0].qty == sim.paper.positions()[0].qty
    assert any(isinstance(a, StopMove) for a in acts)
    # redelivered fills after the restart are ignored
    eng2.on_events(events)
    assert eng2.positions().positions[0].qty == sim.paper.positions()[0].qty


def test_takes_collector_book_snapshots_as_they_are():
    """``BookSnapshot`` messages from the collector's replay (time = ``ts_recv``) drive the
    engine and the paper exchange directly."""
    from itertools import islice

    from collector.replay import TardisBookSnapshotReplay
    from tests.trader.helpers import signal

    path = need_data("binance-usdm-btcusdt-2024-07-18-l2diff/derived_book_snapshot_25.csv.gz")
    snaps = list(islice(TardisBookSnapshotReplay(path), 300))
    inst = INST
    eng = TradingEngine(CFG, {snaps[0].symbol: inst})
    sim = Simulator(eng, PaperExchange({snaps[0].symbol: inst}, balance=D("100000")))
    sim.control("start", snaps[0].symbol)
    for k, s in enumerate(snaps):
        sim.book(s)
        if k == 100:
            sim.signal(signal(s.ts_recv, *UP, symbol=s.symbol))
    assert eng.now == snaps[-1].ts_recv
    pos = eng.positions().positions[0]
    # decided on book 100 (signal time = its ts_recv, no latency): filled on that book's best ask
    assert pos.avg_price == to_decimal(float(snaps[100].asks[0, 0]))
    assert pos.opened_ts == snaps[100].ts_recv


def test_venue_stop_reports_are_labelled_as_the_trade_will_be():
    """The published OrderUpdate of a venue-side stop says trailing_stop once the stop trailed,
    like the closed trade (the notifier shows the order's reason)."""
    sim, c = open_long()
    eng = sim.engine
    assert eng.venue_stop_reason(SYM, "stop-1", "stop") == "stop"  # the initial stop
    assert eng.venue_stop_reason(SYM, "stop-1", "") == "stop"  # a stop- client id, no reason
    c.book(60300.0)  # trails
    assert eng.venue_stop_reason(SYM, "stop-2", "stop") == "trailing_stop"
    assert eng.venue_stop_reason(SYM, "x-9", "signal") == "signal"  # other reports keep theirs
    assert eng.venue_stop_reason("NOPE", "stop-3", "stop") == "stop"  # unknown symbol: unchanged
