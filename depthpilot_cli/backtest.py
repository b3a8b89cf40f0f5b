"""``depthpilot backtest`` / ``evaluate`` / ``optimize``: the live trading code on recorded books,
fees and latency always on, with baselines on the same events and one HTML report each. The
options they share are declared and parsed once (:mod:`depthpilot_cli.backtest_options`)."""

from __future__ import annotations

from pathlib import Path

import typer

from depthpilot_cli.backtest_options import BacktestOptions, backtest_options, fail, parse_grid
from depthpilot_cli.common import app, console, progress


def _suite(prep, pred, opts: BacktestOptions, bar):
    from backtest.suite import backtest_suite

    tasks: dict[str, int] = {}

    def on_progress(name: str, i: int, n: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name if name != "random" else "random entries", total=n)
        bar.update(tasks[name], completed=i)

    man = pred.artifact.manifest
    res = backtest_suite(
        prep.books,
        prep.stream,
        prep.inst,
        prep.run_config(opts.cfg),
        label_horizon=int(man.label.get("horizon", 20)),
        label_threshold=float(man.label.get("threshold", 0.0)),
        n_random=opts.random_draws,
        seed=opts.seed,
        period_s=opts.period_s,
        on_progress=on_progress,
        row_price=prep.row_price,
    )
    res.notes[:0] = prep.notes
    return res


def _prepared(rec: Path, pred, opts: BacktestOptions, bar):
    task = bar.add_task(f"input + features + model: {rec.name}", total=1)
    prep = opts.prepare(pred, rec)
    bar.update(task, completed=1)
    return prep


def _outdir(out: Path, recs: list[Path], i: int) -> Path:
    return out if len(recs) == 1 else out / f"{i:02d}-{recs[i].name.split('.')[0]}"


@app.command()
@backtest_options
def backtest(
    recordings: list[Path] = typer.Argument(
        ..., help="recordings (raw Binance dir, clip, CSV, Parquet); kline files for a candle model"
    ),
    out: Path = typer.Option(Path("runs/backtest"), "--out", "-o", help="output directory"),
    *,
    opts: BacktestOptions,
) -> None:
    """Backtest a model on recordings: trades CSV, metrics, plots and one HTML report per recording."""
    from backtest.output import write_backtest
    from backtest.suite import verdict

    pred = opts.predictor()
    for i, rec in enumerate(recordings):
        with progress() as bar:
            res = _suite(_prepared(rec, pred, opts, bar), pred, opts, bar)
        path = write_backtest(_outdir(out, recordings, i), res)
        console.print(verdict(res))
        console.print(f"report: {path}")


def _train_X(pred, train_books: Path, opts: BacktestOptions):
    """The model's inputs on the training recording, on its own rows (drift quantiles)."""
    prep = opts.prepare(pred, train_books)
    return prep.rows.X


@app.command()
@backtest_options
def evaluate(
    books: list[Path] = typer.Option(..., "--books", help="recordings (or kline files) the model has not seen"),
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o"),
    train_books: Path | None = typer.Option(None, help="the training recording, for exact drift quantiles"),
    *,
    opts: BacktestOptions,
) -> None:
    """A model on new recordings: forecast metrics on the model's own rows (direction vs moves,
    persistence and the stored baselines), drift, and the backtest report."""
    from backtest.evaluation import drift, evaluate_forecasts
    from backtest.output import forecast_sections, write_backtest
    from backtest.suite import verdict
    from predictor.holdout import stored_baselines

    pred = opts.predictor()
    man = pred.artifact.manifest
    try:
        stored = stored_baselines(pred.artifact) if man.baselines else None
    except ValueError as exc:
        raise fail(f"--model: {exc}") from None
    train_X = _train_X(pred, train_books, opts) if train_books else None
    for i, rec in enumerate(books):
        with progress() as bar:
            prep = _prepared(rec, pred, opts, bar)
            res = _suite(prep, pred, opts, bar)
        rows = prep.rows
        probs = rows.stream.probs
        ev = evaluate_forecasts(
            rows.price, probs, man.label, pred.classes, mask=prep.in_window, stored=stored, clock=rows.clock
        )
        dr = drift(rows.X[prep.in_window], pred.feature_names, man, train_X)
        path = write_backtest(
            _outdir(out, books, i),
            res,
            f"depthpilot evaluate: {pred.model_id}",
            forecast_sections(ev, dr),
            {"forecast": ev, "drift": dr},
        )
        m = ev.get("model", {})
        p = ev.get("persistence", {})
        console.print(
            f"rows: {rows.clock}; log-loss model {m.get('log_loss', float('nan')):.4f} vs persistence "
            f"{p.get('log_loss', float('nan')):.4f}; direction AUC {m.get('direction_auc', float('nan')):.3f}"
        )
        console.print(verdict(res))
        console.print(f"report: {path}")


