"""``depthpilot history klines``: download candle history through ccxt into the exchange's
kline dump layout (:mod:`collector.history`), paged, rate-limited, resumable, gaps reported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer

from depthpilot_cli.common import app, console, settings, time_arg

history_app = typer.Typer(no_args_is_help=True, help="Download market history (candles) for training and warm-up.")
app.add_typer(history_app, name="history")


def _tail(path: Path, n: int = 4096) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - n))
        return fh.read().decode(errors="replace")


async def _download(
    exchange: str,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int,
    out: Path,
    limit: int,
    api_base_url: str | None,
    quiet: bool,
) -> tuple[int, list, int, int]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from collector.history import (
        KLINE_COLUMNS,
        KlineDownloader,
        find_gaps,
        format_row,
        kline_rows,
        last_open_time,
    )

    retries: list = []
    dl = KlineDownloader(
        exchange,
        symbol,
        timeframe=timeframe,
        limit=limit,
        api_base_url=api_base_url,
        on_retry=retries.append,
        backoff_initial_s=0.2,
    )
    iv = dl.interval_ms
    prev = None
    resumed = out.exists() and out.stat().st_size > 0
    if resumed:
        prev = last_open_time(_tail(out))
        if prev is None:
            raise ValueError(f"{out}: exists but holds no kline line to resume from (move it away or pick another -o)")
        since_ms = max(since_ms, prev + iv)
    since_ms = -(-since_ms // iv) * iv  # candles open on the interval grid
    total = max(0, (until_ms - since_ms) // iv)
    written = 0
    gaps = []
    out.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )
    try:
        with progress, open(out, "a", encoding="ascii") as fh:
            if not resumed:
                fh.write(",".join(KLINE_COLUMNS) + "\n")
            task = progress.add_task(f"{exchange} {symbol} {timeframe}", total=total, status="")
            async for page in dl.pages(since_ms, until_ms):
                opens = [int(r[0]) for r in page]
                new = find_gaps(opens, iv, prev)
                for g in new:
                    console.print(f"[yellow]gap: {g}[/yellow]", highlight=False)
                gaps.extend(new)
                fh.writelines(format_row(row) for row in kline_rows(page, iv))
                fh.flush()  # a stopped download resumes after the last line written
                prev = opens[-1]
                written += len(page)
                progress.update(
                    task,
                    completed=min(total, (prev + iv - since_ms) // iv),
                    status=f"retries {dl.retries}  gaps {len(gaps)}",
                )
    finally:
        await dl.close()
    return written, gaps, dl.retries, dl.requests


@history_app.command("klines")
def klines(
    exchange: str = typer.Option(
        ..., "--exchange", help="ccxt exchange (binance, binanceusdm, bybit, okx, kraken, ...)"
    ),
    symbol: str = typer.Option(..., "--symbol", help="BTCUSDT or BTC/USDT"),
    since: str = typer.Option(..., "--since", help="first candle: ISO date/time (UTC) or ns since epoch"),
    until: str | None = typer.Option(None, "--until", help="end (exclusive); default now"),
    interval: str = typer.Option("1m", "--interval", help="candle timeframe (1m, 5m, 1h, 1d, ...)"),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="CSV file (default <SYMBOL>_<interval>.csv); an existing file is continued after its last candle",
    ),
    limit: int = typer.Option(1000, help="candles per request"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download candles (ccxt fetch_ohlcv) into the exchange's kline CSV layout."""
    s = settings()
    since_ns = time_arg(since, "since")
    until_ns = time_arg(until, "until") if until else time.time_ns()
    assert since_ns is not None and until_ns is not None
    out = out or Path(f"{symbol.replace('/', '')}_{interval}.csv")
    try:
        written, gaps, retries, requests = asyncio.run(
            _download(
                exchange,
                symbol,
                interval,
                since_ns // 1_000_000,
                until_ns // 1_000_000,
                out,
                limit,
                s.ccxt_api_base_url,
                quiet,
            )
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - exhausted retries, exchange refusal: one line, resumable
        console.print(f"[red]history failed: {type(exc).__name__}: {str(exc)[:300]} (run again to resume)[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{written} candles written to {out} ({requests} requests, {retries} retries, "
        f"{len(gaps)} gaps{': ' + '; '.join(map(str, gaps[:5])) if gaps else ''})",
        highlight=False,
    )
