"""evaluate and optimize on the rows the model is served on: for the bundled book model (a 100 ms
sampled clock) one row per tick, labels 20 ticks = 2 s ahead, persistence on the same ticks, and
the optimiser fitting and judging the very stream ``depthpilot backtest`` trades."""

from __future__ import annotations

import numpy as np

from backtest.data import infer_instrument
from backtest.evaluation import evaluate_forecasts, labels_on_rows
from backtest.model_rows import book_rows, tick_prices
from backtest.optimize import optimize
from backtest.run import RunConfig, run_signals
from backtest.signals import model_probs, persistence_stream, sampled_probs
from backtest.suite import metrics_of

GRID = {"entry_threshold": (0.45, 0.6), "confirm_k": (1,), "trailing_lock_fraction": (0.5,), "stop_cooldown_s": (0.0,)}


def test_book_rows_of_a_sampled_model_are_its_ticks_priced_at_the_last_book(pred, usdm_books):
    books = usdm_books.slice(0, 3000)
    rows = book_rows(pred, books)
    assert rows.clock == "sampled 0.1 s"
    assert rows.stream.ts is not None and np.array_equal(rows.ts, rows.stream.ts)
    assert (rows.ts % 100_000_000 == 0).all() and len(rows.ts) < len(books)
    np.testing.assert_array_equal(rows.price, tick_prices(books, rows.ts))  # the tick's mid = the last book's
    np.testing.assert_array_equal(rows.stream.probs, sampled_probs(pred, books).probs, strict=True)


def test_labels_count_the_models_ticks_not_books(pred, usdm_books):
    """The label horizon (20) on the model's rows is 2 s; on the USD-M books (~53 ms apart) 20 books
    are about 1 s: the old per-book rows labelled a different move."""
    books = usdm_books.slice(0, 4000)
    rows = book_rows(pred, books)
    label = pred.artifact.manifest.label
    _, fwd = labels_on_rows(rows.price, label)
    ahead = np.searchsorted(rows.ts, rows.ts + 2_000_000_000)
    full = np.flatnonzero((ahead < len(rows.ts)) & np.isfinite(fwd))
    full = full[rows.ts[ahead[full]] == rows.ts[full] + 2_000_000_000]  # no missing tick in between
    assert full.size > 1000
    np.testing.assert_allclose(fwd[full], rows.price[ahead[full]] / rows.price[full] - 1.0, rtol=0, atol=1e-15)
    _, fwd_books = labels_on_rows(books.mid(), label)  # the old rows: 20 books ahead
    at = np.searchsorted(books.ts, rows.ts[full], side="right") - 1
    old = fwd_books[at]
    moved = np.flatnonzero(fwd[full] != 0)  # the price mostly stands still over both horizons
    assert moved.size > 100
    assert np.mean(np.abs(old[moved] - fwd[full][moved]) > 1e-12) > 0.3, np.mean(
        np.abs(old[moved] - fwd[full][moved]) > 1e-12
    )


def test_evaluate_scores_the_stream_the_backtest_trades(pred, usdm_books):
    books = usdm_books.slice(0, 3000)
    rows = book_rows(pred, books)
    ev = evaluate_forecasts(rows.price, rows.stream.probs, pred.artifact.manifest.label, pred.classes, clock=rows.clock)
    n_ticks_with_output = int(np.isfinite(rows.stream.probs).all(axis=1).sum())
    assert 0 < ev["rows"] <= n_ticks_with_output < len(books)
    per_book = evaluate_forecasts(
        books.mid(), model_probs(pred, books).probs, pred.artifact.manifest.label, pred.classes
    )
    assert per_book["rows"] > ev["rows"]  # the old rows: one per book
    assert ev["model"]["log_loss"] != per_book["model"]["log_loss"]


def test_persistence_baseline_counts_the_models_rows():
    ts = np.arange(8, dtype=np.int64) * 100
    price = np.array([100.0, 101.0, 100.0, 99.0, 99.0, 99.0, 98.0, 100.0])
    s = persistence_stream(None, ["down", "flat", "up"], 2, 1e-3, 10, 0.9, ts=ts, price=price)  # type: ignore[arg-type]
    assert s.ts is ts
    want = [None, None, "flat", "down", "down", "flat", "down", "up"]  # class of price[t]/price[t-2] - 1
    got = [None if not np.isfinite(p).all() else ["down", "flat", "up"][int(np.argmax(p))] for p in s.probs]
    assert got == want


