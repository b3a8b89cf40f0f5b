"""The ``depthpilot`` command line (typer + rich)."""
from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from depthpilot.paths import REPO_ROOT

app = typer.Typer(add_completion=False, no_args_is_help=True, help="depthpilot: order-book driven crypto trading pipeline")
console = Console(stderr=True)

SERVICES = ("collector", "features", "predictor", "trader", "notifier", "tgbot", "api")
DEFINITIONS_PATH = REPO_ROOT / "rabbitmq" / "definitions.json"


def _settings():
    from depthpilot.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def topology(
    write: bool = typer.Option(False, "--write", help="write rabbitmq/definitions.json"),
    check: bool = typer.Option(False, "--check", help="exit 1 if rabbitmq/definitions.json is stale"),
    path: Path = typer.Option(DEFINITIONS_PATH, help="definitions file"),
) -> None:
    """Print (or write/check) the RabbitMQ definitions generated from depthpilot/topology.py."""
    from depthpilot.topology import definitions_json

    text = definitions_json()
    if check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            console.print(f"[red]{path} is stale: run `depthpilot topology --write`[/red]")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")
        return
    sys.stdout.write(text)


@app.command()
def config() -> None:
    """Show the effective settings (secrets masked)."""
    s = _settings()
    table = Table("setting", "value")
    for k, v in s.safe_dict().items():
        table.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    Console().print(table)


def _service_class(name: str):
    mod = importlib.import_module(f"{name}.service")
    return getattr(mod, "SERVICE")


