"""A backtest on each developer-visible Binance L2 recording writes the report, and the money in
it is recomputed independently (exact Decimal) from the trades CSV and the raw fills."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal as D

import pytest

from backtest.data import infer_instrument
from backtest.metrics import closed_drawdown
from backtest.output import write_backtest
from backtest.report import read_trades_csv
from backtest.run import RunConfig
from backtest.signals import model_probs
from backtest.suite import backtest_suite, verdict
from tests.backtest.conftest import SPOT, USDM, books_of
from trader.config import TraderConfig


@pytest.mark.parametrize("rel", [SPOT, USDM])
def test_backtest_report_and_exact_money(rel, pred, tmp_path):
    books = books_of(rel, pred)
    inst = infer_instrument(books)
    # a looser strategy than the defaults so the model trades often on a 10-minute recording
    cfg = RunConfig(trader=TraderConfig(entry_threshold=0.45, confirm_k=1, exit_on_neutral=True))
    res = backtest_suite(books, model_probs(pred, books), inst, cfg, n_random=3, seed=1)
    out = write_backtest(tmp_path, res)
    for name in ("trades.csv", "metrics.json", "equity.png", "drawdown.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    m = json.loads((tmp_path / "metrics.json").read_text())
    rows = read_trades_csv(tmp_path / "trades.csv")
    assert len(rows) == m["model"]["trades"] >= 3
    # per trade: pnl = gross - fees, and gross = the price move times the quantity
    for r in rows:
        assert r["pnl"] == r["gross_pnl"] - r["fees"]
        s = 1 if r["side"] == "long" else -1
        assert abs(r["gross_pnl"] - s * (r["exit_price"] - r["entry_price"]) * r["qty"]) < D("1e-18")
    net = sum((r["pnl"] for r in rows), D(0))
    fees = sum((r["fees"] for r in rows), D(0))
    assert D(m["model"]["net_pnl"]) == net
    assert D(m["model"]["fees"]) == fees
    assert D(m["model"]["max_drawdown_closed"]) == closed_drawdown([r["pnl"] for r in rows])
    # independently of the engine: the paper fills (value and fee of every level walked)
    fills = res.model.fills
    assert fees == sum((f.qty * f.price * cfg.fees.taker for f in fills), D(0))
    cash = sum(((f.qty * f.price if f.side == "sell" else -f.qty * f.price) - f.fee for f in fills), D(0))
    assert res.model.open_qty == 0 and cash == net
    assert res.model.end_cash - res.model.start_balance == net
    # drawdown recomputed by hand from the CSV's cumulative PnL
    peak = cum = dd = D(0)
    for r in rows:
        cum += r["pnl"]
        peak = max(peak, cum)
        dd = max(dd, peak - cum)
    assert D(m["model"]["max_drawdown_closed"]) == dd
    # latency: no fill on a book before decision + latency
    by_id = res.model.requests
    assert all(f.ts_ns >= by_id[f.client_order_id].ts_ns + cfg.latency_ns for f in fills)
    html = out.read_text()
    assert 'id="metrics"' in html and "persistence" in html and "buy_and_hold" in html and "random x3" in html
    assert verdict(res) in html.replace("&#x27;", "'")
    if not m["model"]["pays_fees"]:
        assert "does NOT pay its fees" in html
    assert m["baselines"]["flat"]["net_pnl"] == "0" and m["baselines"]["flat"]["trades"] == 0
    assert m["baselines"]["buy_and_hold"]["trades"] == 1
    assert m["random_draws"]["trades"]["mean"] == pytest.approx(len(rows), abs=1)


def test_funding_is_charged_and_reported(pred, usdm_books):
    """The USD-M recording crosses 00:00 UTC: a held position pays funding there."""
    from backtest.baselines import buy_and_hold_plan
    from backtest.run import flatten_row, run_scripted
    from backtest.suite import metrics_of

    inst = infer_instrument(usdm_books)
    cfg = RunConfig(funding_rate=D("0.0001"))
    plan = buy_and_hold_plan(usdm_books, flatten_row(usdm_books, cfg.latency_ns))
    free = run_scripted(usdm_books, plan, inst, replace(cfg, funding_rate=None))
    assert free.funding_paid == 0
    held = run_scripted(usdm_books, plan, inst, cfg)  # the baselines pay it too
    assert held.funding_paid > 0
    assert held.end_cash == free.end_cash - held.funding_paid
    import numpy as np

    from backtest.run import run_signals
    from backtest.signals import SignalStream

    probs = np.full((len(usdm_books), 3), np.nan)
    probs[100] = [0.05, 0.05, 0.9]  # one long entry, held to the end
    r = run_signals(
        usdm_books,
        SignalStream("one", ["down", "flat", "up"], probs, 10**12),
        inst,
        replace(cfg, trader=TraderConfig(confirm_k=1, exit_on_opposite=False)),
    )
    assert r.funding_paid > 0
    m = metrics_of(r, inst, 10.0)
    assert m["net_pnl"] == m["net_pnl_before_funding"] - r.funding_paid
