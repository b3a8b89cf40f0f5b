"""``depthpilot record``: run an exchange's live feeds (the collector's own, from the venue
registry) without the bus, writing every raw message into replayable gzip day files
(:mod:`collector.recorder`), with progress (messages, bytes, files, gaps)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import typer

from depthpilot_cli.common import app, console, settings

MAX_FAILS = 5  # a feed failing this often in a row without delivering anything is broken, not flaky


def _gaps(src: Any) -> int:
    """Sequence gaps, checksum failures and reconnects a source has seen."""
    n = int(getattr(src, "reconnects", 0) or 0)
    for b in (getattr(src, "builders", None) or {}).values():
        st = getattr(b, "stats", None)
        if st is not None and not callable(st):  # BookBuilder venues: gaps and checksum failures
            n += int(st.gaps) + int(st.checksum_failed)
        else:  # Binance: sequence gaps
            n += int(getattr(b, "gaps", 0) or 0)
    return n


async def _record(
    exchange: str, symbols: list[str], out: Path, duration: float | None, rotate_mb: float, flush_s: float, quiet: bool
) -> dict[str, int]:
    from collector.recorder import RecorderPool, rotate_bytes_of
    from collector.venues import FeedContext, venue

    s = settings()
    pool = RecorderPool(out, rotate_bytes=rotate_bytes_of(rotate_mb), flush_interval_s=flush_s)
    rec = pool.for_exchange(exchange)
    problems: list[str] = []
    ctx = FeedContext(
        s,
        lambda ev: problems.append(f"retry {ev}"),
        lambda ev: console.print(f"[yellow]{ev.connection}: {ev.reason}[/yellow]"),
        pool.for_exchange,
    )
    feeds = venue(exchange).feeds(ctx, symbols, exchange)  # books, and trades where the venue has them
    sources = [f.make() for f in feeds]
    if not sources or any(getattr(x, "raw_sink", None) is None for x in sources):
        pool.close()
        raise ValueError(f"recording raw messages is not supported for {exchange!r}")
    restarts = [0]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def run(i: int) -> None:
        """Feed ``i`` until stopped; a failed source is closed and rebuilt with back-off (the
        recording goes on into the same files: the new connection starts with a snapshot).
        ``MAX_FAILS`` failures in a row without a single message end the recording with the error."""
        delay = 0.5
        fails = 0
        while True:
            src = sources[i]
            try:
                async with contextlib.aclosing(src.stream()) as msgs:
                    async for _ in msgs:
                        delay, fails = 0.5, 0
            except Exception as exc:  # noqa: BLE001 - reported, then the feed is rebuilt
                fails += 1
                if fails >= MAX_FAILS:
                    await src.close()
                    raise
                console.print(f"[yellow]{feeds[i].name}: {type(exc).__name__}: {exc}; reconnecting[/yellow]")
            await src.close()
            restarts[0] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            sources[i] = feeds[i].make()

    tasks = [asyncio.create_task(run(i)) for i in range(len(sources))]
    t0 = time.monotonic()
    last_gaps = 0
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for t in tasks:
                if t.done() and (err := t.exception()) is not None:
                    raise err
            gaps = sum(_gaps(x) for x in sources) + restarts[0]
            rec.note_gap(max(0, gaps - last_gaps))
            last_gaps = gaps
            st = pool.stats()
            if not quiet:
                console.print(
                    f"{time.monotonic() - t0:7.1f}s  messages {st['messages']:,}  "
                    f"bytes {st['bytes']:,}  files {st['files']}  gaps {st['gaps']}",
                    highlight=False,
                )
            if duration is not None and time.monotonic() - t0 >= duration:
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for x in sources:
            await x.close()
        pool.close()
    return pool.stats()


@app.command()
def record(
    exchange: str = typer.Option(
        ...,
        "--exchange",
        help="venue: binance, binanceusdm, binancecoinm (native diff-depth), krakenspot, bybit (v5 via pybit), "
        "or a ccxt venue (binance_ccxt, bybit_spot, okx, coinbase, kraken, bitstamp: books and trades ccxt returns)",
    ),
    symbols: str = typer.Option(..., "--symbols", help="comma-separated exchange symbols, e.g. BTCUSDT,ETHUSDT"),
    out: Path = typer.Option(Path("recordings"), "--out", "-o", help="directory; files go to <out>/<exchange>/"),
    duration: float | None = typer.Option(None, help="stop after this many seconds (default: until Ctrl-C)"),
    rotate_mb: float = typer.Option(0.0, help="also rotate a file after this many MB of messages (0: daily only)"),
    flush_s: float = typer.Option(1.0, help="flush to disk every N seconds (a crash loses at most that)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines"),
) -> None:
    """Record an exchange's raw live L2 messages into gzip day files that REPLAY_PATHS, `depthpilot backtest`,
    `depthpilot features build` and training read back with the same code.

    Every live feed records: native Binance (spot, USD-M, COIN-M: depth, REST snapshots, trades), Kraken spot (book), Bybit v5 (every orderbook and publicTrade message pybit delivers) and the ccxt venues (every order book and trade page ccxt returns, REST polling or ccxt.pro websocket).

    Replay: REPLAY_PATHS=<out> (or <out>/<exchange>, or some of its files) with COLLECTOR_SOURCE=replay, or `depthpilot backtest <out>/<exchange>`. Rotated files play as one stream in receive order.
    """  # noqa: E501 - one line per paragraph: the help renders each line as written
    syms = [x.strip() for x in symbols.split(",") if x.strip()]
    if not syms:
        console.print("[red]--symbols: give at least one symbol[/red]")
        raise typer.Exit(2)
    for flag, value in (("--rotate-mb", rotate_mb), ("--flush-s", flush_s)):
        if not value >= 0:  # also refuses nan
            console.print(f"[red]{flag}: must be >= 0, got {value}[/red]", highlight=False)
            raise typer.Exit(2)
    try:
        st = asyncio.run(_record(exchange, syms, out, duration, rotate_mb, flush_s, quiet))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - a feed failed for good: one line, non-zero exit
        console.print(f"[red]record failed: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"recorded {st['messages']:,} messages, {st['bytes']:,} bytes in {st['files']} files "
        f"({st['gaps']} gaps) under {out / exchange}",
        highlight=False,
    )
