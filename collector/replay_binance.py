"""Replay raw Binance recordings as BookSnapshots and Trades, through the same
:class:`~collector.exchanges.binance_sync.BinanceDiffBook` the live source uses (the one
implementation of the sync rule). Used by the collector's replay AND every offline loader
(``features build``, training sources), so offline books equal live books.

Market (spot / USD-M / COIN-M), symbol and timestamp unit come from the data
(:mod:`collector.exchanges.binance_recording`), never from file names. Files of one stream
play in time order as one stream (a continuation file without a snapshot continues its
predecessor's book); files of several streams (a directory mixing symbols or markets) are
split per stream and merged by receive time.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Iterable, Iterator

from collector.book import make_snapshot
from collector.exchanges.binance_parse import (
    EXCHANGE_BY_MARKET,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    market_of_diff,
    market_of_trade,
    size_unit,
    trade_message,
)
from collector.exchanges.binance_recording import FileInfo, iter_recording, plan_streams
from collector.exchanges.binance_sync import BinanceDiffBook, SyncResult
from collector.replay import ReplayError, SnapshotThrottle
from depthpilot.messages import BookSnapshot, Trade

__all__ = ["BinanceRecordingReplay"]


def _ts_recv(msg: BookSnapshot | Trade) -> int:
    return msg.ts_recv


class BinanceRecordingReplay:
    """Rebuild books (and pass trades) from raw Binance recordings.

    ``paths``: a file, a directory, or a list of them. Files are grouped into streams and
    ordered by their content at construction time (so an empty or unreadable file fails
    here, with one line). ``market``: "auto" (from the data) or a forced "spot"/"usdm"/"coinm".
    ``max_rate_hz``: book snapshots per second per symbol (None = one per applied diff).
    Validity changes (gap, resync, crossed) are emitted immediately regardless of the rate.

    After iteration, ``builders`` holds the per-symbol :class:`BinanceDiffBook` (counters;
    keyed ``SYMBOL``, or ``market:SYMBOL`` when several markets carry the same symbol).
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        market: str = "auto",
        depth: int = 25,
        max_rate_hz: float | None = None,
        exchange: str | None = None,
        trades: bool = True,
    ) -> None:
        if depth < 1:
            raise ReplayError(f"depth must be >= 1, not {depth}")
        self.paths = paths
        self.market = market
        self.depth = depth
        self.exchange = exchange
        self.trades = trades
        self.max_rate_hz = max_rate_hz
        self.streams: list[list[FileInfo]] = plan_streams(paths)
        self.builders: dict[str, BinanceDiffBook] = {}

    @property
    def stream_names(self) -> list[str]:
        """``exchange:SYMBOL`` of every stream found in the input."""
        return [f"{EXCHANGE_BY_MARKET.get(g[0].market, 'binance')}:{g[0].symbol}" for g in self.streams]

    def __iter__(self) -> Iterator[BookSnapshot | Trade]:
        its = [self._iter_stream(g) for g in self.streams]
        if len(its) == 1:
            return its[0]
        return heapq.merge(*its, key=_ts_recv)

    def _iter_stream(self, files: list[FileInfo]) -> Iterator[BookSnapshot | Trade]:
        throttle: SnapshotThrottle[str] | None = SnapshotThrottle(self.max_rate_hz) if self.max_rate_hz else None
        builders: dict[str, BinanceDiffBook] = {}
        markets: dict[str, str] = {}  # symbol -> market (from its first diff)
        last_valid: dict[str, bool] = {}
        last_recv: dict[str, int] = {}
        depth = self.depth

        def builder(sym: str) -> BinanceDiffBook:
            b = builders.get(sym)
            if b is None:
                b = builders[sym] = BinanceDiffBook(self.market)
                key = sym if sym not in self.builders else f"{files[0].market}:{sym}"
                self.builders[key] = b
            return b

        def exchange_of(market: str) -> str:
            return self.exchange or EXCHANGE_BY_MARKET[market]

        def emit(sym: str, b: BinanceDiffBook) -> BookSnapshot:
            valid = b.valid
            last_valid[sym] = valid
            market = markets.get(sym) or files[0].market or "spot"
            unit, cv = size_unit(market, sym)
            return make_snapshot(b.book, exchange_of(market), sym, last_recv[sym], depth, valid, b.reason, unit, cv)

        for rec in iter_recording([f.path for f in files]):
            ts = rec.ts_recv
            if throttle is not None:
                for sym in throttle.due(ts):
                    yield emit(sym, builders[sym])
            kind = rec.kind
            if kind == KIND_DEPTH or kind == KIND_SNAPSHOT:
                sym = rec.symbol
                b = builder(sym)
                if kind == KIND_DEPTH:
                    if sym not in markets:
                        markets[sym] = self.market if self.market != "auto" else market_of_diff(rec.msg, sym)
                    res = b.on_diff(rec.msg)
                else:
                    res = b.on_snapshot_msg(rec.msg)
                if res is SyncResult.STALE or (res is SyncResult.BUFFERED and kind == KIND_DEPTH):
                    continue  # book unchanged (an old snapshot never rewinds it)
                last_recv[sym] = ts
                valid = b.valid
                if valid != last_valid.get(sym, not valid):
                    if throttle is not None:
                        throttle.force(sym, ts)
                    yield emit(sym, b)
                elif not valid:
                    continue  # still invalid: nothing new to tell
                elif throttle is None or throttle.offer(sym, ts):
                    yield emit(sym, b)
            elif kind == KIND_TRADE and self.trades:
                sym = rec.symbol
                market = markets.get(sym) or (self.market if self.market != "auto" else market_of_trade(rec.msg, sym))
                yield trade_message(rec.msg, exchange_of(market), ts, sym)
        if throttle is not None:
            for sym in throttle.flush():
                yield emit(sym, builders[sym])
