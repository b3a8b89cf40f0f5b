"""Risk rules, table-driven: liquidation price, initial stop inside liquidation, trailing ratchet,
sizing caps and refusals, daily loss flatten + halt, data-quality halt, kill switch."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from trader.actions import ClosedTrade, RiskAlert, StopMove
from trader.config import TraderConfig
from trader.domain import Instrument, OrderRequest
from trader.risk import initial_stop, liquidation_price, size_entry, trailing_stop
from tests.trader.helpers import DOWN, EX, FLAT, INST, S, SYM, UP, Clock, harness


def kinds(acts, cls=RiskAlert):
    return [a.kind for a in acts if isinstance(a, cls)]


def orders(acts):
    return [a for a in acts if isinstance(a, OrderRequest)]


# ------------------------------------------------------------------ liquidation / initial stop


@pytest.mark.parametrize(
    "entry,side,lev,mmr,expected",
    [
        ("60000", 1, "10", "0.005", "54300"),
        ("60000", -1, "10", "0.005", "65700"),
        ("60000", 1, "20", "0.005", "57300"),
        ("60000", -1, "20", "0.005", "62700"),
        ("60000", 1, "4", "0.01", "45600"),
        ("60000", -1, "4", "0.01", "74400"),
        ("2500", 1, "1", "0.005", "12.5"),
    ],
)
def test_liquidation_price_isolated_linear(entry, side, lev, mmr, expected):
    assert liquidation_price(D(entry), side, D(lev), D(mmr)) == D(expected)


@pytest.mark.parametrize(
    "side,lev,max_loss,expected,clamped",
    [
        (1, "10", "0.5", "57000.0", False),  # 5 % below: 3000 = 60000 * 0.5 / 10
        (-1, "10", "0.5", "63000.0", False),
        (1, "10", "1", "54360.0", True),  # max-loss stop 54000 is past liq 54300: pulled to liq + 0.1 %
        (-1, "10", "1", "65640.0", True),
        (1, "20", "1", "57360.0", True),
        (1, "3", "0.25", "55000.0", False),
    ],
)
def test_initial_stop_from_entry_leverage_and_max_loss(side, lev, max_loss, expected, clamped):
    cfg = TraderConfig(leverage=D(lev), max_loss_fraction=D(max_loss))
    plan = initial_stop(D("60000"), side, cfg, INST)
    assert plan.stop == D(expected)
    assert plan.clamped is clamped


@pytest.mark.parametrize("lev", ["1.5", "2", "3", "5", "10", "25", "50", "100"])
@pytest.mark.parametrize("max_loss", ["0.1", "0.5", "0.9", "1"])
@pytest.mark.parametrize("side", [1, -1])
def test_stop_is_always_inside_liquidation_and_never_looser_than_max_loss(lev, max_loss, side):
    cfg = TraderConfig(
        leverage=D(lev),
        max_loss_fraction=D(max_loss),
        maintenance_margin_rate=D("0.005"),
        liq_buffer_fraction=D("0.0005"),
    )
    entry = D("63944.1")
    plan = initial_stop(entry, side, cfg, INST)
    assert (plan.stop - plan.liq) * side > 0, "stop beyond liquidation"
    assert (plan.stop - plan.raw) * side >= 0, "stop looser than the max-loss stop"
    assert (entry - plan.stop) * side > 0, "stop on the wrong side of entry"
    assert plan.stop % INST.tick_size == 0


# ------------------------------------------------------------------ trailing stop


@pytest.mark.parametrize(
    "side,path,expected",
    [
        # entry 60000, activation 0.1 % (60), lock 50 % of the MFE; None = no move
        (
            1,
            ["60030", "60100", "60080", "60300", "60200", "60301"],
            [None, "60050.0", None, "60150.0", None, "60150.5"],
        ),
        (-1, ["59970", "59800", "59900", "59700"], [None, "59900.0", None, "59850.0"]),
        (1, ["59000", "60059.9", "60060"], [None, None, "60030.0"]),
    ],
)
def test_trailing_stop_ratchets_and_never_moves_back(side, path, expected):
    cfg = TraderConfig(trailing_activation_fraction=D("0.001"), trailing_lock_fraction=D("0.5"))
    stop = D("57000") if side > 0 else D("63000")
    extreme = D("60000")
    got = []
    for px in map(D, path):
        if (px - extreme) * side > 0:
            extreme = px
        new = trailing_stop(side, D("60000"), extreme, stop, cfg, INST)
        got.append(None if new is None else str(new))
        if new is not None:
            assert (new - stop) * side > 0
            stop = new
    assert got == expected


def test_trailing_stop_in_the_engine_locks_profit_and_exits_as_trailing_stop():
    cfg = TraderConfig(confirm_k=1, trailing_activation_fraction=D("0.001"), trailing_lock_fraction=D("0.5"))
    sim = harness(cfg)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    entry = sim.engine.positions().positions[0].avg_price
    moves, trades = [], []
    for px in [60100.0, 60300.0, 60250.0, 60400.0, 60350.0, 60210.0, 60190.0]:
        acts = c.book(px)
        moves += [a.stop_price for a in acts if isinstance(a, StopMove)]
        trades += [a for a in acts if isinstance(a, ClosedTrade)]
    assert moves == sorted(moves) and len(set(moves)) == len(moves) == 3
    assert kinds(sim.actions).count("stop_trailed") == 3 and kinds(sim.actions).count("stop_set") == 1
    assert moves[-1] == INST.round_price(entry + (D("60400.0") - entry) / 2, "sell")
    assert len(trades) == 1 and trades[0].exit_reason == "trailing_stop"
    assert trades[0].exit_price == D("60190.0")  # the first book whose bid crossed the stop (60200.1)
    assert trades[0].gross_pnl > 0


# ------------------------------------------------------------------ sizing


SMALL_LOT = Instrument(EX, SYM, tick_size=D("0.1"), lot_step=D("0.01"), min_qty=D("0.01"), min_notional=D("5"))


@pytest.mark.parametrize(
    "cfg,inst,kw,qty,capped,refused",
    [
        (TraderConfig(budget=D("100"), leverage=D("3")), INST, {}, "0.005", "", False),
        (
            TraderConfig(budget=D("100"), leverage=D("3"), max_order_notional=D("150")),
            INST,
            {},
            "0.002",
            "max_order_notional",
            False,
        ),
        (
            TraderConfig(budget=D("1000"), leverage=D("3"), max_order_notional=D("5000")),
            INST,
            {},
            "0.016",
            "max_position_notional",
            False,
        ),
        (TraderConfig(), INST, {"total_exposure": D("1900")}, "0.001", "max_total_exposure", False),
        (TraderConfig(), INST, {"total_exposure": D("2000")}, "0", "max_total_exposure", True),
        (TraderConfig(budget=D("0.01")), INST, {}, "0", "", True),  # 0.03 of notional: below one lot
        (TraderConfig(budget=D("100"), leverage=D("3")), SMALL_LOT, {}, "0", "", True),  # 0.005 floors to 0
        (
            TraderConfig(leverage=D("3")),
            Instrument(EX, SYM, D("0.1"), D("0.001"), D("0.001"), max_leverage=D("2")),
            {},
            "0",
            "",
            True,
        ),
    ],
)
def test_sizing_caps_and_refusals(cfg, inst, kw, qty, capped, refused):
    sz = size_entry(D("60000"), cfg, inst, **kw)
    assert sz.qty == D(qty)
    assert sz.capped_by == capped
    assert bool(sz.refusal) is refused
    if not refused:
        assert inst.violation(sz.qty, D("60000")) == ""


def test_refused_entry_emits_a_risk_event_and_no_order():
    sim = harness(TraderConfig(confirm_k=1, budget=D("0.01")))
    c = Clock(sim)
    c.book(60000.0)
    acts = c.signal(UP)
    assert orders(acts) == []
    assert kinds(acts) == ["order_refused"]
    assert "below" in acts[0].message or "not positive" in acts[0].message


def test_total_exposure_caps_a_second_symbol():
    from tests.trader.helpers import book, signal
    from trader.backtest import Simulator
    from trader.engine import TradingEngine
    from trader.paper import PaperExchange

    eth = Instrument(EX, "ETHUSDT", D("0.01"), D("0.01"), D("0.01"), D("5"))
    insts = {SYM: INST, "ETHUSDT": eth}
    cfg = TraderConfig(confirm_k=1, max_total_exposure=D("400"))
    sim = Simulator(TradingEngine(cfg, insts), PaperExchange(insts, balance=D("100000")))
    t = 1_721_347_200 * S
    for s in insts:
        sim.control("start", s)
    sim.book(book(t, 60000.0, 60000.1))
    sim.book(book(t, 3000.0, 3000.01, symbol="ETHUSDT"))
    a1 = sim.signal(signal(t, *UP))
    assert orders(a1)[0].qty == D("0.004")  # 300 / 60000.1
    a2 = sim.signal(signal(t, *UP, symbol="ETHUSDT"))
    assert "size_capped" in kinds(a2)
    notional_btc = D("0.004") * D("60000.0")  # marked at the bid
    assert orders(a2)[0].qty == eth.round_qty((D("400") - notional_btc) / D("3000.01"))


# ------------------------------------------------------------------ daily loss limit


def _loss_setup(limit="20"):
    cfg = TraderConfig(
        confirm_k=1,
        budget=D("1000"),
        leverage=D("10"),
        max_order_notional=D("20000"),
        max_position_notional=D("20000"),
        max_total_exposure=D("20000"),
        daily_loss_limit=D(limit),
        trailing_enabled=False,
    )
    sim = harness(cfg)
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    return sim, c


def test_daily_loss_limit_flattens_and_halts_entries_until_the_next_utc_day():
    sim, c = _loss_setup("20")
    pos = sim.engine.positions().positions[0]
    q, entry, fee_in = pos.qty, pos.avg_price, pos.fees_paid
    assert fee_in == q * entry * D("0.00055")
    halted_at = None
    for bid in [59990.0, 59980.0, 59970.0, 59960.0, 59950.0, 59940.0, 59930.0, 59920.0]:
        day_pnl = -fee_in + q * (D(repr(bid)) - entry) - D("0.00055") * q * D(repr(bid))  # by hand
        acts = c.book(bid)
        if day_pnl <= -20:
            halted_at = bid
            assert kinds(acts) == ["daily_loss_limit"]
            assert [(o.reduce_only, o.reason) for o in orders(acts)] == [(True, "limit")]
            # the close fills on this very book (decision time = book time, no latency)
            assert [t.exit_reason for t in acts if isinstance(t, ClosedTrade)] == ["limit"]
            break
        assert kinds(acts) == [], bid
    assert halted_at is not None
    assert sim.engine.status().halted and sim.engine.status().halt_reason == "daily_loss"
    # no order after it, whatever the signals say
    for p in (DOWN, FLAT, UP, DOWN, UP):
        c.book(59900.0, dt=0.5)
        assert orders(c.signal(p, dt=0.5)) == []
    # the next UTC day lifts the halt
    day_end = (c.t // (86_400 * S) + 1) * 86_400 * S
    acts = c.book(59900.0, dt=(day_end - c.t) / S)
    assert kinds(acts) == ["daily_loss_reset"]
    assert not sim.engine.status().halted
    assert len(orders(c.signal(DOWN))) == 1


def test_manual_reset_lifts_the_daily_halt():
    sim, c = _loss_setup("20")
    c.book(59900.0)
    c.book(59900.0, dt=0)
    assert sim.engine.status().halted
    assert kinds(sim.control("reset_risk")) == ["risk_reset"]
    c.book(59900.0)
    assert len(orders(c.signal(DOWN))) == 1


def test_realised_loss_of_a_gapped_stop_triggers_the_halt():
    sim, c = _loss_setup("170")
    assert sim.engine.positions().positions[0].stop_price == D("57000.1")  # 60000.1 * (1 - 0.5 / 10), tick up
    acts = c.book(56000.0)  # gaps through the stop: the paper stop fills at 56000, the loss is realised
    assert [t.exit_reason for t in acts if isinstance(t, ClosedTrade)] == ["stop"]
    assert "daily_loss_limit" in kinds(acts)
    assert sim.engine.status().halted


def test_lowering_the_limit_below_todays_loss_halts_at_once():
    sim, c = _loss_setup("1000")
    c.book(59000.0)
    sim.control("flatten", SYM)  # -166 - fees, realised
    assert not sim.engine.status().halted
    assert kinds(sim.control("set_param", "daily_loss_limit", "150")) == ["daily_loss_limit"]
    c.book(59000.0)
    assert orders(c.signal(DOWN)) == []


# ------------------------------------------------------------------ data quality / kill


def test_invalid_book_halts_entries_and_valid_book_resumes():
    sim = harness()
    c = Clock(sim)
    c.book(60000.0)
    acts = c.book(60000.0, valid=False)
    assert kinds(acts) == ["data_halt"]
    assert orders(c.signal(UP)) == []
    assert sim.engine.counters["ignored_bad_book"] == 1
    acts = c.book(60000.0)
    assert kinds(acts) == ["data_resumed"]
    assert len(orders(c.signal(UP))) == 1


def test_data_halt_optionally_flattens():
    sim = harness(TraderConfig(confirm_k=1, flatten_on_data_halt=True))
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    acts = c.book(60000.0, valid=False)
    assert kinds(acts) == ["data_halt"] and [o.reason for o in orders(acts)] == ["flatten"]
    acts = c.book(60000.0)  # the close fills on the next valid book
    assert [t.exit_reason for t in acts if isinstance(t, ClosedTrade)] == ["flatten"]


def test_stale_book_and_missing_signals_halt_entries_via_the_timer():
    sim = harness(TraderConfig(confirm_k=1, max_book_age_s=5, max_signal_age_s=30))
    c = Clock(sim)
    c.book(60000.0)
    acts = sim.timer(c.t + 6 * S)
    assert kinds(acts) == ["data_halt"] and "book stale" in acts[0].message
    c.book(60000.0, dt=6)
    assert kinds(sim.timer(c.t)) == ["data_resumed"]
    for _ in range(31):
        c.book(60000.0)
    acts = sim.timer(c.t)
    assert kinds(acts) == ["data_halt"] and "no fresh signal" in acts[0].message
    assert sim.engine.status().symbols[0].book_ok  # the book is fine, the signals are not
    acts = c.signal(UP)
    assert kinds(acts) == ["data_resumed", "stop_set"]  # and the entry it allowed


def test_kill_switch_flattens_stops_and_halts_until_reset():
    sim = harness()
    c = Clock(sim)
    c.book(60000.0)
    c.signal(UP)
    c.book(60000.0, dt=0)
    acts = sim.control("kill", "operator pressed the button")
    assert kinds(acts) == ["kill_switch"] and [o.reason for o in orders(acts)] == ["flatten"]
    c.book(60000.0)
    assert sim.engine.positions().positions == []
    c.book(60000.0)
    assert orders(c.signal(DOWN)) == []
    assert sim.engine.status().halt_reason == "kill"
    sim.control("reset_risk")
    sim.control("start", SYM)
    c.book(60000.0)
    assert len(orders(c.signal(DOWN))) == 1


def test_a_loss_after_the_kill_switch_does_not_downgrade_the_halt():
    sim, c = _loss_setup("20")
    c.book(59990.0)
    sim.control("kill")  # closes at 59990: about -12.6 after fees
    assert sim.engine.day_realized < -12
    assert kinds(sim.control("set_param", "daily_loss_limit", "10")) == []  # no second, weaker halt
    assert sim.engine.status().halt_reason == "kill"
    day_end = (c.t // (86_400 * S) + 1) * 86_400 * S
    c.book(59000.0, dt=(day_end - c.t) / S)  # a new day does not lift a kill
    assert sim.engine.status().halt_reason == "kill"
