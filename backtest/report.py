"""Backtest / evaluation output directory: trades CSV, metrics JSON, PNG plots and ONE
self-contained HTML report (plots embedded as base64, the tables inline).

Files: ``trades.csv`` (every closed trade of the model, exact decimals), ``metrics.json``,
``equity.png``, ``drawdown.png``, ``report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from trader.actions import ClosedTrade

TRADE_COLUMNS = [
    "n",
    "exchange",
    "symbol",
    "side",
    "qty",
    "entry_ts",
    "exit_ts",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "gross_pnl",
    "fees",
    "pnl",
    "exit_reason",
]

ROWS = [
    ("net_pnl", "net PnL after fees"),
    ("gross_pnl", "gross PnL"),
    ("fees", "fees paid"),
    ("funding", "funding paid"),
    ("trades", "trades"),
    ("win_rate", "win rate"),
    ("avg_win", "average win"),
    ("avg_loss", "average loss"),
    ("profit_factor", "profit factor"),
    ("gross_bps_per_trade", "gross bps / trade"),
    ("fee_bps_per_trade", "fee bps / trade"),
    ("sharpe", "Sharpe (annualised)"),
    ("sortino", "Sortino (annualised)"),
    ("max_drawdown_closed", "max drawdown, closed trades"),
    ("max_drawdown_mtm", "max drawdown, mark-to-market"),
    ("exposure", "exposure time"),
    ("turnover", "turnover (x balance)"),
    ("avg_hold_s", "average hold (s)"),
]


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def write_trades_csv(path: Path, trades: Sequence[ClosedTrade]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRADE_COLUMNS)
        for k, t in enumerate(trades, 1):
            w.writerow(
                [
                    k,
                    t.exchange,
                    t.symbol,
                    t.side,
                    t.qty,
                    t.entry_ts,
                    t.exit_ts,
                    iso(t.entry_ts),
                    iso(t.exit_ts),
                    t.entry_price,
                    t.exit_price,
                    t.gross_pnl,
                    t.fees,
                    t.pnl,
                    t.exit_reason,
                ]
            )


def read_trades_csv(path: Path) -> list[dict[str, Any]]:
    """Rows with the money columns as exact ``Decimal``."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k in ("qty", "entry_price", "exit_price", "gross_pnl", "fees", "pnl"):
                row[k] = Decimal(row[k])
            for k in ("entry_ts", "exit_ts"):
                row[k] = int(row[k])
            out.append(row)
    return out


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Decimal):
        return f"{v:.4f}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞"
        if key in ("win_rate", "exposure"):
            return f"{100 * v:.1f} %"
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return html.escape(str(v))


# --------------------------------------------------------------------------- plots


def plot_png(path: Path, series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    for name, (ts, y) in series.items():
        t = (ts - ts[0]) / 1e9 if ts.size else ts
        ax.plot(t, y, label=name, lw=1.6 if name == "model" else 1.0)
    ax.set_title(title)
    ax.set_xlabel("seconds from the first book")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def b64img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


# --------------------------------------------------------------------------- HTML

CSS = """body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:12px 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}.bad{color:#b00;font-weight:bold}
.good{color:#070;font-weight:bold}img{max-width:100%;border:1px solid #ddd;margin:6px 0}code{background:#f4f4f4}"""


def metrics_table(columns: dict[str, dict[str, Any]], table_id: str = "metrics") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for key, label in ROWS:
        cells = "".join(f"<td>{fmt(m.get(key), key)}</td>" for m in columns.values())
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return f'<table id="{table_id}"><tr><th>metric</th>{head}</tr>{"".join(rows)}</table>'


def kv_table(d: dict[str, Any], table_id: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{fmt(v, str(k))}</td></tr>" for k, v in d.items())
    return f'<table id="{table_id}">{rows}</table>'


def trades_table(trades: Sequence[ClosedTrade], limit: int = 200) -> str:
    cols = ["side", "qty", "entry", "exit", "entry price", "exit price", "gross", "fees", "pnl", "reason"]
    rows = []
    for t in list(trades)[:limit]:
        vals = [
            t.side,
            t.qty,
            iso(t.entry_ts)[11:23],
            iso(t.exit_ts)[11:23],
            t.entry_price,
            t.exit_price,
            t.gross_pnl,
            t.fees,
            t.pnl,
            t.exit_reason,
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in vals) + "</tr>")
    more = f"<p>{len(trades) - limit} more in trades.csv</p>" if len(trades) > limit else ""
    return f'<table id="trades"><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr>{"".join(rows)}</table>{more}'


def write_html(path: Path, title: str, verdict: str, pays: bool | None, sections: list[tuple[str, str]]) -> None:
    cls = "good" if pays else "bad"
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    path.write_text(
        f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p id="verdict" class="{cls}">{html.escape(verdict)}</p>{body}
<p><small>generated {datetime.now(UTC).isoformat(timespec="seconds")} by depthpilot</small></p></body></html>""",
        encoding="utf-8",
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(jsonable(data), indent=1, sort_keys=False))
