"""Binance ``GET /api/v3/klines`` over REAL 1-minute candles (the
binance-spot-btcusdt-klines-1m-2024-12 dataset), as a route of
:class:`tests.collector.fakes.http_server.FakeExchangeHTTP`, and a thread runner so code that
runs its own event loop (the CLI, a service) can talk to the fake."""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Any

import pandas as pd

from tests.collector.fakes.data import require

KLINES_1M = "binance-spot-btcusdt-klines-1m-2024-12/BTCUSDT_1m.csv.gz"
KLINES = "/api/v3/klines"
INFO = "/api/v3/exchangeInfo"


def real_klines(n: int | None = None, start: int = 0) -> list[list[Any]]:
    """Binance kline rows ``[open_ms, o, h, l, c, v, close_ms, quote_v, count, tb_v, tb_qv, "0"]``
    (strings as Binance sends them) from the real dataset; open time from the data's close time."""
    with gzip.open(require(KLINES_1M), "rt") as fh:
        df = pd.read_csv(fh, dtype=str)
    df = df.iloc[start : None if n is None else start + n]
    close_ms = (pd.to_datetime(df["close_datetime"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    rows = []
    for (_, r), c in zip(df.iterrows(), close_ms):
        rows.append(
            [
                int(c) - 59_999,
                r["open"],
                r["high"],
                r["low"],
                r["close"],
                r["volume"],
                int(c),
                r["quote_volume"],
                int(r["trades"]),
                "0",
                "0",
                "0",
            ]
        )
    return rows


class BinanceKlines:
    """The klines endpoint: ``startTime``/``endTime``/``limit`` (max 1000) over ``rows``;
    ``on_request(n)`` is called with the request number (to inject faults mid-download)."""

    def __init__(self, rows: list[list[Any]], on_request: Any = None) -> None:
        self.rows = rows
        self.n = 0
        self.on_request = on_request
        self.asked: list[dict[str, str]] = []

    def __call__(self, q: dict[str, str]) -> Any:
        self.n += 1
        self.asked.append(q)
        if self.on_request is not None:
            self.on_request(self.n)
        start = int(q.get("startTime", 0))
        end = int(q["endTime"]) if "endTime" in q else None
        limit = min(int(q.get("limit", 500)), 1000)
        out = [r for r in self.rows if r[0] >= start and (end is None or r[0] <= end)]
        return out[:limit]


class ServerThread:
    """Runs an aiohttp fake (``start()`` returning its base URL, ``stop()``) on its own loop."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-http", daemon=True)
        self.base_url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(10)
        return self

    def call(self, fn: Any) -> Any:
        async def wrap() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.srv.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
