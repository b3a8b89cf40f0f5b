"""``depthpilot train``: LSTM training with walk-forward evaluation against baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from depthpilot_cli.common import app, console, load_spec, progress, settings


@app.command()
def train(
    source: str = typer.Option("klines", help="klines | books | features (a `features build` file) | store"),
    path: list[Path] = typer.Option(
        [],
        help="input file/dir (default: the bundled dataset for klines/books); "
        "books: repeat for several files of one stream",
    ),
    out: Path = typer.Option(Path("runs/model"), "--out", "-o", help="artifact directory"),
    kind: str = typer.Option("snapshot", help="books/store: snapshot | block"),
    interval: str = typer.Option("", help="store: the FeatureVector interval to train on ('' = per snapshot)"),
    exchange: Optional[str] = typer.Option(None),
    symbol: Optional[str] = typer.Option(None),
    spec: Optional[Path] = typer.Option(None, help="FeatureSpec JSON or a model manifest.json"),
    columns: str = typer.Option("relative", help="relative (drop price-level columns) | all"),
    label: str = typer.Option("updown", help="updown (3 classes) | binary_high"),
    horizon: int = typer.Option(5, help="label horizon in rows"),
    threshold: float = typer.Option(0.0005, help="return threshold of the label"),
    seq_len: int = typer.Option(30),
    hidden: int = typer.Option(32),
    layers: int = typer.Option(1),
    dropout: float = typer.Option(0.1),
    epochs: int = typer.Option(8),
    folds: int = typer.Option(4),
    seed: int = typer.Option(0),
    tune: int = typer.Option(
        0,
        "--tune",
        help="optuna trials per training window: nested, inside each walk-forward "
        "fold's training rows only (needs the train extra: `pip install depthpilot[train]`)",
    ),
    allow_imbalanced: bool = typer.Option(
        False,
        "--allow-imbalanced",
        help="train even when the labels leave a class almost empty "
        "(warned about and recorded in the manifest and report)",
    ),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of a bad-input error"),
) -> None:
    """Train an LSTM with walk-forward evaluation against baselines; writes weights, manifest, report."""
    opts = dict(locals())  # every option, by name, for _train
    from depthpilot_cli.errors import one_line_errors

    opts["paths"] = opts.pop("path")
    with one_line_errors("train", opts.pop("debug")):
        _train(**opts)


def _train(
    source,
    paths,
    out,
    kind,
    interval,
    exchange,
    symbol,
    spec,
    columns,
    label,
    horizon,
    threshold,
    seq_len,
    hidden,
    layers,
    dropout,
    epochs,
    folds,
    seed,
    tune,
    allow_imbalanced,
) -> None:
    from features.spec import FeatureSpec
    from predictor.dataset import DatasetError
    from predictor.labels import ImbalancedLabels, LabelError, LabelSpec, check_label_balance, make_labels
    from predictor.sources import (
        RELATIVE_CANDLE_COLUMNS,
        SourceError,
        from_books,
        from_feature_file,
        from_klines,
        from_store,
        relative_columns,
    )
    from predictor.train import TrainConfig
    from predictor.train import train as run_train
    from predictor.train_default import BOOK_RECORDING, KLINES  # the bundled datasets

    from depthpilot.paths import data_dir

    try:
        if source == "klines":
            fs = load_spec(spec) if spec else FeatureSpec(interval_s=60.0)
            if len(paths) > 1:
                raise SourceError("--source klines takes one --path")
            data = from_klines(paths[0] if paths else data_dir() / KLINES, fs)
            if columns == "relative":
                data = data.select(RELATIVE_CANDLE_COLUMNS)
        elif source == "books":
            fs = load_spec(spec) if spec else FeatureSpec(interval_s=1.0)
            data = from_books(paths or data_dir() / BOOK_RECORDING, fs, kind=kind)
        elif source == "features":
            if len(paths) != 1:
                raise SourceError("--path to one `depthpilot features build` file is required")
            data = from_feature_file(paths[0])
        elif source == "store":
            if not exchange or not symbol:
                raise SourceError("--source store needs --exchange and --symbol")
            from depthpilot.service import open_store

            data = from_store(open_store(settings()), exchange, symbol, interval)
        else:
            raise SourceError("--source must be klines, books, features or store")
        if columns == "relative" and source != "klines":
            data = data.select(relative_columns(data.names))
        cfg = TrainConfig(
            label=LabelSpec(kind=label, horizon=horizon, threshold=threshold),
            seq_len=seq_len,
            hidden=hidden,
            layers=layers,
            dropout=dropout,
            max_epochs=epochs,
            n_folds=folds,
            seed=seed,
            tune_trials=tune,
            model_name=out.name,
            allow_imbalanced=allow_imbalanced,
        )
    except (SourceError, ValueError, FileNotFoundError) as exc:
        raise SourceError(str(exc)) from exc  # one line, exit 2 (one_line_errors)
    try:  # before anything is printed or fitted: labels that leave a class almost empty
        check_label_balance(cfg.label, make_labels(cfg.label, data.prices), cfg.min_class_share)
    except ImbalancedLabels as exc:
        if not allow_imbalanced:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from None
        console.print(
            f"[bold yellow]WARNING: {exc}; training anyway (--allow-imbalanced), "
            "recorded in the manifest and report[/bold yellow]",
            markup=True,
            highlight=False,
        )
    console.print(f"{len(data.ts)} rows x {len(data.names)} features (spec {data.spec_hash})")
    with progress() as prog:
        task = prog.add_task("training", total=None)

        def on_progress(ev) -> None:
            where = f"fold {ev.fold}/{ev.n_folds}" if ev.stage == "fold" else ev.stage
            epoch = f" epoch {ev.epoch}" if ev.epoch is not None and ev.epoch >= 0 else ""
            prog.update(task, completed=ev.step, total=ev.steps_total, description=f"{where}{epoch}")

        try:
            artifact = run_train(
                cfg,
                data.X,
                data.ts,
                data.prices,
                data.names,
                data.spec_hash,
                out,
                progress=on_progress,
                features=data.features,
                save_folds=source == "books",  # traded on their test ranges below
            )
        except (DatasetError, LabelError) as exc:
            prog.stop()
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from None
    man = json.loads((Path(artifact) / "manifest.json").read_text())
    table = Table("predictor", "accuracy", "log-loss", "brier", title="walk-forward, out of sample")
    for who, r in man["metrics"]["walk_forward"].items():
        if isinstance(r, dict) and "mean_fold_accuracy" in r:
            table.add_row(
                who, f"{r['mean_fold_accuracy']:.4f}", f"{r['mean_fold_log_loss']:.4f}", f"{r['mean_fold_brier']:.4f}"
            )
    Console().print(table)
    if source == "books":
        man = _trading_oos(Path(artifact), paths or [data_dir() / BOOK_RECORDING], data.ts)
    for w in man["metrics"].get("warnings", []):
        console.print(f"[bold yellow]WARNING: {w}[/bold yellow]", highlight=False)
    console.print(f"artifact and report.md in {artifact}")


def _trading_oos(artifact: Path, paths: list[Path], row_ts) -> dict:
    """After `--source books`: the backtest's trading path (fees, latency, baselines) with each
    walk-forward fold's model on its test range and the final model after its training window;
    appended to report.md and the manifest (``metrics.trading_oos``). Returns the updated manifest."""
    from backtest.data import load_recording
    from backtest.oos import label_end_ts, oos_markdown, oos_range, oos_suite, oos_summary, part_summary
    from backtest.signals import load_model, model_depth
    from predictor.artifact import MANIFEST_FILE, write_manifest

    man = json.loads((artifact / MANIFEST_FILE).read_text())
    if len(paths) != 1:
        console.print("trading after fees: skipped (one --path recording needed)", highlight=False)
        return man
    horizon = int(man["label"]["horizon"])
    final = load_model(artifact)
    books = load_recording(paths[0], depth=model_depth(final))
    models = [(d.name.replace("-", " "), d) for d in sorted((artifact / "folds").glob("fold-*"))]
    parts = []
    for name, d in models + [("final model", artifact)]:
        pred = final if d == artifact else load_model(d)
        rng_ = pred.artifact.manifest.data_range
        train_end = int(rng_["final_train_end_ts"])
        label_end = label_end_ts(row_ts, train_end, horizon)
        hi = rng_.get("test_end_ts")
        if hi is not None and label_end >= int(rng_["test_start_ts"]):
            raise ValueError(f"{d}: test range starts before its training labels end")
        rng = oos_range(books, train_end, label_end, None if hi is None else int(hi))
        parts.append(part_summary(name, oos_suite(pred, books, rng), rng, pred.model_id))
    summary = oos_summary(parts)
    with open(artifact / "report.md", "a") as fh:
        fh.write(oos_markdown(summary))
    man["metrics"]["trading_oos"] = summary
    write_manifest(artifact, man)
    console.print(summary["verdict"], highlight=False)
    return man
