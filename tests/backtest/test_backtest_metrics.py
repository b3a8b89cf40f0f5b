"""The metric formulas on hand-made trades and curves."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pytest

from backtest.metrics import (
    closed_drawdown,
    period_returns,
    sharpe_sortino,
    trade_metrics,
)
from trader.actions import ClosedTrade

S = 10**9


def trade(pnl: str, fees: str = "0.1", t0: int = 0, t1: int = 10) -> ClosedTrade:
    return ClosedTrade(
        "x", "BTCUSDT", "long", D("0.01"), D(100), D(101), t0 * S, t1 * S, D(pnl) + D(fees), D(fees), D(pnl), "signal"
    )


def test_closed_drawdown_exact():
    assert closed_drawdown([D(1), D("-0.3"), D("-0.5"), D(2), D("-1.1")]) == D("1.1")
    assert closed_drawdown([D("-0.25"), D("0.1")]) == D("0.25")  # the peak starts at 0
    assert closed_drawdown([]) == 0


def test_trade_metrics():
    ts = np.arange(0, 101, 1, dtype=np.int64) * S
    eq = np.full(ts.size, 1000.0)
    pos = np.zeros(ts.size)
    pos[10:30] = 1  # 20 s of 100 in a position
    trades = [trade("1.5", t0=10, t1=20), trade("-0.5", t0=20, t1=30), trade("-1")]
    m = trade_metrics(trades, D(1000), ts, eq, pos, period_s=10.0)
    assert m["net_pnl"] == D(0) and m["fees"] == D("0.3") and m["trades"] == 3
    assert m["win_rate"] == pytest.approx(1 / 3)
    assert m["avg_win"] == D("1.5") and m["avg_loss"] == D("-0.75")
    assert m["profit_factor"] == pytest.approx(1.0)
    assert m["exposure"] == pytest.approx(0.2)
    assert m["max_drawdown_closed"] == D("1.5")
    assert not m["pays_fees"]
    assert m["turnover"] == pytest.approx(3 * 0.01 * 201 / 1000)


def test_sharpe_sortino_and_periods():
    ts = np.arange(0, 61, dtype=np.int64) * S
    eq = 1000.0 + np.arange(61, dtype=np.float64)  # steadily up
    r = period_returns(ts, eq, 10.0)
    assert r.size == 6 and (r > 0).all()
    sh, so = sharpe_sortino(r, 10.0)
    assert sh > 0 and np.isnan(so)  # no losing period: downside deviation 0
    sh2, so2 = sharpe_sortino(np.array([0.01, -0.01, 0.02, -0.005]), 10.0)
    assert so2 > sh2 > 0
