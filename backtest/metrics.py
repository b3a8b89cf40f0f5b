"""Trading metrics of one run. Pure: trades (exact ``Decimal``) and an equity curve (float) in.

* Money figures from the closed trades are exact: net PnL after fees, fees, gross PnL, average
  win / loss, profit factor, and the **closed-trade drawdown** (largest fall of the cumulative
  net PnL from its running peak, the peak starting at 0).
* Curve figures from the mark-to-market equity (float): the mark-to-market maximum drawdown,
  Sharpe and Sortino of the equity returns over a stated period (default 10 s), annualised by
  sqrt(periods per 365-day year) since crypto trades around the clock, exposure time (share
  of the recording with a position open) and turnover (traded notional / starting balance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from trader.actions import ClosedTrade
from trader.domain import ZERO

YEAR_S = 365 * 86400


def closed_drawdown(pnls: Sequence[Decimal]) -> Decimal:
    """Largest peak-to-trough fall of the cumulative PnL (peak starts at 0), exact."""
    cum = peak = dd = ZERO
    for p in pnls:
        cum += p
        peak = max(peak, cum)
        dd = max(dd, peak - cum)
    return dd


def curve_drawdown(equity: np.ndarray) -> tuple[float, np.ndarray]:
    """(max drawdown, drawdown series) of a float equity curve."""
    if equity.size == 0:
        return 0.0, equity
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    return float(dd.max()), dd


def period_returns(ts: np.ndarray, equity: np.ndarray, period_s: float) -> np.ndarray:
    """Equity returns over consecutive ``period_s`` intervals (last value in each interval)."""
    if ts.size < 2:
        return np.zeros(0)
    p = int(period_s * 1e9)
    grid = np.arange(int(ts[0]), int(ts[-1]) + p, p, dtype=np.int64)
    k = np.clip(np.searchsorted(ts, grid, side="right") - 1, 0, ts.size - 1)
    e = equity[k]
    return np.diff(e) / e[:-1]


def sharpe_sortino(returns: np.ndarray, period_s: float) -> tuple[float, float]:
    if returns.size < 2:
        return float("nan"), float("nan")
    ann = math.sqrt(YEAR_S / period_s)
    mu = float(returns.mean())
    sd = float(returns.std(ddof=1))
    dsd = float(math.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))) if returns.size else 0.0
    sharpe = mu / sd * ann if sd > 0 else (0.0 if mu == 0 else float("nan"))
    sortino = mu / dsd * ann if dsd > 0 else (0.0 if mu == 0 else float("nan"))
    return sharpe, sortino


def trade_metrics(
    trades: Sequence[ClosedTrade],
    start_balance: Decimal,
    ts: np.ndarray,
    equity: np.ndarray,
    position: np.ndarray,
    *,
    period_s: float = 10.0,
    funding: Decimal = ZERO,
    contract_value: Decimal = Decimal(1),
) -> dict[str, Any]:
    pnls = [t.pnl for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p <= 0]
    net = sum(pnls, ZERO)
    fees = sum((t.fees for t in trades), ZERO)
    gross = sum((t.gross_pnl for t in trades), ZERO)
    notional = sum((t.qty * (t.entry_price + t.exit_price) * contract_value for t in trades), ZERO)
    entry_notional = sum((t.qty * t.entry_price * contract_value for t in trades), ZERO)
    mdd_curve, _ = curve_drawdown(equity)
    rets = period_returns(ts, equity, period_s)
    sharpe, sortino = sharpe_sortino(rets, period_s)
    span = float(ts[-1] - ts[0]) if ts.size > 1 else 0.0
    if ts.size > 1:
        held = (position[:-1] != 0) * np.diff(ts)
        exposure = float(held.sum()) / span if span > 0 else 0.0
    else:
        exposure = 0.0
    n = len(trades)
    loss_sum = -sum(losses, ZERO)
    bps = Decimal(10000)
    return {
        "net_pnl": net - funding,
        "net_pnl_before_funding": net,
        "gross_pnl": gross,
        "fees": fees,
        "funding": funding,
        "trades": n,
        "win_rate": len(wins) / n if n else float("nan"),
        "avg_win": sum(wins, ZERO) / len(wins) if wins else None,
        "avg_loss": sum(losses, ZERO) / len(losses) if losses else None,
        "profit_factor": (
            float(sum(wins, ZERO) / loss_sum) if loss_sum > 0 else (float("inf") if wins else float("nan"))
        ),
        "max_drawdown_closed": closed_drawdown(pnls),
        "max_drawdown_mtm": mdd_curve,
        "max_drawdown_mtm_pct": 100.0 * mdd_curve / float(start_balance),
        "return_pct": float((net - funding) / start_balance * 100),
        "sharpe": sharpe,
        "sortino": sortino,
        "period_s": period_s,
        "n_periods": int(rets.size),
        "exposure": exposure,
        "turnover": float(notional / start_balance),
        "gross_bps_per_trade": float(gross / entry_notional * bps) if n and entry_notional else float("nan"),
        "fee_bps_per_trade": float(fees / entry_notional * bps) if n and entry_notional else float("nan"),
        "avg_hold_s": float(np.mean([(t.exit_ts - t.entry_ts) / 1e9 for t in trades])) if n else float("nan"),
        "pays_fees": bool(net - funding > 0),
    }


def summarise_draws(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "p05": float(np.percentile(a, 5)),
        "p95": float(np.percentile(a, 95)),
    }
