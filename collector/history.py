"""Candle history over ccxt ``fetch_ohlcv``: paged, rate-limited (ccxt's limiter plus tenacity
back-off on 429/5xx/network errors, each retry reported), resumable, gaps reported.

Pure parts (no I/O): :func:`kline_rows` (ccxt OHLCV -> the exchange's kline dump layout),
:func:`find_gaps`, :func:`last_open_time` of an existing file's text. :class:`KlineDownloader`
is the ccxt client loop (a library, no bus, no store): the ``depthpilot history klines``
command and the features service's start-up back-fill both use it.

Layout written (Binance's kline dump, which :func:`features.io.load_klines` reads)::

    open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore

ccxt's unified OHLCV has no quote volume, trade count or taker volumes: those columns are
left empty. ``close_time`` = ``open_time + interval - 1`` ms, as the exchange writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any

__all__ = [
    "KLINE_COLUMNS",
    "Gap",
    "KlineDownloader",
    "find_gaps",
    "format_row",
    "kline_rows",
    "last_open_time",
    "timeframe_ms",
]

log = logging.getLogger(__name__)

KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(tf: str) -> int:
    """``"1m"`` -> 60000 (ccxt timeframe strings: s, m, h, d, w)."""
    try:
        n, unit = int(tf[:-1]), tf[-1]
        return n * _UNITS[unit]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"--interval: not a timeframe: {tf!r} (e.g. 1m, 5m, 1h, 1d)") from None


@dataclass(frozen=True)
class Gap:
    after_ms: int  # open time of the last candle before the gap
    before_ms: int  # open time of the first candle after it
    missing: int  # candles missing

    def __str__(self) -> str:
        from datetime import datetime

        def t(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")

        return f"{self.missing} candle(s) missing between {t(self.after_ms)} and {t(self.before_ms)} UTC"


def find_gaps(open_times: Iterable[int], interval_ms: int, prev: int | None = None) -> list[Gap]:
    """Missing candles between consecutive open times (and after ``prev``, the last one before)."""
    out = []
    for t in open_times:
        if prev is not None and t - prev > interval_ms:
            out.append(Gap(prev, t, (t - prev) // interval_ms - 1))
        prev = t
    return out


def _num(x: Any) -> str:
    if x is None:
        return ""
    d = Decimal(str(x))
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def kline_rows(ohlcv: Sequence[Sequence[Any]], interval_ms: int) -> list[tuple[str, ...]]:
    """ccxt ``[ms, o, h, l, c, v]`` rows -> kline-layout rows of strings (unknown columns empty)."""
    rows: list[tuple[str, ...]] = []
    for r in ohlcv:
        t = int(r[0])
        rows.append(
            (
                str(t),
                _num(r[1]),
                _num(r[2]),
                _num(r[3]),
                _num(r[4]),
                _num(r[5]),
                str(t + interval_ms - 1),
                "",
                "",
                "",
                "",
                "",
            )
        )
    return rows


def format_row(row: Sequence[str]) -> str:
    return ",".join(row) + "\n"


def last_open_time(text_tail: str) -> int | None:
    """Open time (ms) of the last complete kline line of a file's tail, None if there is none."""
    for line in reversed(text_tail.splitlines()):
        head = line.split(",", 1)[0].strip()
        if head.isdigit() and line.count(",") == len(KLINE_COLUMNS) - 1:
            return int(head)
    return None


class KlineDownloader:
    """Pages ``fetch_ohlcv`` from ``since_ms`` up to ``until_ms`` (exclusive) through a real ccxt
    client. ``exchange`` is a ccxt-source name (see :data:`collector.ccxt_source.EXCHANGES`);
    ``symbol`` either unified (``BTC/USDT``) or the exchange's id (``BTCUSDT``)."""

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        timeframe: str = "1m",
        limit: int = 1000,
        api_base_url: str | None = None,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_retry: Callable[[Any], Any] | None = None,
    ) -> None:
        from collector.ccxt_source import _CcxtSource

        self.interval_ms = timeframe_ms(timeframe)
        self.timeframe = timeframe
        self.limit = limit
        self.src = _CcxtSource(
            exchange,
            symbol,
            mode="rest",
            max_attempts=max_attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            on_retry=on_retry,
            api_base_url=api_base_url,
        )
        self.exchange = exchange
        self.symbol = symbol
        self.requests = 0

    @property
    def retries(self) -> int:
        return self.src.retries

    async def unified_symbol(self) -> str:
        await self.src.load_markets()
        c = self.src.client
        if self.symbol in c.markets:
            return self.symbol
        by_id = (c.markets_by_id or {}).get(self.symbol)
        if by_id:
            return by_id[0]["symbol"]
        raise ValueError(f"{self.exchange} has no market {self.symbol!r}")

    async def pages(self, since_ms: int, until_ms: int) -> Any:
        """Yield lists of ccxt OHLCV rows (closed candles only: open time + interval <= until),
        in order, each strictly after the previous; stops at ``until_ms`` or when the exchange
        has nothing newer."""
        sym = await self.unified_symbol()
        since = since_ms
        while since < until_ms:

            async def fetch(since: int = since) -> Any:
                self.requests += 1
                return await self.src.client.fetch_ohlcv(sym, self.timeframe, since=since, limit=self.limit)

            rows = await self.src._call("fetch_ohlcv", fetch)
            rows = [r for r in rows if since <= int(r[0]) and int(r[0]) + self.interval_ms <= until_ms]
            if not rows:
                return
            yield rows
            since = int(rows[-1][0]) + self.interval_ms

    async def fetch(
        self, since_ms: int, until_ms: int, on_page: Callable[[list], Awaitable[None] | None] | None = None
    ) -> list[list[Any]]:
        out: list[list[Any]] = []
        async for page in self.pages(since_ms, until_ms):
            out.extend(page)
            if on_page is not None:
                r = on_page(page)
                if r is not None:
                    await r
        return out

    async def close(self) -> None:
        await self.src.close()
