"""Data commands: ``export``, ``features build``, ``sample-data``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from depthpilot.paths import REPO_ROOT
from depthpilot_cli.common import app, console, load_spec, progress, settings, time_arg

if TYPE_CHECKING:
    from rich.progress import TaskID


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
    s = settings()
    store = open_store(s)
    t0, t1 = time_arg(start, "start"), time_arg(end, "end")
    total = store.count(kind, exchange, symbol)
    with progress() as prog:
        task = prog.add_task(f"export {kind} {exchange} {symbol}", total=total or None)
        try:
            n = write_export(
                store.iter_messages(kind, exchange, symbol, t0, t1),
                kind,
                out,
                depth=depth,
                progress=lambda k: prog.advance(task, k),
            )
        except ExportError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"wrote {n} rows to {out}")


features_app = typer.Typer(no_args_is_help=True, help="Offline feature engineering (same kernels as the service).")
app.add_typer(features_app, name="features")


@features_app.command("build")
def features_build(
    out: Path = typer.Option(..., "--out", "-o", help="output .parquet or .csv"),
    books: list[Path] = typer.Option(
        [],
        help="book recording: raw Binance file(s) / dir (repeat for files of one "
        "stream, in any order), Tardis CSV, or an export",
    ),
    trades: Optional[Path] = typer.Option(None, help="trades CSV/Parquet (for candle features)"),
    klines: Optional[Path] = typer.Option(None, help="1-minute klines CSV (candle features)"),
    from_store: bool = typer.Option(False, "--from-store", help="read stored snapshots instead of a file"),
    exchange: Optional[str] = typer.Option(None),
    symbol: Optional[str] = typer.Option(None),
    start: Optional[str] = typer.Option(None),
    end: Optional[str] = typer.Option(None),
    kind: str = typer.Option("snapshot", help="snapshot | block | candle"),
    spec: Optional[Path] = typer.Option(
        None, help="FeatureSpec JSON or a model manifest.json (default spec otherwise)"
    ),
    depth: int = typer.Option(250, help="levels when rebuilding raw recordings"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of a bad-input error"),
) -> None:
    """Compute a feature matrix offline, with the spec hash in the file's metadata."""
    from depthpilot_cli.errors import one_line_errors

    with one_line_errors("features build", debug):
        _features_build(out, books, trades, klines, from_store, exchange, symbol, start, end, kind, spec, depth)


def _features_build(out, books, trades, klines, from_store, exchange, symbol, start, end, kind, spec, depth) -> None:
    from features.build import books_from_messages, build, load_books, write_frame
    from features.io import load_klines, load_trades_csv

    if kind not in ("snapshot", "block", "candle"):
        console.print("[red]--kind must be snapshot, block or candle[/red]")
        raise typer.Exit(2)
    fs = load_spec(spec)
    kw: dict = {}
    with progress() as prog:
        if from_store:
            if not exchange or not symbol:
                console.print("[red]--from-store needs --exchange and --symbol[/red]")
                raise typer.Exit(2)
            from depthpilot.service import open_store

            store = open_store(settings())
            task = prog.add_task("reading stored snapshots", total=store.count("snapshots", exchange, symbol) or None)

            def it():
                for snap in store.iter_messages(
                    "snapshots", exchange, symbol, time_arg(start, "start"), time_arg(end, "end")
                ):
                    prog.advance(task)
                    yield snap

            ts, b, a = books_from_messages(it())
            kw.update(ts=ts, bids=b, asks=a)
        elif books:
            task = prog.add_task(f"loading {', '.join(p.name for p in books)}", total=None)
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


@app.command("sample-data")
def sample_data(
    dest: Optional[Path] = typer.Option(
        None, help="where to put the recordings (default: DEPTHPILOT_DATA_DIR if set, else ./data in the repository)"
    ),
    dataset: list[str] = typer.Option([], "--dataset", help="only these datasets (repeatable)"),
) -> None:
    """Download the public recordings the tests, demo and bundled models use (needs internet),
    verify their checksums, and derive the top-25 book / trade CSVs from the raw Binance files
    with the collector's own replay. A failed download leaves no empty directory behind."""
    import os

    from depthpilot.sample_data import SampleDataError, fetch, files

    if dest is None:
        env_dir = os.environ.get("DEPTHPILOT_DATA_DIR")
        dest = Path(env_dir).expanduser() if env_dir else REPO_ROOT / "data"

    wanted = dataset or None
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total or None)
            prog.update(tasks[name], completed=done)

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
