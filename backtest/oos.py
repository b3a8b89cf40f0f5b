"""Trading after fees on the rows a trained model has NOT seen (pure orchestration over backtest).

Each walk-forward fold's model (saved under ``folds/fold-<k>`` of the artifact) trades its own
test range; the final model trades only the books after everything its training touched. For
every model the boundary is the last row whose price a training label used (the last training
sample plus ``horizon`` rows, :func:`label_end_ts`); only books strictly after it (and inside
the fold's test range) are traded, by :func:`backtest.suite.backtest_suite` (model + flat /
buy-and-hold / persistence, fees and latency on). The model's input windows may warm up on
earlier books (past inputs only); no signal at or before the boundary is traded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from backtest.data import Books, infer_instrument
from backtest.run import RunConfig
from backtest.signals import SignalStream, model_spec, model_probs, sampled_probs
from backtest.suite import SuiteResult, backtest_suite


@dataclass
class OosRange:
    train_end_ts: int  # last training sample of the model (manifest data_range final_train_end_ts)
    label_end_ts: int  # last row whose price a training label used
    start_ts: int  # first book traded (> label_end_ts); 0 if none
    end_ts: int  # last book traded
    n_books: int
    i0: int  # first / one-past-last book row in the recording
    i1: int


def label_end_ts(row_ts: np.ndarray, final_train_end_ts: int, horizon: int) -> int:
    """Timestamp of the last row a training label of the final model saw: ``horizon`` training
    rows after the last training sample (or the last row). Out of sample = strictly after it."""
    row_ts = np.asarray(row_ts, dtype=np.int64)
    k = int(np.searchsorted(row_ts, final_train_end_ts, side="left"))
    if k >= row_ts.size or int(row_ts[k]) != int(final_train_end_ts):
        raise ValueError(f"final_train_end_ts {final_train_end_ts} is not a row of the training data")
    return int(row_ts[min(k + horizon, row_ts.size - 1)])


def oos_range(books: Books, train_end_ts: int, label_end: int, hi_ts: int | None = None) -> OosRange:
    """The books strictly after ``label_end`` (and at or before ``hi_ts``, the end of a fold's test range)."""
    i0 = int(np.searchsorted(books.ts, label_end, side="right"))
    i1 = len(books) if hi_ts is None else int(np.searchsorted(books.ts, hi_ts, side="right"))
    i1 = max(i0, i1)
    n = i1 - i0
    return OosRange(
        train_end_ts, label_end, int(books.ts[i0]) if n else 0, int(books.ts[i1 - 1]) if n else 0, n, i0, i1
    )


def restrict(stream: SignalStream, rng: OosRange) -> SignalStream:
    """The stream's signals on the out-of-sample books only (rows re-based on ``books.slice``)."""
    if stream.ts is None:
        probs = stream.probs[rng.i0 : rng.i1]
        return SignalStream(stream.name, stream.classes, probs, stream.ttl_ns, stream.model_id)
    keep = (stream.ts > rng.label_end_ts) & (stream.ts <= rng.end_ts)
    return SignalStream(
        stream.name, stream.classes, stream.probs[keep], stream.ttl_ns, stream.model_id, ts=stream.ts[keep]
    )


def model_stream(pred: Any, books: Books) -> SignalStream:
    """The trading stream as `depthpilot backtest` makes it: on the model's sampled clock when it
    has one, else per book."""
    return sampled_probs(pred, books) if model_spec(pred).sample_interval_s else model_probs(pred, books)


def oos_suite(pred: Any, books: Books, rng: OosRange, cfg: RunConfig | None = None) -> SuiteResult | None:
    """The backtest suite on the out-of-sample books (None when there are fewer than 2)."""
    if rng.n_books < 2:
        return None
    cfg = cfg or RunConfig()
    oos = books.slice(rng.i0, rng.i1)
    stream = restrict(model_stream(pred, books), rng)
    man = pred.artifact.manifest
    return backtest_suite(
        oos,
        stream,
        infer_instrument(oos),
        cfg,
        label_horizon=int(man.label.get("horizon", 20)),
        label_threshold=float(man.label.get("threshold", 0.0)),
        n_random=0,
    )


ROWS = ("model", "flat", "buy_and_hold", "persistence")


def _iso(ns: int) -> str:
    from backtest.report import iso

    return iso(ns) if ns else "-"


def part_summary(name: str, res: SuiteResult | None, rng: OosRange, model_id: str) -> dict[str, Any]:
    """One model's out-of-sample range and each run's after-fee figures (JSON-able)."""
    from backtest.report import jsonable
    from backtest.suite import verdict

    out: dict[str, Any] = {
        "name": name,
        "model": model_id,
        "train_end_ts": rng.train_end_ts,
        "label_end_ts": rng.label_end_ts,
        "start_ts": rng.start_ts,
        "end_ts": rng.end_ts,
        "n_books": rng.n_books,
        "runs": {},
        "notes": [],
    }
    if res is None:
        out["verdict"] = "No out-of-sample books for this model: nothing was traded."
        return out
    runs = {"model": res.model_metrics} | res.baselines
    keys = ("trades", "net_pnl", "fees", "gross_pnl", "win_rate", "pays_fees")
    out["runs"] = {k: {m: jsonable(runs[k][m]) for m in keys} for k in ROWS if k in runs}
    out["verdict"] = verdict(res)
    out["notes"] = list(res.notes)
    return out


def oos_summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``trading_oos`` manifest entry: every part, the totals per run and the plain sentence."""
    total: dict[str, dict[str, Any]] = {}
    for p in parts:
        for k, m in p["runs"].items():
            t = total.setdefault(k, {"trades": 0, "net_pnl": Decimal(0), "fees": Decimal(0), "wins": 0})
            t["trades"] += int(m["trades"])
            t["net_pnl"] += Decimal(m["net_pnl"])
            t["fees"] += Decimal(m["fees"])
            t["wins"] += round((m["win_rate"] or 0.0) * int(m["trades"]))
    for t in total.values():
        t["win_rate"] = t["wins"] / t["trades"] if t["trades"] else None
        t["net_pnl"], t["fees"] = str(t["net_pnl"]), str(t["fees"])
    m = total.get("model")
    if not m:
        sent = "No out-of-sample books were traded: nothing says whether the model pays its fees."
    elif m["trades"] == 0:
        sent = "The model made no trade out of sample: nothing to pay fees with, nothing earned."
    else:
        pays = "PAYS" if Decimal(m["net_pnl"]) > 0 else "does NOT pay"
        base = ", ".join(f"{k} {Decimal(total[k]['net_pnl']):.4f}" for k in ROWS[1:] if k in total)
        sent = (
            f"Out of sample the model {pays} its fees: net PnL {Decimal(m['net_pnl']):.4f} after "
            f"{Decimal(m['fees']):.4f} of fees over {m['trades']} trades (baselines net: {base})."
        )
    return {"parts": parts, "total": total, "verdict": sent}


def _f(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x:.4f}" if np.isfinite(x) else "n/a"


def _table(runs: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| run | trades | net PnL after fees | fees | win rate |", "|---|---:|---:|---:|---:|"]
    for k, m in runs.items():
        rows.append(f"| {k} | {m['trades']} | {_f(m['net_pnl'])} | {_f(m['fees'])} | {_f(m['win_rate'])} |")
    return rows + [""]


def oos_markdown(summary: dict[str, Any]) -> str:
    """The report.md section "Trading after fees (out of sample)"."""
    lines = [
        "",
        "## Trading after fees (out of sample)",
        "",
        "The trading path of `depthpilot backtest` (engine + paper exchange, fees and latency on; "
        "flat, buy-and-hold and persistence baselines on the same books) on the books each model "
        "has NOT seen: strictly after the last price any of its training labels used (its last "
        "training sample + the label horizon). Each walk-forward fold's model (saved under "
        "`folds/`) trades its fold's test range; the final model trades only the books after its "
        "own training window (usually none: it trains on the most recent rows). The folds' test "
        "ranges are in-sample for the final model and are never traded with it. Input windows may "
        "start on earlier books (past inputs only).",
        "",
        f"**{summary['verdict']}**",
        "",
    ]
    if summary["total"]:
        lines += ["### All ranges together", ""] + _table(summary["total"])
    for p in summary["parts"]:
        lines += [
            f"### {p['name']}: {p['model']}",
            "",
            f"Last training sample {_iso(p['train_end_ts'])}, its label's last price {_iso(p['label_end_ts'])}; "
            f"traded (out of sample): {_iso(p['start_ts'])} .. {_iso(p['end_ts'])}, {p['n_books']} books.",
            "",
        ]
        lines += _table(p["runs"]) if p["runs"] else []
        lines += [p["verdict"], ""] + [f"- {n}" for n in p["notes"]] + [""]
    return "\n".join(lines)