@app.command()
def run(service: str = typer.Argument(..., help=f"one of {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground (same as ``python -m SERVICE``)."""
    if service not in SERVICES:
        console.print(f"[red]unknown service {service!r}; choose from {', '.join(SERVICES)}[/red]")
        raise typer.Exit(2)
    from depthpilot.service import run_service

    raise typer.Exit(run_service(_service_class(service)))


@app.command("run-all")
def run_all(
    duration: Optional[float] = typer.Option(None, help="stop after N seconds (default: until Ctrl-C)"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="in-process bus and store (no Docker, no keys)"),
) -> None:
    """Run every service in ONE process on the in-memory bus and store."""
    import os

    from depthpilot.bus import connect_bus
    from depthpilot.service import open_store, setup_logging

    if memory:
        os.environ["AMQP_URL"] = "memory://"
        os.environ["MONGO_URL"] = "mongomock://"
        # the demo: replay a real recording (no internet, no keys), looping, 5x real time
        os.environ.setdefault("COLLECTOR_SOURCE", "replay")
        os.environ.setdefault("REPLAY_SPEED", "5")
        os.environ.setdefault("REPLAY_LOOP", "true")
    s = _settings()
    setup_logging(s)
    store = open_store(s)
    services = []
    for name in SERVICES:
        try:
            cls = _service_class(name)
        except (ImportError, AttributeError) as exc:
            console.print(f"[yellow]{name}: not available ({exc})[/yellow]")
            continue
        bus = connect_bus(s.amqp_url, name).start()
        services.append((cls(s, bus, store), bus))
    started = []
    for svc, bus in services:
        try:
            svc.start()
            started.append((svc, bus))
        except Exception as exc:  # noqa: BLE001 - one line, stop what started, non-zero exit
            console.print(f"[red]{svc.name}: cannot start: {exc}[/red]")
            for other, obus in reversed(started):
                other.stop()
                obus.close()
            bus.close()
            raise typer.Exit(2) from None
    console.print(f"[green]running {', '.join(svc.name for svc, _ in services)} in one process; Ctrl-C to stop[/green]")
    stop = threading.Event()
    t0 = time.monotonic()
    last_report = t0
    try:
        while not stop.wait(1.0):
            now = time.monotonic()
            if now - last_report >= 10:
                last_report = now
                console.print(_pipeline_summary(services), soft_wrap=True)
            if duration is not None and now - t0 >= duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        for svc, bus in reversed(services):
            svc.stop()
            bus.close()
    console.print(_pipeline_summary(services), soft_wrap=True)
    console.print("stopped")


def _pipeline_summary(services: list) -> str:
    parts = []
    for svc, _bus in services:
        st = svc.stats()
        if svc.name == "collector":
            parts.append(f"collector: {st.get('published', 0):.0f} snapshots")
        elif svc.name == "features":
            parts.append(f"features: {st.get('vectors_published', 0):.0f} vectors")
        elif svc.name == "predictor":
            lat = f" (book->signal p50 {st['latency_ms_p50']:.1f} ms)" if "latency_ms_p50" in st else ""
            parts.append(f"predictor: {st.get('signals', 0):.0f} signals{lat}")
    return "pipeline | " + " | ".join(parts)


@app.command()
def control(
    target: str = typer.Argument(..., help="service name or 'all'"),
    command: str = typer.Argument(..., help="e.g. status, ping, start_trading, stop_trading, reload_model"),
    arg: list[str] = typer.Option([], "--arg", help="key=value (repeatable)"),
    timeout: float = typer.Option(5.0),
) -> None:
    """Send a control command over the bus and print the reply."""
    from depthpilot import messages as m
    from depthpilot.bus import RpcTimeout, connect_bus

    s = _settings()
    args = dict(a.split("=", 1) for a in arg)
    bus = connect_bus(s.amqp_url, "cli").start()
    try:
        reply = bus.rpc(m.ControlCommand(target=target, command=command, args=args, requested_by="cli"), timeout)
    except RpcTimeout as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        bus.close()
    Console().print_json(data=m.to_builtins(reply))
    raise typer.Exit(0 if reply.ok else 1)


def _time_arg(value: Optional[str], name: str) -> Optional[int]:
    """ns since epoch from an int or an ISO date/time (UTC when no zone)."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    import pandas as pd

    try:
        t = pd.Timestamp(value)
    except ValueError:
        console.print(f"[red]--{name}: not a time: {value!r} (ISO 8601 or ns since epoch)[/red]")
        raise typer.Exit(2) from None
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return int(t.value)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command()
def export(
    kind: str = typer.Argument("snapshots", help="snapshots | trades"),
    exchange: str = typer.Option(..., help="e.g. binance"),
    symbol: str = typer.Option(..., help="e.g. BTCUSDT"),
    out: Path = typer.Option(..., "--out", "-o", help=".parquet (default) or .csv/.csv.gz"),
    start: Optional[str] = typer.Option(None, help="ISO time or ns"),
    end: Optional[str] = typer.Option(None, help="ISO time or ns (exclusive)"),
    depth: int = typer.Option(25, help="levels per side in the snapshot export"),
) -> None:
    """Write stored snapshots/trades to Parquet or CSV (Tardis column layout) for training."""
    from collector.export import ExportError, write_export
    from depthpilot.service import open_store

    if kind not in ("snapshots", "trades"):
        console.print("[red]kind must be snapshots or trades[/red]")
        raise typer.Exit(2)
    s = _settings()
    store = open_store(s)
    t0, t1 = _time_arg(start, "start"), _time_arg(end, "end")
    total = store.count(kind, exchange, symbol)
    with _progress() as prog:
        task = prog.add_task(f"export {kind} {exchange} {symbol}", total=total or None)
        try:
            n = write_export(store.iter_messages(kind, exchange, symbol, t0, t1), kind, out, depth=depth,
                             progress=lambda k: prog.advance(task, k))
        except ExportError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"wrote {n} rows to {out}")


features_app = typer.Typer(no_args_is_help=True, help="Offline feature engineering (same kernels as the service).")
app.add_typer(features_app, name="features")


def _load_spec(spec: Optional[Path]):
    from features.service import load_spec

    try:
        return load_spec(str(spec) if spec else None)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@features_app.command("build")
def features_build(
    out: Path = typer.Option(..., "--out", "-o", help="output .parquet or .csv"),
    books: Optional[Path] = typer.Option(None, help="book recording: raw Binance .gz / dir, Tardis CSV, or an export"),
    trades: Optional[Path] = typer.Option(None, help="trades CSV/Parquet (for candle features)"),
    klines: Optional[Path] = typer.Option(None, help="1-minute klines CSV (candle features)"),
    from_store: bool = typer.Option(False, "--from-store", help="read stored snapshots instead of a file"),
    exchange: Optional[str] = typer.Option(None),
    symbol: Optional[str] = typer.Option(None),
    start: Optional[str] = typer.Option(None),
    end: Optional[str] = typer.Option(None),
    kind: str = typer.Option("snapshot", help="snapshot | block | candle"),
    spec: Optional[Path] = typer.Option(None, help="FeatureSpec JSON or a model manifest.json (default spec otherwise)"),
    depth: int = typer.Option(250, help="levels when rebuilding raw recordings"),
) -> None:
    """Compute a feature matrix offline, with the spec hash in the file's metadata."""
    from features.build import books_from_messages, build, load_books, write_frame
    from features.io import load_klines, load_trades_csv

    if kind not in ("snapshot", "block", "candle"):
        console.print("[red]--kind must be snapshot, block or candle[/red]")
        raise typer.Exit(2)
    fs = _load_spec(spec)
    kw: dict = {}
    with _progress() as prog:
        if from_store:
            if not exchange or not symbol:
                console.print("[red]--from-store needs --exchange and --symbol[/red]")
                raise typer.Exit(2)
            from depthpilot.service import open_store

            store = open_store(_settings())
            task = prog.add_task("reading stored snapshots", total=store.count("snapshots", exchange, symbol) or None)

            def it():
                for snap in store.iter_messages("snapshots", exchange, symbol, _time_arg(start, "start"),
                                                _time_arg(end, "end")):
                    prog.advance(task)
                    yield snap

            ts, b, a = books_from_messages(it())
            kw.update(ts=ts, bids=b, asks=a)
        elif books is not None:
            task = prog.add_task(f"loading {books.name}", total=None)
            ts, b, a = load_books(books, depth=depth)
            prog.update(task, total=len(ts), completed=len(ts))
            kw.update(ts=ts, bids=b, asks=a)
        if trades is not None:
            kw["trades"] = load_trades_csv(trades)
        if klines is not None:
            kw["klines"] = load_klines(klines)
        if not kw:
            console.print("[red]give --books, --trades, --klines or --from-store[/red]")
            raise typer.Exit(2)
        task = prog.add_task(f"{kind} features", total=1)
        df = build(fs, kind, **kw)
        prog.advance(task)
    write_frame(df, out)
    console.print(f"wrote {len(df)} rows x {df.shape[1] - 2} features (spec {fs.hash}, {kind}) to {out}")


@app.command()
def train(
    source: str = typer.Option("klines", help="klines | books | features (a `features build` file) | store"),
    path: Optional[Path] = typer.Option(None, help="input file/dir (default: the bundled dataset for klines/books)"),
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
    tune: int = typer.Option(0, "--tune", help="optuna trials before training (needs `pip install depthpilot[tune]`)"),
) -> None:
    """Train an LSTM with walk-forward evaluation against baselines; writes weights, manifest, report."""
    from features.spec import FeatureSpec
    from predictor.labels import LabelSpec
    from predictor.sources import (RELATIVE_CANDLE_COLUMNS, SourceError, from_books, from_feature_file, from_klines,
                                   from_store, relative_columns)
    from predictor.train import TrainConfig
    from predictor.train import train as run_train

    from depthpilot.paths import data_dir

    try:
        if source == "klines":
            fs = _load_spec(spec) if spec else FeatureSpec(interval_s=60.0)
            data = from_klines(path or data_dir() / "binance-spot-btcusdt-klines-1m-2024-12" / "BTCUSDT_1m.csv.gz", fs)
            if columns == "relative":
                data = data.select(RELATIVE_CANDLE_COLUMNS)
        elif source == "books":
            fs = _load_spec(spec) if spec else FeatureSpec(interval_s=1.0)
            data = from_books(path or data_dir() / "binance-spot-btcusdt-2024-08-08-l2diff" / "raw", fs, kind=kind)
        elif source == "features":
            if path is None:
                raise SourceError("--path to a `depthpilot features build` file is required")
            data = from_feature_file(path)
        elif source == "store":
            if not exchange or not symbol:
                raise SourceError("--source store needs --exchange and --symbol")
            from depthpilot.service import open_store

            data = from_store(open_store(_settings()), exchange, symbol, interval)
        else:
            raise SourceError("--source must be klines, books, features or store")
        if columns == "relative" and source != "klines":
            data = data.select(relative_columns(data.names))
        cfg = TrainConfig(label=LabelSpec(kind=label, horizon=horizon, threshold=threshold), seq_len=seq_len,
                          hidden=hidden, layers=layers, dropout=dropout, max_epochs=epochs, n_folds=folds, seed=seed,
                          tune_trials=tune, model_name=out.name)
    except (SourceError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"{len(data.ts)} rows x {len(data.names)} features (spec {data.spec_hash})")
    with _progress() as prog:
        task = prog.add_task("training", total=None)

        def on_progress(ev) -> None:
            where = f"fold {ev.fold}/{ev.n_folds}" if ev.stage == "fold" else ev.stage
            epoch = f" epoch {ev.epoch}" if ev.epoch is not None and ev.epoch >= 0 else ""
            prog.update(task, completed=ev.step, total=ev.steps_total, description=f"{where}{epoch}")

        artifact = run_train(cfg, data.X, data.ts, data.prices, data.names, data.spec_hash, out, progress=on_progress,
                             features=data.features)
    man = json.loads((Path(artifact) / "manifest.json").read_text())
    table = Table("predictor", "accuracy", "log-loss", "brier", title="walk-forward, out of sample")
    for who, r in man["metrics"]["walk_forward"].items():
        if isinstance(r, dict) and "mean_fold_accuracy" in r:
            table.add_row(who, f"{r['mean_fold_accuracy']:.4f}", f"{r['mean_fold_log_loss']:.4f}",
                          f"{r['mean_fold_brier']:.4f}")
    Console().print(table)
    console.print(f"artifact and report.md in {artifact}")


@app.command("sample-data")
def sample_data(
    dest: Path = typer.Option(REPO_ROOT / "data", help="where to put the recordings (DEPTHPILOT_DATA_DIR)"),
    dataset: list[str] = typer.Option([], "--dataset", help="only these datasets (repeatable)"),
) -> None:
    """Download the public recordings the tests, demo and bundled models use (needs internet),
    verify their checksums, and derive the top-25 book / trade CSVs from the raw Binance files
    with the collector's own replay."""
    from depthpilot.sample_data import SampleDataError, fetch, files

    wanted = dataset or None
    with _progress() as prog:
        tasks: dict[str, object] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total or None)
            prog.update(tasks[name], completed=done)  # type: ignore[arg-type]

        try:
            got = fetch(dest, datasets=wanted, progress=on_progress)
        except SampleDataError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"{len(got)} downloaded, {len(files(wanted)) - len(got)} already present in {dest}")
    for ds_dir in sorted(dest.glob("binance-*-l2diff")):
        _derive_binance(ds_dir)


def _derive_binance(ds_dir: Path) -> None:
    """derived_book_snapshot_25.csv.gz and derived_trades.csv.gz from the raw recording."""
    from collector.export import write_export
    from collector.replay import BinanceRecordingReplay
    from depthpilot import messages as m

    books_out, trades_out = ds_dir / "derived_book_snapshot_25.csv.gz", ds_dir / "derived_trades.csv.gz"
    if books_out.exists() and trades_out.exists():
        return
    msgs = list(BinanceRecordingReplay(ds_dir / "raw", depth=25))
    write_export((x for x in msgs if isinstance(x, m.BookSnapshot) and x.valid), "snapshots", books_out, depth=25)
    write_export((x for x in msgs if isinstance(x, m.Trade)), "trades", trades_out)
    console.print(f"derived {books_out.name} and {trades_out.name} in {ds_dir}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
