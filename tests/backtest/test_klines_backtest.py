"""Candle (klines) models in the backtest: the model on candle closes with the live candle code,
fills modelled from the candles (next open + latency, half-spread + slippage, fees), and the
commands end to end on the real Binance kline file (missing data: skip, or FAIL under CI=true)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backtest.candle_fills import CandleFills, candle_books
from backtest.inputs import load_candles, prepare
from backtest.model_rows import candle_rows, candle_spec
from backtest.run import RunConfig, run_signals
from backtest.signals import SignalStream, load_model
from depthpilot.paths import REPO_ROOT
from depthpilot_cli.main import app
from tests.trader.helpers import need_data
from trader.config import TraderConfig

KLINES = "binance-spot-btcusdt-klines-1m-2024-12"
MODEL = REPO_ROOT / "predictor" / "models" / "klines-default"
MIN = 60_000_000_000
_cache: dict = {}


def _kfile() -> Path:
    return need_data(KLINES) / "BTCUSDT_1m.csv.gz"


def _kpred():
    if "pred" not in _cache:
        _cache["pred"] = load_model(MODEL)
    return _cache["pred"]


def _candles(n: int = 4, t0: int = 1_733_011_259_999_000_000):
    ts = t0 + MIN * np.arange(n, dtype=np.int64)
    o = np.array([100.00, 101.00, 102.50, 101.70])[:n]
    c = np.array([100.90, 102.40, 101.80, 101.25])[:n]
    return {
        "ts": ts,
        "open": o,
        "high": np.maximum(o, c) + 0.5,
        "low": np.minimum(o, c) - 0.5,
        "close": c,
        "volume": np.array([1.25, 2.5, 0.125, 3.0])[:n],
    }


def test_candle_books_put_the_next_open_latency_after_the_close_with_costs_outwards():
    k = _candles()
    books, inst = candle_books(k, CandleFills(half_spread_bps=5.0, slippage_bps=5.0), 50_000_000, "x", "Y", "src")
    assert inst.tick_size == Decimal("0.01") and inst.lot_step == Decimal("0.001")  # from the data's grids
    assert books.ts.tolist() == [
        k["ts"][0],
        k["ts"][0] + 50_000_000,
        k["ts"][1],
        k["ts"][1] + 50_000_000,
        k["ts"][2],
        k["ts"][2] + 50_000_000,
        k["ts"][3],
    ]
    px = [100.90, 101.00, 102.40, 102.50, 101.80, 101.70, 101.25]  # close, next open, close, ...
    for i, p in enumerate(px):
        bid, ask = books.bids[i, 0, 0], books.asks[i, 0, 0]
        assert bid <= p * (1 - 10e-4) + 1e-9 and ask >= p * (1 + 10e-4) - 1e-9  # 10 bps each side, at least
        assert p * (1 - 10e-4) - bid < 0.01 + 1e-9 and ask - p * (1 + 10e-4) < 0.01 + 1e-9  # and one tick at most
    with pytest.raises(ValueError, match="not shorter than a candle"):
        candle_books(k, CandleFills(), MIN, "x", "Y", "src")
    with pytest.raises(ValueError, match="half_spread_bps"):
        CandleFills(half_spread_bps=-1.0)


def test_a_decision_at_a_close_fills_at_the_next_open_after_latency():
    k = _candles()
    fills = CandleFills(half_spread_bps=2.0, slippage_bps=3.0)
    books, inst = candle_books(k, fills, 50_000_000, "x", "Y", "src")
    probs = np.full((4, 3), np.nan)
    probs[0] = [0.02, 0.03, 0.95]  # "up" at the first close only
    stream = SignalStream("model", ["down", "flat", "up"], probs, 120 * 10**9, "m", ts=k["ts"])
    trader = TraderConfig(confirm_k=1, entry_threshold=0.5, max_book_age_s=120.0, max_signal_age_s=120.0)
    r = run_signals(books, stream, inst, RunConfig(trader=trader, latency_ns=50_000_000))
    assert r.trades, "the signal must trade"
    t = r.trades[0]
    assert t.side == "long"
    assert t.entry_ts == int(k["ts"][0]) + 50_000_000  # the next candle's open, seen latency later
    assert float(t.entry_price) == books.asks[1, 0, 0]  # at its open + half-spread + slippage
    assert float(t.entry_price) >= 101.00 * (1 + 5e-4)


def test_candle_rows_are_the_training_rows_and_reproduce_the_manifest_fingerprint():
    """The klines model on the kline file through the backtest's candle path gives the very
    probabilities the trainer stored for its last training windows (same features, same rows)."""
    from predictor.sources import from_klines

    pred = _kpred()
    k = load_candles([_kfile()])
    rows = candle_rows(pred, k)
    assert rows.clock == "candle 60 s"
    spec = candle_spec(pred)
    td = from_klines(_kfile(), spec).select(pred.feature_names)
    np.testing.assert_array_equal(rows.ts, td.ts)
    np.testing.assert_allclose(rows.X, td.X, rtol=0, atol=0, equal_nan=True)
    np.testing.assert_array_equal(rows.price, td.prices.close)
    assert spec.interval_s == 60.0
    fp = pred.artifact.manifest.metrics["fingerprint"]
    pos = np.searchsorted(rows.ts, np.asarray(fp["end_ts"], dtype=np.int64))
    np.testing.assert_allclose(rows.stream.probs[pos], np.asarray(fp["probs"]), atol=1e-5)


def test_history_files_warm_up_the_indicators_like_one_file(tmp_path):
    """Split the kline file in two: with the first part as --history, the second part's signals
    are those of the whole file; without it, the long indicators are not warm yet."""
    import pandas as pd

    src = pd.read_csv(_kfile())
    hist, main = tmp_path / "hist.csv", tmp_path / "main.csv"
    src.iloc[:3000].to_csv(hist, index=False)
    src.iloc[3000:6000].to_csv(main, index=False)
    pred = _kpred()
    whole = prepare(pred, _kfile(), latency_ns=50_000_000, fills=CandleFills())
    warm = prepare(pred, main, latency_ns=50_000_000, fills=CandleFills(), history=[hist])
    cold = prepare(pred, main, latency_ns=50_000_000, fills=CandleFills())
    assert warm.stream.ts is not None and whole.stream.ts is not None
    np.testing.assert_array_equal(warm.stream.ts, whole.stream.ts[3000:6000])
    np.testing.assert_allclose(warm.stream.probs, whole.stream.probs[3000:6000], atol=1e-6, equal_nan=True)
    assert np.isfinite(warm.stream.probs).all()
    assert not np.isfinite(cold.stream.probs[:60]).any()  # vol_rel_1440 needs 60 bars, the window 30 more
    assert any("3000 history candles" in n for n in warm.notes)


def test_backtest_and_evaluate_a_klines_model_on_the_kline_file(tmp_path):
    k = _kfile()
    common = ["--model", str(MODEL), "--start", "2024-12-02", "--end", "2024-12-04", "--random-draws", "3"]
    common += ["--set", "entry_threshold=0.45", "--set", "confirm_k=3"]
    r = CliRunner().invoke(app, ["evaluate", "--books", str(k), "-o", str(tmp_path / "ev"), *common])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    fc = m["forecast"]
    assert fc["clock"] == "candle 60 s"
    assert 2 * 1440 - 5 <= fc["rows"] <= 2 * 1440  # the window's candles with a known 5-bar label
    assert set(fc["stored_baselines"]) == {"majority", "persistence", "random"}
    assert m["model"]["trades"] > 0
    assert m["recording"]["start_ts"] >= 1733097600 * 10**9 and m["recording"]["end_ts"] < 1733270400 * 10**9
    notes = " ".join(m["notes"])
    assert "fills modelled from candles, not books" in notes and "max_book_age_s raised to 120 s" in notes
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "fills modelled from candles, not books" in html and "candle 60 s" in html
    r = CliRunner().invoke(app, ["backtest", str(k), "-o", str(tmp_path / "bt"), *common, "--slippage-bps", "-2"])
    assert r.exit_code == 2 and "--slippage-bps" in r.output


def test_a_klines_model_refuses_book_recordings_and_optimize_in_one_line(tmp_path):
    bad = tmp_path / "books.csv"
    bad.write_text("exchange,symbol,timestamp,local_timestamp,asks[0].price\n")
    r = CliRunner().invoke(app, ["backtest", str(bad), "--model", str(MODEL), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "books.csv" in r.output
    r = CliRunner().invoke(app, ["optimize", str(bad), "--model", str(MODEL), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "optimize runs book models only" in r.output


def _walk(minutes: int, seed: int = 0):
    """Trades every ~2 s on a random walk, and a book every 5 s around the last trade."""
    rng = np.random.default_rng(seed)
    t0 = 1_733_011_200_000_000_000 + 7_000_000_000  # 7 s into a minute: the first candle is partial
    ts = t0 + np.cumsum(rng.integers(1, 4, size=minutes * 30)).astype(np.int64) * 1_000_000_000
    price = np.round(100_000 * np.exp(np.cumsum(rng.normal(0, 2e-4, ts.size))), 2)
    size = np.round(rng.uniform(0.001, 0.5, ts.size), 5)
    bts = np.arange(ts[0], ts[-1], 5_000_000_000, dtype=np.int64)
    last = price[np.searchsorted(ts, bts, side="right") - 1]
    bids = np.stack([np.round(last - 0.05, 2), np.full(bts.size, 2.0)], axis=1)[:, None, :]
    asks = np.stack([np.round(last + 0.05, 2), np.full(bts.size, 2.0)], axis=1)[:, None, :]
    from backtest.data import books_from_arrays

    return books_from_arrays("binance", "BTCUSDT", bts, bids, asks, "walk"), {"ts": ts, "price": price, "size": size}


def test_candles_from_recorded_trades_with_history_equal_one_series():
    """The trade path: closed candles from the trades (the open last one dropped), history winning
    where it overlaps, the model at each close; the signal of a close goes to the engine after the
    last book at or before it."""
    from backtest.inputs import from_trades
    from features.candles import ohlcv_from_trades

    pred = _kpred()
    books, trades = _walk(150)
    c = ohlcv_from_trades(trades["ts"], trades["price"], trades["size"], 60_000_000_000)
    full = {k: v[:-1] for k, v in c.items() if k != "n"}
    whole = candle_rows(pred, full)
    alone = from_trades(pred, books, trades, None, TraderConfig())
    np.testing.assert_array_equal(alone.stream.ts, whole.ts[whole.ts >= books.ts[0]])
    assert alone.stream.ts[-1] < trades["ts"][-1] and full["ts"].size == c["ts"].size - 1
    assert np.isfinite(alone.stream.probs).all(axis=1).sum() > 20
    assert alone.trader_overrides == {"max_signal_age_s": 120.0}
    # history = the first 100 candles (a kline file would hold complete ones); the recording's
    # candles they cover are dropped, the rest follow: the same rows as the whole series
    hist = {k: v[:100] for k, v in full.items()}
    hist["close"] = hist["close"].copy()
    hist["close"][99] += 1.0  # history wins where it overlaps: its close is the one used
    warm = from_trades(pred, books, trades, hist, TraderConfig())
    np.testing.assert_array_equal(warm.rows.ts, whole.ts)
    assert any("100 history candles; 100 recorded candle(s) they cover" in n for n in warm.notes)
    np.testing.assert_array_equal(warm.rows.price[:100], hist["close"])
    np.testing.assert_array_equal(warm.rows.price[100:], full["close"][100:])
    # signals go to the engine after the last book at or before each close
    ev = warm.stream.events(warm.books)
    for row, sigs in enumerate(ev):
        for s in sigs:
            assert warm.books.ts[row] <= s.ts and (row + 1 == len(warm.books) or warm.books.ts[row + 1] > s.ts)


def test_a_klines_model_on_a_real_l2_recording_says_why_it_has_no_signal(tmp_path):
    """The USD-M recording (8 minutes, 10,701 trades) through the trade path: 8 closed candles,
    too few for the model's warm-up, and the report says so (no kline history of July 2024 here)."""
    rec = need_data("binance-usdm-btcusdt-2024-07-18-l2diff")
    r = CliRunner().invoke(
        app, ["backtest", str(rec), "--model", str(MODEL), "-o", str(tmp_path), "--random-draws", "1"]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    notes = " ".join(m["notes"])
    assert "10701 trades (8 closed)" in notes and "no signal: the model needs 30 candles" in notes
    assert m["recording"]["books"] == 9017 and m["model"]["trades"] == 0
