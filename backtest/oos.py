"""Trading after fees on the rows a trained model has NOT seen (pure orchestration over backtest).

The fold models of a walk-forward are not saved, so only the final model can trade, and only on
the rows after everything its training touched: the last training sample AND the ``horizon``
rows whose prices made that sample's label. :func:`oos_start_ts` finds that boundary from the
training rows' timestamps and the manifest's ``final_train_end_ts``; :func:`oos_suite` runs
:func:`backtest.suite.backtest_suite` (model + flat / buy-and-hold / persistence, fees and
latency on) on the books after it. The model's windows may warm up on earlier books (inputs
only, known at the time); no signal at or before the boundary is traded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest.data import Books, infer_instrument
from backtest.run import RunConfig
from backtest.signals import SignalStream, model_spec, model_probs, sampled_probs
from backtest.suite import SuiteResult, backtest_suite


@dataclass
class OosRange:
    final_train_end_ts: int  # last training sample (manifest data_range)
    label_end_ts: int  # last row whose price a training label used
    start_ts: int  # first book traded (> label_end_ts); 0 if none
    end_ts: int
    n_books: int
    i0: int  # first book row in the recording


def oos_start_ts(row_ts: np.ndarray, final_train_end_ts: int, horizon: int) -> int:
    """Timestamp of the last row a training label of the final model saw: ``horizon`` training
    rows after the last training sample (or the last row). Out of sample = strictly after it."""
    row_ts = np.asarray(row_ts, dtype=np.int64)
    k = int(np.searchsorted(row_ts, final_train_end_ts, side="left"))
    if k >= row_ts.size or int(row_ts[k]) != int(final_train_end_ts):
        raise ValueError(f"final_train_end_ts {final_train_end_ts} is not a row of the training data")
    return int(row_ts[min(k + horizon, row_ts.size - 1)])


def oos_range(books: Books, final_train_end_ts: int, label_end_ts: int) -> OosRange:
    i0 = int(np.searchsorted(books.ts, label_end_ts, side="right"))
    n = len(books) - i0
    return OosRange(
        final_train_end_ts,
        label_end_ts,
        int(books.ts[i0]) if n else 0,
        int(books.ts[-1]) if n else 0,
        n,
        i0,
    )


def restrict(stream: SignalStream, books: Books, rng: OosRange) -> SignalStream:
    """The stream's signals on the out-of-sample books only (rows re-based on ``books.slice``)."""
    if stream.ts is None:
        probs = stream.probs[rng.i0 :]
        return SignalStream(stream.name, stream.classes, probs, stream.ttl_ns, stream.model_id)
    keep = stream.ts > rng.label_end_ts
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
    oos = books.slice(rng.i0, len(books))
    stream = restrict(model_stream(pred, books), books, rng)
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


def oos_summary(res: SuiteResult | None, rng: OosRange, model_id: str) -> dict[str, Any]:
    """The ``trading_oos`` manifest entry: the range and each run's after-fee figures (JSON-able)."""
    from backtest.report import jsonable
    from backtest.suite import verdict

    out: dict[str, Any] = {
        "model": model_id,
        "which_model": "final",
        "final_train_end_ts": rng.final_train_end_ts,
        "label_end_ts": rng.label_end_ts,
        "start_ts": rng.start_ts,
        "end_ts": rng.end_ts,
        "n_books": rng.n_books,
    }
    if res is None:
        out["runs"] = {}
        out["verdict"] = "No out-of-sample books after the final model's training window: nothing was traded."
        return out
    runs = {"model": res.model_metrics} | res.baselines
    keys = ("trades", "net_pnl", "fees", "gross_pnl", "win_rate", "pays_fees")
    out["runs"] = {k: {m: jsonable(runs[k][m]) for m in keys} for k in ROWS if k in runs}
    out["verdict"] = verdict(res)
    out["notes"] = list(res.notes)
    return out


def _f(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    return f"{float(v):.4f}" if not isinstance(v, int) else str(v)


def oos_markdown(summary: dict[str, Any]) -> str:
    """The report.md section "Trading after fees (out of sample)"."""
    s = summary
    lines = [
        "",
        "## Trading after fees (out of sample)",
        "",
        "The walk-forward fold models are not saved, so this trades the **final model** "
        f"({s['model']}), and only on books it has not seen: its last training sample is at "
        f"{_iso(s['final_train_end_ts'])} and that sample's label used prices up to "
        f"{_iso(s['label_end_ts'])}; out of sample here = the books strictly after that, "
        f"{_iso(s['start_ts'])} .. {_iso(s['end_ts'])} ({s['n_books']} books). The walk-forward folds' "
        "test ranges above are in-sample for the final model and are NOT traded. The model's "
        "input windows may start on earlier books (past inputs only). Fees and latency on, "
        "as in `depthpilot backtest`.",
        "",
    ]
    if s["runs"]:
        lines += ["| run | trades | net PnL after fees | fees | gross PnL | win rate |", "|---|---|---|---|---|---|"]
        for k, m in s["runs"].items():
            lines.append(
                f"| {k} | {m['trades']} | {_f(m['net_pnl'])} | {_f(m['fees'])} | {_f(m['gross_pnl'])} "
                f"| {_f(m['win_rate'])} |"
            )
        lines.append("")
    lines += [s["verdict"], ""]
    return "\n".join(lines)
