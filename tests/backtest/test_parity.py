"""Backtest/live parity: the same recorded stream through ``depthpilot backtest``'s loop and
through the running services (collector replay -> features -> predictor -> trader on paper,
over the real RabbitMQ) yields the same trades: entry and exit times, sides, quantities and
prices (exact decimals), exit reasons and fees.

Plus the pure event-order rules the trader follows on the replay clock (trader.replay_order).
"""

from __future__ import annotations

from pathlib import Path

from backtest.run import decision_row
from tests.backtest.parity_run import SPOT, run_backtest, run_services, slice_recording
from tests.trader.helpers import need_data
from trader.replay_order import ReplayOrder


def _key(t):
    return (t.side, t.qty, t.entry_price, t.exit_price, t.entry_ts, t.exit_ts, t.exit_reason, t.fees, t.pnl)


def test_backtest_and_services_make_the_same_trades(amqp_url, tmp_path: Path):
    rec = slice_recording(need_data(SPOT), 60.0, tmp_path / "btcusdt.gz")  # the first minute of the recording
    bt, books = run_backtest(rec)
    # paced at 10x; a book waits up to 5 s for its tick's signal (headroom on a busy machine)
    sv = run_services(amqp_url, rec, speed=10.0, timeout_s=90.0, TRADER_REPLAY_HOLD_S="5")

    # every book the backtest rebuilt reached the trader (no throttle, no market-queue drop),
    # and no signal came after a later book had been applied
    assert sv.books == len(books)
    assert sv.counters["replay_late_signals"] == 0
    assert len(bt.trades) >= 5, "the slice must trade for the comparison to mean something"

    # the backtest stops deciding `latency` before the last book and flattens there; the
    # services go on to the end. Up to that point the trades are the same, field by field.
    closing = bt.trades[-1] if bt.trades and bt.trades[-1].exit_reason == "flatten" else None
    same = [t for t in bt.trades if t is not closing]
    assert [_key(t) for t in sv.trades[: len(same)]] == [_key(t) for t in same]
    later = sv.trades[len(same) :]
    if closing is not None:  # the position the backtest flattened was opened the same way
        nxt = later[0] if later else None
        assert nxt is not None or sv.open_qty, "the services closed no trade and hold nothing"
        if nxt is not None:
            assert (nxt.side, nxt.qty, nxt.entry_price, nxt.entry_ts) == (
                closing.side,
                closing.qty,
                closing.entry_price,
                closing.entry_ts,
            )
    else:  # the services' further trades were opened after the backtest's last decision
        from backtest.signals import load_model, sampled_probs

        sigs = sampled_probs(load_model(), books).events(books)
        last_decision = int(books.ts[decision_row(books, sigs, 50_000_000)])
        assert all(t.entry_ts > last_decision for t in later)


# ---------------------------------------------------------------- the replay-clock order (pure)
def _kinds(evs):
    return [(k, v if k == "timer" else v[0]) for k, v in evs]


def test_a_signal_releases_the_books_at_or_before_it_then_follows_them():
    o = ReplayOrder(hold_s=1.0)
    assert o.add_book(100, "a", 0.0) == [] and o.add_book(200, "b", 0.0) == [] and o.add_book(300, "c", 0.0) == []
    assert _kinds(o.add_signal(200)) == [("book", 100), ("book", 200)]  # "c" (after the tick) still waits
    assert [b for _, _, b in o.held] == ["c"]
    assert _kinds(o.due(0.5)) == [] and _kinds(o.due(1.0)) == [("book", 300)]  # no signal for it: hold_s
    assert o.counters["released_by_timeout"] == 1


def test_late_signal_and_late_book_are_counted_not_hidden():
    o = ReplayOrder(hold_s=1.0)
    o.add_book(100, "a", 0.0)
    o.add_book(300, "b", 0.0)
    o.due(5.0)  # both released without a signal
    o.add_signal(200)  # a later book was applied before it: the order differs from a backtest's
    assert o.counters["late_signals"] == 1
    assert _kinds(o.add_signal(400)) == [] and _kinds(o.add_book(350, "c", 6.0)) == [("book", 350)]
    assert o.counters["late_books"] == 1


def test_timer_on_event_time_and_late_stamps_clamped_and_loops():
    o = ReplayOrder(hold_s=1.0, timer_ns=1000)
    for ts in (0, 500, 1000, 1500, 2100):
        o.add_book(ts, ts, 0.0)
    o.add_book(2000, "late", 0.0)  # an earlier exchange stamp: kept in order, clamped
    evs = o.add_signal(3000)
    assert _kinds(evs) == [
        ("book", 0),
        ("book", 500),
        ("timer", 1000),
        ("book", 1000),
        ("book", 1500),
        ("timer", 2100),
        ("book", 2100),
        ("book", 2100),
    ]
    far = 2100 - 61 * 10**9
    assert _kinds(o.add_book(far, "loop", 0.0)) == [] and o.counters["loops"] == 1  # a looped replay
    assert _kinds(o.add_signal(far)) == [("book", far)]
