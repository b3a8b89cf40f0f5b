"""Strategy parameters fitted on a training window, judged on a LATER window only.

The recording is split in time at ``train_frac``. Fitting sees only the training books: their
signals are computed from the training books alone, every grid point (or optuna trial) runs the
engine + paper exchange on them, and the best net PnL after fees wins (ties: fewer trades, then
grid order). The chosen parameters then run once on the evaluation window, whose signals may use
the last ``seq_len`` rows of the training window as warm-up (the past, known at that time) and
nothing else.

Signals are the ones ``depthpilot backtest`` trades (:func:`backtest.model_rows.book_rows`): on
the model's sampled clock when its manifest has one (one row per tick, the predictor service's own
step), else one row per book.
"""

from __future__ import annotations

import itertools

import numpy as np
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from backtest.data import Books
from backtest.run import RunConfig, run_signals
from backtest.model_rows import book_rows
from backtest.signals import SignalStream, model_probs, model_spec
from backtest.suite import metrics_of
from trader.domain import Instrument

DEFAULT_GRID: dict[str, tuple[Any, ...]] = {
    "entry_threshold": (0.45, 0.55, 0.65, 0.75),
    "confirm_k": (1, 3, 6),
    "trailing_lock_fraction": (0.3, 0.7),
    "stop_cooldown_s": (0.0, 120.0),
}


@dataclass
class OptimizeResult:
    split_ts: int
    split_row: int
    best: dict[str, Any]
    table: list[dict[str, Any]]  # every tried point with its training metrics, best first
    train_best: dict[str, Any]  # metrics of the best params on the training window
    eval_best: dict[str, Any]  # ... on the evaluation window
    train_default: dict[str, Any]
    eval_default: dict[str, Any]
    eval_stream: SignalStream | None = None
    notes: list[str] = field(default_factory=list)


def split(books: Books, train_frac: float) -> int:
    if not 0.1 <= train_frac <= 0.9:
        raise ValueError(f"train_frac={train_frac} must be in [0.1, 0.9]")
    return int(len(books) * train_frac)


def _cfg(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    return replace(cfg, trader=replace(cfg.trader, **params))


def points(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def fit(
    train: Books,
    stream: SignalStream,
    inst: Instrument,
    cfg: RunConfig,
    grid: dict[str, tuple[Any, ...]],
    *,
    optuna_trials: int = 0,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The best parameters on ``train`` alone, and every tried point's metrics."""
    tried: list[dict[str, Any]] = []

    def score(p: dict[str, Any]) -> dict[str, Any]:
        r = run_signals(train, stream, inst, _cfg(cfg, p), name="fit")
        m = metrics_of(r, inst, 10.0)
        row = {"params": p, "net_pnl": m["net_pnl"], "trades": m["trades"], "fees": m["fees"], "order": len(tried)}
        tried.append(row)
        if on_progress:
            on_progress(len(tried), optuna_trials or len(all_points))
        return row

    all_points = points(grid)
    if optuna_trials:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

        def objective(trial: Any) -> float:
            p = {k: trial.suggest_categorical(k, list(v)) for k, v in grid.items()}
            return float(score(p)["net_pnl"])

        study.optimize(objective, n_trials=optuna_trials)
    else:
        for p in all_points:
            score(p)
    ranked = sorted(tried, key=lambda r: (-r["net_pnl"], r["trades"], r["order"]))
    return dict(ranked[0]["params"]), ranked


def optimize(
    books: Books,
    pred: Any,
    inst: Instrument,
    cfg: RunConfig,
    *,
    train_frac: float = 0.6,
    grid: dict[str, tuple[Any, ...]] | None = None,
    optuna_trials: int = 0,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> OptimizeResult:
    grid = grid or DEFAULT_GRID
    k = split(books, train_frac)
    train = books.slice(0, k)
    train_stream = book_rows(pred, train).stream  # the training books only, on the model's clock
    best, table = fit(
        train, train_stream, inst, cfg, grid, optuna_trials=optuna_trials, seed=seed, on_progress=on_progress
    )
    ev_books, ev_stream = eval_window(books, pred, k)
    res = OptimizeResult(
        int(books.ts[k]) if k < len(books) else 0,
        k,
        best,
        table,
        metrics_of(run_signals(train, train_stream, inst, _cfg(cfg, best)), inst, 10.0),
        metrics_of(run_signals(ev_books, ev_stream, inst, _cfg(cfg, best)), inst, 10.0),
        metrics_of(run_signals(train, train_stream, inst, cfg), inst, 10.0),
        metrics_of(run_signals(ev_books, ev_stream, inst, cfg), inst, 10.0),
        ev_stream,
    )
    if not res.eval_best["pays_fees"]:
        res.notes.append("the parameters chosen on the training window do NOT pay their fees on the later window")
    return res


def eval_window(books: Books, pred: Any, k: int) -> tuple[Books, SignalStream]:
    """The books after the split and their signals, warm-up from the last ``seq_len`` rows of the
    training window: books, or ticks of the model's sampled clock (the books of the last
    ``seq_len + 1`` tick intervals before the split)."""
    spec = model_spec(pred)
    if not spec.sample_interval_s:
        ctx = max(0, k - pred.seq_len)
        s = model_probs(pred, books.slice(ctx, len(books)))
        s.probs = s.probs[k - ctx :]
        return books.slice(k, len(books)), s
    if k >= len(books):
        raise ValueError("the evaluation window is empty")
    t0 = int(books.ts[k])
    ctx = int(np.searchsorted(books.ts, t0 - (pred.seq_len + 1) * spec.sample_interval_ns, side="left"))
    s = book_rows(pred, books.slice(min(ctx, k), len(books))).stream
    assert s.ts is not None
    keep = s.ts >= t0  # ticks before the split describe training books: delivered there, not here
    s.probs, s.ts = s.probs[keep], s.ts[keep]
    return books.slice(k, len(books)), s