def test_optimize_fits_and_judges_the_sampled_stream(pred, usdm_books):
    books = usdm_books.slice(0, 3000)
    inst = infer_instrument(books)
    cfg = RunConfig()
    res = optimize(books, pred, inst, cfg, train_frac=0.6, grid=GRID)
    k = res.split_row
    train = books.slice(0, k)
    sampled = book_rows(pred, train).stream
    assert metrics_of(run_signals(train, sampled, inst, cfg), inst, 10.0) == res.train_default
    assert res.eval_stream is not None and res.eval_stream.ts is not None
    assert (res.eval_stream.ts >= books.ts[k]).all() and (res.eval_stream.ts % 100_000_000 == 0).all()
    # the evaluation ticks are those of the whole recording after the split (warm-up from the past only)
    whole = book_rows(pred, books).stream
    assert whole.ts is not None
    sel = whole.ts >= books.ts[k]
    np.testing.assert_array_equal(res.eval_stream.ts, whole.ts[sel])
    both = np.isfinite(res.eval_stream.probs).all(axis=1) & np.isfinite(whole.probs[sel]).all(axis=1)
    assert both.mean() > 0.95
    np.testing.assert_allclose(res.eval_stream.probs[both], whole.probs[sel][both], atol=1e-5)


def test_a_window_trades_inside_it_with_the_past_as_warm_up(pred):
    from backtest.candle_fills import CandleFills
    from backtest.inputs import prepare
    from tests.backtest.conftest import USDM
    from tests.trader.helpers import need_data

    rec = need_data(USDM) / "derived_book_snapshot_25.csv.gz"
    whole = prepare(pred, rec, latency_ns=50_000_000, fills=CandleFills())
    t0 = int(whole.books.ts[0]) + 120 * 10**9
    t1 = t0 + 120 * 10**9
    win = prepare(pred, rec, latency_ns=50_000_000, fills=CandleFills(), start=t0, end=t1)
    assert win.books.ts[0] >= t0 and win.books.ts[-1] < t1 and len(win.books) < len(whole.books)
    assert win.stream.ts is not None and whole.stream.ts is not None
    sel = (whole.stream.ts >= t0) & (whole.stream.ts < t1)
    np.testing.assert_array_equal(win.stream.ts, whole.stream.ts[sel])
    np.testing.assert_array_equal(win.stream.probs, whole.stream.probs[sel])  # warm at the window's start
    assert np.isfinite(win.stream.probs[0]).all()
    assert win.in_window.sum() == sel.sum() and len(win.rows.ts) == len(whole.rows.ts)


def test_the_last_decision_leaves_room_for_a_tick_after_its_book():
    """A sampled tick reaches the engine after its book with a later time: the flatten must be
    decided where that later time + latency still sees a book."""
    from types import SimpleNamespace

    from backtest.data import books_from_arrays
    from backtest.run import decision_row, flatten_row

    ts = np.array([0, 100, 151, 200, 251], dtype=np.int64) * 1_000_000
    bids = np.array([[[99.0, 1.0]]] * 5)
    asks = np.array([[[101.0, 1.0]]] * 5)
    books = books_from_arrays("x", "Y", ts, bids, asks)
    assert flatten_row(books, 50_000_000) == 3  # 200 ms + 50 ms <= 251 ms
    sigs = [[], [], [], [SimpleNamespace(ts=205_000_000)], []]  # the 200 ms tick handed over after the 200 ms book
    assert decision_row(books, sigs, 50_000_000) == 2  # 205 + 50 > 251: the last decision is a row earlier
    assert decision_row(books, [[]] * 5, 50_000_000) == 3


def test_a_position_open_at_the_end_is_flattened_on_the_sampled_clock(pred, usdm_books):
    """On USD-M the default strategy holds one long to the end; its flatten must fill (it did
    not when decided at the last tick's time: no book came 50 ms after it)."""
    s = book_rows(pred, usdm_books).stream
    r = run_signals(usdm_books, s, infer_instrument(usdm_books), RunConfig())
    assert r.open_qty == 0
    assert r.trades and r.trades[-1].exit_reason == "flatten"
