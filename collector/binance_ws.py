"""Live Binance diff-depth source (spot and USD-M futures) over aiohttp.

One :class:`BinanceDiffSource` serves all symbols of one market:

* websocket combined streams (lower-case symbols, ``{"stream": ..., "data": ...}`` payloads):
  spot ``wss://stream.binance.com:9443/stream?streams=<sym>@depth@100ms/<sym>@trade`` (one
  connection, up to 1024 streams); USD-M futures are routed by path since Binance's 2026
  base-URL split: diff depth on ``wss://fstream.binance.com/public/stream?streams=...`` and
  trades (``aggTrade``) on ``wss://fstream.binance.com/market/stream?streams=...`` (200 streams
  per connection), so USD-M uses two connections;
* REST depth snapshots: spot ``GET /api/v3/depth`` (``limit`` 1..5000, weight 5/25/50/250 for
  <=100/<=500/<=1000/<=5000), USD-M ``GET /fapi/v1/depth`` (``limit`` in 5, 10, 20, 50, 100,
  500, 1000), fetched when :attr:`BinanceDiffBook.needs_snapshot` and a diff is buffered (so
  only after the stream delivers, per Binance's "manage a local order book" steps: open the
  stream, buffer, then get the snapshot), i.e. after (re)connecting and after a sequence gap;
* the documented sync rule itself lives in :class:`collector.exchanges.binance.BinanceDiffBook`
  (pure); this module only does I/O and scheduling.

It yields normalised :class:`depthpilot.messages.BookSnapshot` (top ``depth`` levels, via
:func:`collector.book.make_snapshot`) after every applied diff / applied snapshot and on every
validity change (gap, reconnect, crossed), and :class:`depthpilot.messages.Trade` for every
trade. No bus, no store: the wiring lives in :mod:`collector.service`.

Robustness:

* websocket drops/errors -> reconnect with exponential back-off (jittered), the books of that
  connection invalidated (``invalidate("reconnect")``) and resynced, counted in
  :attr:`BinanceDiffSource.reconnects` and reported through ``on_reconnect``;
* Binance closes connections at 24 h: the source rotates each connection proactively after
  ``max_connection_age_s`` (default 23 h 50 min) and on a spot ``serverShutdown`` event;
* ping/pong: aiohttp answers server pings (``autoping``) and sends its own pings every
  ``heartbeat_s``; a missing pong closes the connection, which then reconnects;
* REST errors (HTTP 429/418/5xx, timeouts, connection errors) are retried with exponential
  back-off (tenacity), honouring ``Retry-After``; each retry is counted and reported through
  ``on_retry`` as a :class:`collector.events.RetryEvent` (shared with the ccxt sources).
  Other HTTP errors (e.g. 400 unknown symbol) and exhausted retries end :meth:`stream` with
  :class:`BinanceSourceError` / :class:`BinanceHTTPError` so the caller can restart it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence  # noqa: F401
from typing import Any, Literal

import aiohttp

from collector.binance_rest import (  # noqa: F401 - re-exported (REST side of the source)
    MARKETS,
    BinanceHTTPError,
    BinanceSourceError,
    MarketSpec,
    SnapshotFetcher,
    _check_symbols,
    _spec,
    is_retryable,
    retry_after_s,
    snapshot_limit,
)
from collector.binance_conn import ReconnectEvent, StreamConnection, connection_loop, stream_connections
from collector.book import make_snapshot
from collector.events import RetryEvent
from collector.exchanges.binance_parse import (
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    BinanceFormatError,
    DepthSnapshot,
    parse_stream_message,
    size_unit,
    trade_message,
)
from collector.exchanges.binance_sync import BinanceDiffBook, SyncResult
from depthpilot.messages import BookSnapshot, Trade

__all__ = [
    "MARKETS",
    "BinanceDiffSource",
    "BinanceHTTPError",
    "BinanceSourceError",
    "MarketSpec",
    "ReconnectEvent",
    "RetryEvent",
    "StreamConnection",
    "is_retryable",
    "retry_after_s",
    "snapshot_limit",
    "stream_connections",
]

log = logging.getLogger(__name__)

Market = Literal["spot", "usdm", "coinm"]
Message = BookSnapshot | Trade


# --------------------------------------------------------------------------- the source


class BinanceDiffSource:
    """Live L2 books (+ trades) for ``symbols`` of one Binance market.

    ``market``: ``"spot"`` or ``"usdm"``. ``depth``: levels per side in emitted snapshots.
    ``ws_url`` / ``rest_url``: base URLs (scheme://host[:port]) replacing the real endpoints
    (a proxy, a mirror, a local fake server). ``session``: an aiohttp session to use (not
    closed here); by default one is created per :meth:`stream` call.

    Counters: ``reconnects`` (connections lost and re-opened, incl. rotations),
    ``rotations`` (proactive 24 h / serverShutdown reconnects), ``rest_requests``,
    ``snapshots_applied``, ``retries`` / ``retries_by_error``, ``bad_messages``; the per-symbol
    :class:`BinanceDiffBook` (``builders``) count gaps, resyncs, crossed books.
    """

    def __init__(
        self,
        market: Market,
        symbols: Sequence[str] | str,
        *,
        depth: int = 250,
        ws_url: str | None = None,
        rest_url: str | None = None,
        on_retry: Callable[[RetryEvent], Any] | None = None,
        on_reconnect: Callable[[ReconnectEvent], Any] | None = None,
        session: aiohttp.ClientSession | None = None,
        trades: bool = True,
        depth_stream: str | None = None,
        trade_stream: str | None = None,
        rest_limit: int | None = None,
        rest_timeout_s: float = 10.0,
        rest_max_attempts: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 600.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        max_reconnect_attempts: int | None = 20,
        connect_timeout_s: float = 10.0,
        heartbeat_s: float | None = 30.0,
        max_connection_age_s: float = 23 * 3600 + 50 * 60,
        max_buffer: int = 10_000,
        raw_sink: Callable[[str, bytes, int], Any] | None = None,
    ) -> None:
        self.spec = _spec(market)
        self.market = market
        self.exchange = self.spec.exchange
        self.symbols = _check_symbols(symbols)
        if depth < 1:
            raise BinanceSourceError(f"depth must be >= 1, got {depth}")
        if rest_max_attempts < 1:
            raise BinanceSourceError("rest_max_attempts must be >= 1")
        if max_connection_age_s <= 0:
            raise BinanceSourceError("max_connection_age_s must be > 0")
        self.depth = depth
        rest_base = (rest_url or self.spec.rest_url).rstrip("/")
        self.connections = stream_connections(
            market, self.symbols, ws_url, depth_stream=depth_stream, trade_stream=trade_stream, trades=trades
        )
        if rest_limit is None:
            rest_limit = snapshot_limit(market, depth)
        elif self.spec.rest_limits is not None and rest_limit not in self.spec.rest_limits:
            raise BinanceSourceError(f"rest_limit for {self.exchange} must be one of {self.spec.rest_limits}")
        elif not 1 <= rest_limit <= self.spec.rest_max:
            raise BinanceSourceError(f"rest_limit for {self.exchange} must be in 1..{self.spec.rest_max}")
        self.on_reconnect = on_reconnect
        self._session = session
        self.trades = trades
        self.rest = SnapshotFetcher(
            self.spec,
            rest_base,
            rest_limit,
            on_retry=on_retry,
            timeout_s=rest_timeout_s,
            max_attempts=rest_max_attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            retry_after_max_s=retry_after_max_s,
        )
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.max_reconnect_attempts = max_reconnect_attempts
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.max_connection_age_s = max_connection_age_s
        self.builders: dict[str, BinanceDiffBook] = {
            s: BinanceDiffBook(market, max_buffer=max_buffer) for s in self.symbols
        }
        # counters
        self.connects = 0
        self.reconnects = 0
        self.rotations = 0
        self.snapshots_applied = 0
        self.bad_messages = 0
        self.messages = 0
        # runtime state (per stream() call)
        self._queue: asyncio.Queue | None = None
        self._fetching: dict[str, asyncio.Task] = {}
        self._gen: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self._failed_snapshots: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self._last_valid: dict[str, bool] = {}
        self._running = False
        # raw_sink(symbol, raw bytes, receive ns): every message (and REST snapshot) in the order
        # the books see them, e.g. a collector.recorder.Recorder.write
        self.raw_sink = raw_sink

    # ----------------------------------------------------------------- public API
    def stats(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "rest_requests": self.rest_requests,
            "snapshots_applied": self.snapshots_applied,
            "retries": self.retries,
            "bad_messages": self.bad_messages,
            "messages": self.messages,
            "books": {s: b.stats() for s, b in self.builders.items()},
        }

    async def stream(self) -> AsyncIterator[Message]:
        """Yield BookSnapshots and Trades until cancelled or a fatal error is raised.

        Close it with ``contextlib.aclosing`` (or let the ``async for`` finish) so the
        connections are torn down promptly.
        """
        if self._running:
            raise RuntimeError("BinanceDiffSource.stream() is already running")
        self._running = True
        own = self._session is None
        session = self._session or aiohttp.ClientSession()
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue
        conn_tasks = [
            asyncio.create_task(self._conn_loop(session, c), name=f"binance-ws-{c.name}") for c in self.connections
        ]
        try:
            while True:
                item = await queue.get()
                tag = item[0]
                if tag == "msg":
                    for out in self._on_raw(session, item[1], item[2]):
                        yield out
                elif tag == "snap":
                    snap = self._on_snapshot(session, item[1], item[2], item[3], item[4])
                    if snap is not None:
                        yield snap
                elif tag == "down":
                    for out in self._on_down(item[1], item[2]):
                        yield out
                elif tag == "error":
                    raise item[1]
        finally:
            for t in [*conn_tasks, *self._fetching.values()]:
                t.cancel()
            await asyncio.gather(*conn_tasks, *self._fetching.values(), return_exceptions=True)
            self._fetching.clear()
            self._queue = None
            self._running = False
            if own:
                await session.close()

    async def close(self) -> None:
        """Nothing to release outside :meth:`stream` (kept for symmetry with other sources)."""

    # ----------------------------------------------------------------- message handling (sync)
    def _emit(self, sym: str, b: BinanceDiffBook, ts: int) -> BookSnapshot:
        valid = b.valid
        self._last_valid[sym] = valid
        unit, cv = size_unit(self.market, sym)
        return make_snapshot(b.book, self.exchange, sym, ts, self.depth, valid, b.reason, unit, cv)

    def _on_raw(self, session: aiohttp.ClientSession, raw: bytes | str, ts: int) -> Iterable[Message]:
        self.messages += 1
        try:
            kind, sym, msg = parse_stream_message(raw)
        except BinanceFormatError as exc:
            self.bad_messages += 1
            log.warning("%s: unparseable message (%s): %.200r", self.exchange, exc, raw)
            return ()
        if self.raw_sink is not None and sym in self.builders:
            self.raw_sink(sym, raw if isinstance(raw, bytes) else raw.encode(), ts)
        if kind == KIND_DEPTH:
            b = self.builders.get(sym)
            if b is None:
                return ()
            res = b.on_diff(msg)
            if res is SyncResult.APPLIED:
                self._failed_snapshots[sym] = 0
                return (self._emit(sym, b, ts),)
            if res is SyncResult.STALE:
                return ()
            if b.needs_snapshot:
                self._request_snapshot(session, sym)
            if res is SyncResult.GAP:
                log.warning("%s %s: %s", self.exchange, sym, b.reason)
            if self._last_valid.get(sym, False) != b.valid:
                return (self._emit(sym, b, ts),)
            return ()
        if kind == KIND_TRADE:
            if self.trades and sym in self.builders:
                return (trade_message(msg, self.exchange, ts, sym),)
            return ()
        if kind == KIND_SNAPSHOT:  # never on a stream; tolerated
            return ()
        if isinstance(msg, dict) and ("error" in msg or msg.get("code")):
            log.warning("%s: websocket error message: %.300r", self.exchange, msg)
        return ()

    def _on_snapshot(
        self, session: aiohttp.ClientSession, sym: str, snap: DepthSnapshot, ts: int, gen: int
    ) -> BookSnapshot | None:
        self._fetching.pop(sym, None)
        if gen != self._gen[sym]:
            return None  # requested before a reconnect: the new stream asks for its own
        b = self.builders[sym]
        self.snapshots_applied += 1
        raw = self.rest.last_raw.pop(sym, None)
        if self.raw_sink is not None and raw is not None:
            self.raw_sink(sym, raw, ts)
        res = b.on_snapshot_msg(snap)
        if res is SyncResult.STALE:
            # not newer than the book: ignored (counted in the builder's old_snapshots); the book
            # never rewinds. If it is still waiting for a snapshot, ask again (slower if it repeats)
            log.info(
                "%s %s: snapshot %d is older than the book (%d); ignored",
                self.exchange,
                sym,
                snap.lastUpdateId,
                b.last_update_id,
            )
            if b.needs_snapshot:
                self._failed_snapshots[sym] += 1
                self._request_snapshot(session, sym)
            return None
        if res is SyncResult.GAP:
            # buffered diffs are newer than the snapshot: fetch again, slowing down if it repeats
            self._failed_snapshots[sym] += 1
            log.info(
                "%s %s: snapshot %d does not bridge the buffered diffs; fetching again",
                self.exchange,
                sym,
                snap.lastUpdateId,
            )
            self._request_snapshot(session, sym)
        if res is SyncResult.APPLIED or self._last_valid.get(sym, False) != b.valid:
            if res is SyncResult.APPLIED:
                self._failed_snapshots[sym] = 0
            return self._emit(sym, b, ts)
        return None

    def _on_down(self, conn: StreamConnection, reason: str) -> Iterable[Message]:
        if not conn.carries_depth:
            return ()
        now = time.time_ns()
        out = []
        for sym in conn.symbols:
            b = self.builders[sym]
            b.invalidate("reconnect")
            self._gen[sym] += 1
            t = self._fetching.pop(sym, None)
            if t is not None:
                t.cancel()
            if self._last_valid.get(sym, False):
                out.append(self._emit(sym, b, now))
        return out

    # ----------------------------------------------------------------- REST snapshots
    def _request_snapshot(self, session: aiohttp.ClientSession, sym: str) -> None:
        if sym in self._fetching or self._queue is None:
            return
        n = self._failed_snapshots[sym]
        delay = 0.0 if n == 0 else min(self.rest.backoff_max_s, self.rest.backoff_initial_s * 2 ** (n - 1))
        self._fetching[sym] = asyncio.create_task(
            self._fetch_task(session, sym, self._gen[sym], delay), name=f"binance-snapshot-{sym}"
        )

    async def _fetch_task(self, session: aiohttp.ClientSession, sym: str, gen: int, delay: float) -> None:
        queue = self._queue
        assert queue is not None
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            snap = await self.fetch_snapshot(session, sym)
            queue.put_nowait(("snap", sym, snap, time.time_ns(), gen))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to stream(), which raises it
            queue.put_nowait(("error", exc))

    async def fetch_snapshot(self, session: aiohttp.ClientSession, sym: str) -> DepthSnapshot:
        """One REST depth snapshot with retries (see :class:`collector.binance_rest.SnapshotFetcher`)."""
        return await self.rest.fetch(session, sym)

    @property
    def rest_url(self) -> str:
        return self.rest.rest_url

    @rest_url.setter
    def rest_url(self, url: str) -> None:
        self.rest.rest_url = url

    @property
    def rest_requests(self) -> int:
        return self.rest.rest_requests

    @property
    def retries(self) -> int:
        return self.rest.retries

    @property
    def retries_by_error(self) -> dict[str, int]:
        return self.rest.retries_by_error

    # ----------------------------------------------------------------- websocket connections
    async def _conn_loop(self, session: aiohttp.ClientSession, conn: StreamConnection) -> None:
        await connection_loop(self, session, conn)