@app.command()
@backtest_options
def optimize(
    recording: Path = typer.Argument(..., help="one recording: fit on its start, judge on its end"),
    out: Path = typer.Option(Path("runs/optimize"), "--out", "-o"),
    train_frac: float = typer.Option(0.6, help="share of the books in the training window"),
    optuna_trials: int = typer.Option(0, "--optuna", help="optuna TPE trials over the grid (0 = full grid)"),
    grid: str | None = typer.Option(
        None,
        help='JSON {"field": [values], ...} of TraderConfig fields (default: threshold, K, trailing lock, cooldown)',
    ),
    *,
    opts: BacktestOptions,
) -> None:
    """Grid (or optuna) over threshold, K, trailing stop and cooldown on a training window; report
    both windows, the chosen parameters judged on the later window only."""
    from dataclasses import replace

    from backtest import report as R
    from backtest.data import BacktestInputError, infer_instrument, load_recording
    from backtest.inputs import restrict_books
    from backtest.model_rows import feature_kind
    from backtest.optimize import DEFAULT_GRID
    from backtest.optimize import optimize as run_opt
    from backtest.output import window_table, write_backtest
    from backtest.signals import model_depth
    from backtest.suite import backtest_suite, verdict

    cfg = opts.cfg
    the_grid = parse_grid(grid, cfg.trader) if grid else DEFAULT_GRID
    pred = opts.predictor()
    if feature_kind(pred) != "snapshot":
        raise fail(f"--model {pred.model_id}: optimize runs book models only (this one eats candles)")
    try:
        books = load_recording(recording, depth=model_depth(pred), cache=opts.book_cache)
        books = restrict_books(books, opts.start, opts.end)
    except BacktestInputError as exc:
        raise fail(f"{exc}") from None
    inst = infer_instrument(books)
    with progress() as bar:
        t = bar.add_task("grid on the training window", total=None)
        try:
            res = run_opt(
                books,
                pred,
                inst,
                cfg,
                train_frac=train_frac,
                grid=the_grid,
                optuna_trials=optuna_trials,
                seed=opts.seed,
                on_progress=lambda i, n: bar.update(t, total=n, completed=i),
            )
        except ValueError as exc:
            raise fail(f"{exc}") from None
    best_cfg = replace(cfg, trader=replace(cfg.trader, **res.best))
    ev_books = books.slice(res.split_row, len(books))
    assert res.eval_stream is not None
    man = pred.artifact.manifest
    suite = backtest_suite(
        ev_books,
        res.eval_stream,
        inst,
        best_cfg,
        label_horizon=int(man.label.get("horizon", 20)),
        label_threshold=float(man.label.get("threshold", 0.0)),
        n_random=opts.random_draws,
        seed=opts.seed,
        period_s=opts.period_s,
    )
    suite.notes += res.notes
    grid_txt = ", ".join(f"{k} in {list(v)}" for k, v in the_grid.items())
    top = "".join(
        f"<tr><td>{r['params']}</td><td>{R.fmt(r['net_pnl'])}</td><td>{r['trades']}</td></tr>" for r in res.table[:10]
    )
    sections = [
        (
            "Windows",
            f"<p>training: the first {train_frac:.0%} of the books (to {R.iso(res.split_ts)}); "
            f"evaluation: the rest. Grid: {grid_txt}{' (optuna)' if optuna_trials else ''}. Chosen on the "
            f"training window only: <code>{res.best}</code>.</p>"
            + window_table(
                {
                    "training, chosen": res.train_best,
                    "evaluation, chosen": res.eval_best,
                    "training, defaults": res.train_default,
                    "evaluation, defaults": res.eval_default,
                }
            ),
        ),
        (
            "Best 10 on the training window",
            f"<table id='grid'><tr><th>params</th><th>net PnL</th><th>trades</th></tr>{top}</table>",
        ),
    ]
    path = write_backtest(
        out,
        suite,
        "depthpilot optimize (evaluation window)",
        sections,
        {
            "optimize": {
                "best": res.best,
                "split_ts": res.split_ts,
                "train_best": res.train_best,
                "eval_best": res.eval_best,
                "train_default": res.train_default,
                "eval_default": res.eval_default,
                "tried": res.table,
            }
        },
    )
    console.print(f"chosen on the training window: {res.best}")
    console.print(verdict(suite))
    console.print(f"report: {path}")
