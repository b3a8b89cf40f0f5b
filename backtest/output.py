"""Write a backtest / evaluation / optimisation result into its output directory (the file edge).

Every report has the same layout: the verdict sentence, the recording and the costs, the
metrics table (model and baselines on the same events), the equity and drawdown plots, the
random-draw spread, the trades; ``evaluate`` adds the forecast metrics and drift; ``optimize``
shows the training and the later evaluation window side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backtest import report as R
from backtest.metrics import curve_drawdown
from backtest.suite import SuiteResult, verdict


def _columns(res: SuiteResult) -> dict[str, dict[str, Any]]:
    cols = {"model": res.model_metrics}
    for k in ("flat", "buy_and_hold", "persistence"):
        cols[k] = res.baselines[k]
    if res.random_summary:
        rm = {k: v.get("mean") for k, v in res.random_summary.items()}
        cols[f"random x{res.random_summary['net_pnl']['n']} (mean)"] = rm
    return cols


def _random_table(res: SuiteResult) -> str:
    if not res.random_summary:
        return "<p>" + "; ".join(res.notes) + "</p>"
    return (
        '<table id="random"><tr><th>metric</th><th>mean</th><th>sd</th><th>min</th><th>p05</th><th>p95</th>'
        "<th>max</th></tr>"
        + "".join(
            f"<tr><td>{k}</td>"
            + "".join(f"<td>{R.fmt(v.get(s), k)}</td>" for s in ("mean", "std", "min", "p05", "p95", "max"))
            + "</tr>"
            for k, v in res.random_summary.items()
        )
        + "</table>"
    )


def _costs(res: SuiteResult) -> dict[str, Any]:
    c = res.config
    return {
        "recording": res.books.get("source"),
        "exchange / symbol": f"{res.books['exchange']} {res.books['symbol']}",
        "books (valid)": f"{res.books['books']} ({res.books['valid_books']})",
        "span (s)": res.books["span_s"],
        "tick / lot (from the data)": f"{res.instrument.tick_size} / {res.instrument.lot_step}",
        "taker fee": f"{c.fees.taker} ({c.fees.taker * 10000} bps)",
        "order latency (ms)": f"{c.latency_ns / 1e6:g}",
        "funding rate per 8 h": str(c.funding_rate) if c.funding_rate is not None else "off",
        "start balance": str(c.balance),
        "budget x leverage": f"{c.trader.budget} x {c.trader.leverage}",
        "entry threshold / K": f"{c.trader.entry_threshold} / {c.trader.confirm_k}",
        "Sharpe/Sortino period": f"{res.period_s:g} s returns, annualised x sqrt(periods per 365 d)",
    }


def suite_sections(res: SuiteResult, out: Path, prefix: str = "") -> list[tuple[str, str]]:
    eq = {k: (r.equity_ts, r.equity) for k, r in res.runs.items()}
    dd = {k: (r.equity_ts, -curve_drawdown(r.equity)[1]) for k, r in res.runs.items()}
    pe, pd = out / f"{prefix}equity.png", out / f"{prefix}drawdown.png"
    R.plot_png(pe, eq, "equity (mark-to-market at mid, after fees)", res.instrument.settle_ccy)
    R.plot_png(pd, dd, "drawdown from the running peak", "drawdown")
    return [
        ("Costs and recording", R.kv_table(_costs(res), f"{prefix}costs")),
        ("Metrics: model and baselines on the same events", R.metrics_table(_columns(res), f"{prefix}metrics")),
        ("Equity", R.b64img(pe, "equity curve")),
        ("Drawdown", R.b64img(pd, "drawdown")),
        ("Random entries: spread over the draws", _random_table(res)),
        ("Model trades", R.trades_table(res.model.trades)),
        ("Notes", "<p>" + "<br>".join(res.notes or ["none"]) + "</p>"),
    ]


def suite_json(res: SuiteResult) -> dict[str, Any]:
    return {
        "verdict": verdict(res),
        "recording": res.books,
        "costs": _costs(res),
        "model": res.model_metrics,
        "baselines": res.baselines,
        "random_draws": res.random_summary,
        "notes": res.notes,
        "engine_counters": res.model.counters,
    }


def write_backtest(
    out: Path,
    res: SuiteResult,
    title: str = "depthpilot backtest",
    extra_sections: list[tuple[str, str]] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    R.write_trades_csv(out / "trades.csv", res.model.trades)
    sections = suite_sections(res, out)
    if extra_sections:
        sections = sections[:2] + extra_sections + sections[2:]
    data = suite_json(res)
    if extra_json:
        data.update(extra_json)
    R.write_json(out / "metrics.json", data)
    R.write_html(out / "report.html", title, verdict(res), res.model_metrics["pays_fees"], sections)
    return out / "report.html"


def forecast_sections(ev: dict[str, Any], dr: dict[str, Any]) -> list[tuple[str, str]]:
    keys = [
        "n",
        "accuracy",
        "log_loss",
        "brier",
        "direction_rows",
        "direction_auc",
        "move_auc",
        "score_return_spearman",
        "score_return_spearman_p",
    ]
    if not ev.get("rows"):
        fc = f"<p>{ev.get('note', 'no rows')}</p>"
    else:
        stored = ev.get("stored_baselines") or {}
        cols = [("model", ev["model"]), ("persistence", ev["persistence"])] + [
            (f"stored {k}", v) for k, v in stored.items()
        ]
        head = "<tr><th>metric</th>" + "".join(f"<th>{n}</th>" for n, _ in cols) + "</tr>"
        body = "".join(
            f"<tr><td>{k}</td>" + "".join(f"<td>{R.fmt(m.get(k))}</td>" for _, m in cols) + "</tr>" for k in keys
        )
        fc = (
            f"<p>rows: the model's own ({ev.get('clock') or 'one per book'}); "
            f"label: <code>{ev['label']}</code>; rows {ev['rows']}; label shares "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in ev["label_share"].items())
            + ". Direction = AUC of P(up) - P(down) on the up/down rows and its rank correlation with the "
            "forward return; move = AUC of 1 - P(flat) for a move beyond the threshold. Persistence counts "
            "P(next | last) online from pairs already known; the stored baselines are the manifest's, fitted on "
            "the training labels.</p>"
            f'<table id="forecast">{head}{body}</table>'
        )
    top = list(dr.get("features", {}).items())[:15]
    dtab = (
        '<table id="drift"><tr><th>feature</th><th>share outside</th></tr>'
        + "".join(f"<tr><td>{n}</td><td>{100 * v:.1f} %</td></tr>" for n, v in top)
        + "</table>"
    )
    dtxt = (
        f"<p>method: {dr.get('method')}; rows {dr.get('rows')}; mean share outside "
        f"{100 * dr.get('mean_share_outside', float('nan')):.1f} %; features mostly (> 50 %) outside: "
        f"{dr.get('features_mostly_outside')}.</p>"
        + (f"<p class='bad'>Missing: {dr['missing']}</p>" if dr.get("missing") else "")
    )
    return [("Forecast quality: model vs persistence", fc), ("Drift from the training range", dtxt + dtab)]


def window_table(rows: dict[str, dict[str, Any]]) -> str:
    keys = ["net_pnl", "fees", "trades", "win_rate", "gross_bps_per_trade", "max_drawdown_mtm", "sharpe"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{name}</td>" + "".join(f"<td>{R.fmt(m.get(k), k)}</td>" for k in keys) + "</tr>"
        for name, m in rows.items()
    )
    return f'<table id="windows"><tr><th>window / params</th>{head}</tr>{body}</table>'
