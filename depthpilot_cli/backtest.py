"""``depthpilot backtest`` / ``evaluate`` / ``optimize``: the live trading code on recorded books,
fees and latency always on, with baselines on the same events and one HTML report each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from depthpilot_cli.common import app, console, progress


def _err(msg: str) -> None:
    """One line on stderr, never wrapped or parsed as markup."""
    console.print(msg, style="red", soft_wrap=True, markup=False, highlight=False)


def trader_config(config: Path | None, sets: list[str]):
    """TraderConfig from a JSON/TOML file (flat, or under a ``[trader]`` table) and ``--set k=v``."""
    from trader.config import TraderConfig, config_from_dict, parse_param

    cfg = TraderConfig()
    if config is not None:
        try:
            text = config.read_text()
            if config.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:
            _err(f"--config {config}: {exc}")
            raise typer.Exit(2) from None
        data = data.get("trader", data)
        try:
            cfg = config_from_dict({k: str(v) for k, v in data.items()})
        except ValueError as exc:
            _err(f"--config {config}: {exc}")
            raise typer.Exit(2) from None
    for s in sets:
        name, sep, value = s.partition("=")
        if not sep:
            _err(f"--set {s!r}: want name=value")
            raise typer.Exit(2)
        try:
            cfg = parse_param(cfg, name.strip(), value)
        except ValueError as exc:
            _err(f"--set {s}: {exc}")
            raise typer.Exit(2) from None
    return cfg


def run_config(config, sets, latency_ms: float, taker_fee: str | None, funding_rate: str | None, balance: str):
    from decimal import Decimal, InvalidOperation

    from backtest.run import RunConfig
    from trader.domain import Fees

    try:
        fees = Fees(taker=Decimal(taker_fee)) if taker_fee is not None else Fees()
        fr = Decimal(funding_rate) if funding_rate is not None else None
        bal = Decimal(balance)
    except InvalidOperation:
        _err("--taker-fee / --funding-rate / --balance: not a decimal number")
        raise typer.Exit(2) from None
    if latency_ms < 0:
        _err("--latency-ms must be >= 0")
        raise typer.Exit(2)
    return RunConfig(
        trader=trader_config(config, sets), fees=fees, latency_ns=int(latency_ms * 1e6), balance=bal, funding_rate=fr
    )


def _load(path: Path, depth: int):
    from backtest.data import BacktestInputError, load_recording

    try:
        return load_recording(path, depth=depth)
    except BacktestInputError as exc:
        _err(f"{exc}")
        raise typer.Exit(2) from None


def _model(model: Path | None):
    from backtest.signals import load_model

    try:
        return load_model(model)
    except Exception as exc:  # noqa: BLE001 - an artifact that does not load: one line, not a traceback
        _err(f"--model {model}: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None


def _suite(rec: Path, pred, cfg, n_random: int, seed: int, period_s: float, bar) -> tuple[Any, Any, Any]:
    from backtest.data import infer_instrument
    from backtest.signals import feature_matrix, model_depth, model_probs, model_spec, sampled_probs
    from backtest.suite import backtest_suite

    task = bar.add_task(f"books {rec.name}", total=None)
    books = _load(rec, model_depth(pred))
    bar.update(task, total=1, completed=1)
    t2 = bar.add_task("features + model", total=1)
    X = feature_matrix(pred, books)
    stream = model_probs(pred, books, X)  # per book: the forecast metrics of `evaluate`
    # trading: on the model's sampled clock when it has one, as the running services feed it
    trade_stream = sampled_probs(pred, books) if model_spec(pred).sample_interval_s else stream
    bar.update(t2, completed=1)
    tasks: dict[str, int] = {}

    def on_progress(name: str, i: int, n: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name if name != "random" else "random entries", total=n)
        bar.update(tasks[name], completed=i)

    man = pred.artifact.manifest
    res = backtest_suite(
        books,
        trade_stream,
        infer_instrument(books),
        cfg,
        label_horizon=int(man.label.get("horizon", 20)),
        label_threshold=float(man.label.get("threshold", 0.0)),
        n_random=n_random,
        seed=seed,
        period_s=period_s,
        on_progress=on_progress,
    )
    return res, books, (X, stream)


def _outdir(out: Path, recs: list[Path], i: int) -> Path:
    return out if len(recs) == 1 else out / f"{i:02d}-{recs[i].name.split('.')[0]}"


def parse_grid(text: str, base) -> dict[str, tuple[Any, ...]]:
    """``--grid`` JSON: every field a TraderConfig field, every value accepted by it."""
    from trader.config import parse_param

    try:
        g = json.loads(text)
        if not isinstance(g, dict) or not g or not all(isinstance(v, list) and v for v in g.values()):
            raise ValueError("want a JSON object of non-empty lists")
        for k, vals in g.items():
            for v in vals:
                parse_param(base, k, str(v))
    except ValueError as exc:
        _err(f"--grid: {exc}")
        raise typer.Exit(2) from None
    return {k: tuple(parse_param(base, k, str(v)).__getattribute__(k) for v in vals) for k, vals in g.items()}


COMMON = dict(
    model=typer.Option(None, "--model", "-m", help="model artifact dir (default: the bundled book model)"),
    out=typer.Option(Path("runs/backtest"), "--out", "-o", help="output directory"),
    config=typer.Option(None, "--config", help="TraderConfig fields as JSON or TOML"),
    sets=typer.Option([], "--set", help="a TraderConfig field, name=value (repeatable)"),
    latency_ms=typer.Option(50.0, help="order latency: the fill sees the book this long after the decision"),
    taker_fee=typer.Option(None, help="taker fee fraction (default 0.00055)"),
    funding_rate=typer.Option(None, help="funding rate per 8 h at 00/08/16 UTC (off by default)"),
    balance=typer.Option("10000", help="starting balance"),
    random_draws=typer.Option(20, help="random-entry baseline draws"),
    seed=typer.Option(0),
    period_s=typer.Option(10.0, help="return period of Sharpe / Sortino (annualised)"),
)


@app.command()
def backtest(
    recordings: list[Path] = typer.Argument(..., help="recordings (raw Binance dir, clip, CSV, Parquet)"),
    model: Path | None = COMMON["model"],
    out: Path = COMMON["out"],
    config: Path | None = COMMON["config"],
    sets: list[str] = COMMON["sets"],
    latency_ms: float = COMMON["latency_ms"],
    taker_fee: str | None = COMMON["taker_fee"],
    funding_rate: str | None = COMMON["funding_rate"],
    balance: str = COMMON["balance"],
    random_draws: int = COMMON["random_draws"],
    seed: int = COMMON["seed"],
    period_s: float = COMMON["period_s"],
) -> None:
    """Backtest a model on recordings: trades CSV, metrics, plots and one HTML report per recording."""
    from backtest.output import write_backtest
    from backtest.suite import verdict

    cfg = run_config(config, sets, latency_ms, taker_fee, funding_rate, balance)
    pred = _model(model)
    for i, rec in enumerate(recordings):
        with progress() as bar:
            res, _, _ = _suite(rec, pred, cfg, random_draws, seed, period_s, bar)
        path = write_backtest(_outdir(out, recordings, i), res)
        console.print(verdict(res))
        console.print(f"report: {path}")


@app.command()
def evaluate(
    books: list[Path] = typer.Option(..., "--books", help="recordings the model has not seen"),
    model: Path | None = COMMON["model"],
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o"),
    train_books: Path | None = typer.Option(None, help="the training recording, for exact drift quantiles"),
    config: Path | None = COMMON["config"],
    sets: list[str] = COMMON["sets"],
    latency_ms: float = COMMON["latency_ms"],
    taker_fee: str | None = COMMON["taker_fee"],
    funding_rate: str | None = COMMON["funding_rate"],
    balance: str = COMMON["balance"],
    random_draws: int = COMMON["random_draws"],
    seed: int = COMMON["seed"],
    period_s: float = COMMON["period_s"],
) -> None:
    """A model on new recordings: forecast metrics (direction vs moves), drift, and the backtest report."""
    from backtest.evaluation import drift, evaluate_forecasts
    from backtest.output import forecast_sections, write_backtest
    from backtest.signals import feature_matrix, model_depth
    from backtest.suite import verdict

    cfg = run_config(config, sets, latency_ms, taker_fee, funding_rate, balance)
    pred = _model(model)
    man = pred.artifact.manifest
    train_X = feature_matrix(pred, _load(train_books, model_depth(pred))) if train_books else None
    for i, rec in enumerate(books):
        with progress() as bar:
            res, bk, (X, stream) = _suite(rec, pred, cfg, random_draws, seed, period_s, bar)
        ev = evaluate_forecasts(bk.mid(), stream.probs, man.label, pred.classes)
        dr = drift(X, pred.feature_names, man, train_X)
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
            f"log-loss model {m.get('log_loss', float('nan')):.4f} vs persistence "
            f"{p.get('log_loss', float('nan')):.4f}; direction AUC {m.get('direction_auc', float('nan')):.3f}"
        )
        console.print(verdict(res))
        console.print(f"report: {path}")


@app.command()
def optimize(
    recording: Path = typer.Argument(..., help="one recording: fit on its start, judge on its end"),
    model: Path | None = COMMON["model"],
    out: Path = typer.Option(Path("runs/optimize"), "--out", "-o"),
    train_frac: float = typer.Option(0.6, help="share of the books in the training window"),
    optuna_trials: int = typer.Option(0, "--optuna", help="optuna TPE trials over the grid (0 = full grid)"),
    grid: str | None = typer.Option(
        None,
        help='JSON {"field": [values], ...} of TraderConfig fields (default: threshold, K, trailing lock, cooldown)',
    ),
    config: Path | None = COMMON["config"],
    sets: list[str] = COMMON["sets"],
    latency_ms: float = COMMON["latency_ms"],
    taker_fee: str | None = COMMON["taker_fee"],
    funding_rate: str | None = COMMON["funding_rate"],
    balance: str = COMMON["balance"],
    random_draws: int = COMMON["random_draws"],
    seed: int = COMMON["seed"],
    period_s: float = COMMON["period_s"],
) -> None:
    """Grid (or optuna) over threshold, K, trailing stop and cooldown on a training window; report
    both windows, the chosen parameters judged on the later window only."""
    from dataclasses import replace

    from backtest import report as R
    from backtest.data import infer_instrument
    from backtest.optimize import DEFAULT_GRID
    from backtest.optimize import optimize as run_opt
    from backtest.output import window_table, write_backtest
    from backtest.signals import model_depth
    from backtest.suite import backtest_suite, verdict

    cfg = run_config(config, sets, latency_ms, taker_fee, funding_rate, balance)
    the_grid = parse_grid(grid, cfg.trader) if grid else DEFAULT_GRID
    pred = _model(model)
    books = _load(recording, model_depth(pred))
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
                seed=seed,
                on_progress=lambda i, n: bar.update(t, total=n, completed=i),
            )
        except ValueError as exc:
            _err(f"{exc}")
            raise typer.Exit(2) from None
    best_cfg = replace(cfg, trader=replace(cfg.trader, **res.best))
    ev_books = books.slice(res.split_row, len(books))
    man = pred.artifact.manifest
    suite = backtest_suite(
        ev_books,
        res.eval_stream,
        inst,
        best_cfg,
        label_horizon=int(man.label.get("horizon", 20)),
        label_threshold=float(man.label.get("threshold", 0.0)),
        n_random=random_draws,
        seed=seed,
        period_s=period_s,
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
