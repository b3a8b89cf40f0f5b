"""Start-up back-fill of candle state: the last ``n`` closed candles of a symbol from the
exchange's REST history (ccxt ``fetch_ohlcv`` through :mod:`collector.history`), so the first
candle vector comes seconds after start instead of after the indicators' warm-up.

``candles_from_ohlcv`` (pure) turns ccxt rows into the candle dicts the pipeline takes
(``ts`` = close time in ns, like :class:`features.candles.CandleBuilder`); ``fetch_candles``
is the network call (retried with back-off, each retry reported by the downloader);
``candles_from_store`` builds them from the trades the collector stored (``FEATURES_BACKFILL=store``)
with the live candle builder itself, so stored and live candles are made the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["candles_from_ohlcv", "candles_from_store", "fetch_candles", "timeframe_for"]


def timeframe_for(interval_s: float) -> str:
    """The ccxt timeframe of a candle interval (60 -> ``1m``); ValueError if none fits."""
    s = int(interval_s)
    if s != interval_s or s <= 0:
        raise ValueError(f"candle interval {interval_s} s has no exchange timeframe")
    for unit, n in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if s % n == 0:
            return f"{s // n}{unit}"
    raise AssertionError("unreachable")


def candles_from_ohlcv(rows: Sequence[Sequence[Any]], interval_ns: int) -> list[dict[str, float]]:
    out = []
    for r in rows:
        open_ns = int(r[0]) * 1_000_000
        out.append(
            {
                "ts": open_ns + interval_ns - 1,
                "open": float(r[1]),
                "high": float(r[2]),
                "low": float(r[3]),
                "close": float(r[4]),
                "volume": float(r[5] or 0.0),
                "n": 0.0,
            }
        )
    return out


def fetch_candles(
    exchange: str,
    symbol: str,
    interval_s: float,
    n: int,
    *,
    api_base_url: str | None = None,
    now_ns: int | None = None,
    on_retry: Any = None,
) -> list[dict[str, float]]:
    """The last ``n`` candles that closed before ``now_ns`` (default: now)."""
    from collector.history import KlineDownloader

    tf = timeframe_for(interval_s)
    iv_ms = int(interval_s * 1000)
    now_ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    until = now_ms // iv_ms * iv_ms  # the open candle starts here: not closed yet
    since = until - n * iv_ms

    async def run() -> list:
        dl = KlineDownloader(
            exchange,
            symbol,
            timeframe=tf,
            limit=min(n, 1000),
            api_base_url=api_base_url,
            on_retry=on_retry,
            backoff_initial_s=0.5,
            max_attempts=5,
        )
        try:
            return await dl.fetch(since, until)
        finally:
            await dl.close()

    return candles_from_ohlcv(asyncio.run(run()), int(interval_s * 1e9))


def candles_from_store(
    store: Any, exchange: str, symbol: str, interval_s: float, n: int, now_ns: int | None = None
) -> list[dict[str, float]]:
    """Closed candles of the last ``n`` intervals before the open one, from stored trades (quiet
    intervals after the first trade are flat candles, as live; none before it)."""
    from features.candles import CandleBuilder

    iv = int(interval_s * 1e9)
    now = now_ns if now_ns is not None else time.time_ns()
    until = now // iv * iv
    cb = CandleBuilder(iv)
    out: list[dict[str, float]] = []
    for t in store.iter_messages("trades", exchange, symbol, start=until - n * iv, end=until):
        out.extend(cb.update(t.ts_exchange or t.ts_recv, t.price, t.size))
    return out + cb.flush()
