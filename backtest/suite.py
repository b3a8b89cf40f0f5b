"""One backtest with its baselines, on the same events (the pure orchestration; no files).

:func:`backtest_suite` runs the model's signals through the engine and the paper exchange, then
the baselines (flat, buy-and-hold, random entries x N draws, persistence) with the same books,
latency, fees and trader config, and computes every run's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtest.baselines import buy_and_hold_plan, holding_rows, random_plan
from backtest.data import Books, describe
from backtest.metrics import summarise_draws, trade_metrics
from backtest.model_rows import tick_prices
from backtest.run import RunConfig, RunResult, flatten_row, run_scripted, run_signals
from backtest.signals import SignalStream, persistence_stream
from trader.domain import Instrument


@dataclass
class SuiteResult:
    books: dict[str, Any]
    instrument: Instrument
    config: RunConfig
    model: RunResult
    model_metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]  # name -> metrics
    random_draws: list[dict[str, Any]]
    random_summary: dict[str, dict[str, float]]
    runs: dict[str, RunResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    period_s: float = 10.0


def metrics_of(r: RunResult, inst: Instrument, period_s: float) -> dict[str, Any]:
    m = trade_metrics(
        r.trades,
        r.start_balance,
        r.equity_ts,
        r.equity,
        r.position,
        period_s=period_s,
        funding=r.funding_paid,
        contract_value=inst.contract_value,
    )
    m["open_qty_at_end"] = r.open_qty
    m["slippage"] = r.slippage
    return m


def backtest_suite(
    books: Books,
    stream: SignalStream,
    inst: Instrument,
    cfg: RunConfig,
    *,
    label_horizon: int = 20,
    label_threshold: float = 2e-5,
    n_random: int = 20,
    seed: int = 0,
    period_s: float = 10.0,
    on_progress: Callable[[str, int, int], None] | None = None,
    row_price: np.ndarray | None = None,
) -> SuiteResult:
    """``label_horizon`` counts the rows of ``stream``: books, or the model's own rows (sampled
    ticks, candle closes) when ``stream.ts`` is set; ``row_price`` prices those rows for the
    persistence baseline (default: the mid of the last book at or before each row)."""
    T = len(books)
    prog = (lambda name: lambda i: on_progress(name, i, T)) if on_progress else (lambda name: None)
    model = run_signals(books, stream, inst, cfg, on_progress=prog("model"), name="model")
    runs = {"model": model}
    last = flatten_row(books, cfg.latency_ns)
    runs["flat"] = run_signals(books, None, inst, cfg, name="flat")
    runs["buy_and_hold"] = run_scripted(books, buy_and_hold_plan(books, last), inst, cfg, "buy_and_hold")
    if stream.ts is not None and row_price is None:
        row_price = tick_prices(books, stream.ts)
    pers = persistence_stream(
        books, stream.classes, label_horizon, label_threshold, stream.ttl_ns, ts=stream.ts, price=row_price
    )
    runs["persistence"] = run_signals(books, pers, inst, cfg, on_progress=prog("persistence"), name="persistence")
    lengths = holding_rows(books, model.trades)
    first = int(np.argmax(books.valid)) if books.valid.any() else 0
    draws: list[dict[str, Any]] = []
    notes: list[str] = []
    if lengths:
        for d in range(n_random):
            plan = random_plan(last + 1, lengths, seed + d, first)
            r = run_scripted(books, plan, inst, cfg, f"random_{d}")
            draws.append(metrics_of(r, inst, period_s))
            if on_progress:
                on_progress("random", d + 1, n_random)
    else:
        notes.append("the model made no trade: no random-entry baseline to match it")
    mm = metrics_of(model, inst, period_s)
    base = {k: metrics_of(v, inst, period_s) for k, v in runs.items() if k != "model"}
    keys = ("net_pnl", "gross_pnl", "fees", "trades", "win_rate", "max_drawdown_mtm", "sharpe", "exposure")
    rsum = {k: summarise_draws([float(d[k]) for d in draws]) for k in keys} if draws else {}
    if model.open_qty:
        notes.append(f"a position of {model.open_qty} was still open at the end (the flatten did not fill)")
    return SuiteResult(describe(books), inst, cfg, model, mm, base, draws, rsum, runs, notes, period_s)


def verdict(res: SuiteResult) -> str:
    """The plain sentence at the top of the report."""
    m = res.model_metrics
    if m["trades"] == 0:
        return "The model made no trade on this recording: nothing to pay fees with, nothing earned."
    gross_bps, fee_bps = m["gross_bps_per_trade"], m["fee_bps_per_trade"]
    rnd = res.random_summary.get("net_pnl", {})
    beat = ""
    if rnd.get("n"):
        better = sum(1 for d in res.random_draws if d["net_pnl"] < m["net_pnl"])
        beat = f" It beat {better} of {rnd['n']} random-entry draws with the same number and length of trades."
    if m["pays_fees"]:
        return (
            f"The model PAYS its fees on this recording: net PnL {m['net_pnl']:.4f} after {m['fees']:.4f} of fees "
            f"over {m['trades']} trades (gross {gross_bps:+.2f} bps per trade against {fee_bps:.2f} bps of fees)."
            + beat
        )
    return (
        f"The model does NOT pay its fees on this recording: net PnL {m['net_pnl']:.4f} after {m['fees']:.4f} of "
        f"fees over {m['trades']} trades; it earned {gross_bps:+.2f} bps per trade before fees against "
        f"{fee_bps:.2f} bps of fees per round trip." + beat
    )
