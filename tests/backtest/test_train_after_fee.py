"""`depthpilot train --source books` appends "Trading after fees (out of sample)" to report.md and
``metrics.trading_oos`` to the manifest: each walk-forward fold's model (saved under ``folds/``)
trades its own test range, the final model only what follows its training window. The figures
must equal a direct backtest on the same range, and no traded book may be one whose price any
of the model's training labels used."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
from typer.testing import CliRunner

from depthpilot_cli.main import app
from tests.trader.helpers import need_data

TOP25 = "binance-spot-btcusdt-2024-08-08-l2diff/derived_book_snapshot_25.csv.gz"
HORIZON = 5
THRESHOLD = "0.0001"  # labels with enough up/down moves that the persistence baseline trades


def _direct(pred, books, label_end: int, hi: int | None):
    """The backtest called directly (not through backtest.oos) on the books after ``label_end``."""
    from backtest.data import infer_instrument
    from backtest.run import RunConfig
    from backtest.signals import SignalStream, model_probs, model_spec, sampled_probs
    from backtest.suite import backtest_suite

    keep = books.ts > label_end
    if hi is not None:
        keep &= books.ts <= hi
    idx = np.flatnonzero(keep)
    if idx.size < 2:
        return None, idx
    oos = books.slice(int(idx[0]), int(idx[-1]) + 1)
    if model_spec(pred).sample_interval_s:
        s = sampled_probs(pred, books)
        k = (s.ts > label_end) & (s.ts <= int(oos.ts[-1]))
        s = SignalStream(s.name, s.classes, s.probs[k], s.ttl_ns, s.model_id, ts=s.ts[k])
    else:
        s = model_probs(pred, books)
        s = SignalStream(s.name, s.classes, s.probs[idx[0] : idx[-1] + 1], s.ttl_ns, s.model_id)
    res = backtest_suite(
        oos, s, infer_instrument(oos), RunConfig(), label_horizon=HORIZON, label_threshold=float(THRESHOLD), n_random=0
    )
    return res, idx


def test_train_report_trades_after_fees_out_of_sample(tmp_path):
    from backtest.data import load_recording
    from backtest.signals import load_model, model_depth
    from features.spec import FeatureSpec
    from predictor.sources import from_books

    path = need_data(TOP25)
    out = tmp_path / "m"
    args = ["train", "--source", "books", "--path", str(path), "-o", str(out), "--allow-imbalanced"]
    args += ["--epochs", "1", "--hidden", "8", "--seq-len", "8", "--folds", "2", "--horizon", str(HORIZON)]
    args += ["--threshold", THRESHOLD]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "## Trading after fees (out of sample)" in report
    man = json.loads((out / "manifest.json").read_text())
    tr = man["metrics"]["trading_oos"]
    assert tr["verdict"] in report and "fees" in tr["verdict"]
    names = [p["name"] for p in tr["parts"]]
    assert names == ["fold 0", "fold 1", "final model"]

    row_ts = from_books(path, FeatureSpec(interval_s=1.0), kind="snapshot").ts  # the training rows
    books = load_recording(path, depth=model_depth(load_model(out)))
    traded_any = False
    for part, d in zip(tr["parts"], [out / "folds" / "fold-0", out / "folds" / "fold-1", out]):
        pred = load_model(d)
        assert part["model"] == pred.model_id
        rng = pred.artifact.manifest.data_range
        train_end = int(rng["final_train_end_ts"])
        k = int(np.flatnonzero(row_ts == train_end)[0])
        label_end = int(row_ts[min(k + HORIZON, len(row_ts) - 1)])  # last price a training label used
        assert part["train_end_ts"] == train_end and part["label_end_ts"] == label_end
        hi = rng.get("test_end_ts")
        if hi is not None:  # a fold: its test range lies after its training labels
            assert int(rng["test_start_ts"]) > label_end
        direct, idx = _direct(pred, books, label_end, hi)
        assert part["n_books"] == idx.size
        if direct is None:
            assert part["runs"] == {}
            continue
        traded_any = True
        # the range starts after the model's training window (and after its labels' prices)
        assert part["start_ts"] == int(books.ts[idx[0]]) > label_end > train_end
        assert part["end_ts"] == int(books.ts[idx[-1]])
        runs = {"model": direct.model_metrics} | direct.baselines
        assert set(part["runs"]) == {"model", "flat", "buy_and_hold", "persistence"}
        for name, m in part["runs"].items():
            want = runs[name]
            assert m["trades"] == want["trades"], name
            assert Decimal(m["net_pnl"]) == want["net_pnl"], name
            assert Decimal(m["fees"]) == want["fees"], name
            assert f"| {name} | {want['trades']} | {float(want['net_pnl']):.4f} |" in report
    assert traded_any  # the folds' test ranges were traded
    # the final model trains on the most recent rows: nothing after it here, and never a fold range
    final = tr["parts"][-1]
    assert final["n_books"] == 0 or final["start_ts"] > man["data_range"]["final_train_end_ts"]
    # something was actually paid: buy-and-hold crosses the spread with fees on every range
    assert Decimal(tr["total"]["buy_and_hold"]["fees"]) > 0
    assert tr["total"]["persistence"]["trades"] > 0  # signals on the restricted range were traded


def test_label_end_range_and_restrict_never_trade_seen_rows():
    from backtest.data import books_from_arrays
    from backtest.oos import label_end_ts, oos_range, restrict
    from backtest.signals import SignalStream

    rows = np.arange(0, 100, 10, dtype=np.int64) * 10**9  # training rows every 10 s
    assert label_end_ts(rows, int(rows[3]), 2) == rows[5]
    assert label_end_ts(rows, int(rows[8]), 5) == rows[-1]  # clipped at the last row
    try:
        label_end_ts(rows, int(rows[3]) + 1, 2)
        raise AssertionError("a timestamp that is no training row must be refused")
    except ValueError as exc:
        assert "final_train_end_ts" in str(exc)
    bts = np.arange(0, 100, 1, dtype=np.int64) * 10**9  # a book per second
    lvl = np.tile(np.array([[[100.0, 1.0]]]), (100, 1, 1))
    books = books_from_arrays("x", "BTCUSDT", bts, lvl, lvl + [[[1.0, 0.0]]])
    rng = oos_range(books, int(rows[3]), int(rows[5]), hi_ts=int(bts[70]))
    assert (rng.i0, rng.i1, rng.n_books) == (51, 71, 20)
    assert rng.start_ts == bts[51] > rows[5] and rng.end_ts == bts[70]
    assert oos_range(books, 0, int(bts[-1])).n_books == 0
    probs = np.full((100, 3), 1 / 3)
    per_book = restrict(SignalStream("m", ["down", "flat", "up"], probs, 10**9), rng)
    assert per_book.probs.shape == (20, 3) and per_book.ts is None
    ticks = np.arange(0, 100, 2, dtype=np.int64) * 10**9
    sampled = restrict(SignalStream("m", ["down", "flat", "up"], probs[:50], 10**9, ts=ticks), rng)
    assert sampled.ts.min() > rows[5] and sampled.ts.max() <= bts[70]
    assert list(sampled.ts) == [t for t in ticks if rows[5] < t <= bts[70]]
