"""Live order-book and trade sources through ccxt (public data only): websocket where
ccxt.pro has it (:mod:`collector.ccxt_ws`), else REST polling (:mod:`collector.ccxt_rest`);
retries with exponential backoff on rate limits, 5xx and timeouts
(:mod:`collector.ccxt_client`); the exchanges, depth limits and the conversion of ccxt's
payloads are pure (:mod:`collector.ccxt_common`).

I/O lives here but nothing else: no bus, no store. Books come out as
:class:`depthpilot.messages.BookSnapshot` (top ``depth`` levels, float64 arrays) from
:class:`CcxtBookSource`, trades as :class:`depthpilot.messages.Trade` (side = the taker's,
which is what ccxt's unified ``side`` is) from :class:`CcxtTradeSource`; both either from
the async iterator ``stream()`` or pushed to a callback by ``run()``. The wiring turns
:class:`RetryEvent` into a RiskEvent.

Recording: a source with ``raw_sink`` hands every order book / trade page ccxt returned to it
as one self-describing JSON record (:mod:`collector.ccxt_recording`), stamped with the receive
time the emitted book / trades carry.
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator, Iterable, Mapping

from collector.ccxt_client import RETRYABLE_ERRORS, RawSink, _CcxtSource
from collector.ccxt_common import (
    EXCHANGES,
    CcxtDataError,
    CcxtSourceError,
    ExchangeSpec,
    TradeDeduper,
    normalise_order_book,
    fresh_trades,
    normalise_trade,
    rebase_api_urls,
    resolve_limit,
)
from collector.ccxt_recording import encode_book, encode_trades
from collector.ccxt_rest import fetch_book, poll_books, poll_trades, trade_page
from collector.ccxt_ws import watch_books, watch_trades
from collector.events import RetryEvent
from depthpilot.messages import BookSnapshot, Trade

__all__ = [
    "ExchangeSpec",
    "EXCHANGES",
    "RETRYABLE_ERRORS",
    "RetryEvent",
    "CcxtBookSource",
    "CcxtTradeSource",
    "CcxtSourceError",
    "CcxtDataError",
    "TradeDeduper",
    "normalise_trade",
    "resolve_limit",
    "rebase_api_urls",
    "normalise_order_book",
]

log = logging.getLogger(__name__)


class CcxtBookSource(_CcxtSource):
    """Public L2 book source for one (exchange, symbol).

    ``exchange`` is a key of :data:`EXCHANGES`. ``mode``: ``"ws"`` (ccxt.pro
    ``watch_order_book``), ``"rest"`` (``fetch_order_book`` polling every
    ``poll_interval_s``) or ``"auto"`` (ws when ccxt.pro supports it for this exchange).
    ``config`` is merged into the ccxt constructor config (e.g. ``{"timeout": 5000}``).
    ``api_base_url`` rebases all REST urls (see :func:`rebase_api_urls`). ``raw_sink(symbol,
    record, ts_ns)`` receives every book ccxt returned (see the module doc).
    """

    _ws_feature = "watchOrderBook"

    def __init__(
        self, exchange: str, symbol: str, *, depth: int = 250, raw_sink: RawSink | None = None, **kwargs: Any
    ) -> None:
        super().__init__(exchange, symbol, **kwargs)
        self.depth = depth
        self.limit = resolve_limit(self.spec, depth, self.mode)
        self.raw_sink = raw_sink

    async def fetch_once(self) -> BookSnapshot:
        """One REST snapshot (with retries)."""
        return await fetch_book(self)

    async def stream(self) -> AsyncIterator[BookSnapshot]:
        """Yield a BookSnapshot per websocket book update (ws) or per poll (rest), forever."""
        await self.load_markets()
        gen = watch_books(self) if self.mode == "ws" else poll_books(self)
        async for snap in gen:
            yield snap

    def _emit(self, ob: Mapping[str, Any], method: str = "fetch_order_book") -> BookSnapshot:
        self.updates += 1
        ts = time.time_ns()
        if self.raw_sink is not None:
            self.raw_sink(self.symbol, encode_book(self.name, method, self.symbol, ob), ts)
        return normalise_order_book(ob, exchange=self.name, symbol=self.symbol, depth=self.depth, ts_recv=ts)


class CcxtTradeSource(_CcxtSource):
    """Public trades for one (exchange, symbol): ccxt.pro ``watch_trades`` (ws) or
    ``fetch_trades`` polling with ``since`` and de-duplication by trade id (rest).

    ``limit``: trades per REST page (None = the exchange default). A full page is followed
    at once by the next one (catching up), otherwise the next poll waits
    ``poll_interval_s``. ``since_ms``/``seen_ids`` resume after an earlier source (its
    :attr:`since_ms` and :meth:`seen_ids`); without ``since_ms`` the first page only seeds
    the watermark. Trades ccxt cannot normalise are counted in :attr:`dropped` and logged.
    """

    _ws_feature = "watchTrades"

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        limit: int | None = 1000,
        since_ms: int | None = None,
        seen_ids: Iterable[str] = (),
        max_seen: int = 20_000,
        raw_sink: RawSink | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(exchange, symbol, **kwargs)
        self.raw_sink = raw_sink
        if limit is not None and limit < 1:
            raise CcxtSourceError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.since_ms = since_ms
        self.dedup = TradeDeduper(max_seen, seen_ids)
        self.duplicates = 0  # trades seen again in an overlapping page / message (not emitted)
        self.dropped = 0  # trades ccxt returned that could not be normalised
        self.skipped_windows = 0  # full pages of one millisecond that had to be stepped over
        self.polls = 0

    def seen_ids(self) -> list[str]:
        return self.dedup.recent()

    def _new(
        self, raw: Iterable[Mapping[str, Any]], ts_recv: int, method: str = "fetch_trades", seed: bool = False
    ) -> list[Trade]:
        """Normalised trades of a page/message not emitted yet, oldest first (not marked
        seen here: :meth:`_emitted` does that when the trade is handed out). The page is
        recorded first when the source has a ``raw_sink`` (``seed``: a page that only seeds)."""
        raw = list(raw)
        if self.raw_sink is not None:
            self.raw_sink(self.symbol, encode_trades(self.name, method, self.symbol, raw, seed=seed), ts_recv)
        out, errors, dup = fresh_trades(raw, exchange=self.name, symbol=self.symbol, ts_recv=ts_recv, seen=self.dedup)
        for e in errors:
            log.warning("dropping trade: %s", e)
        self.dropped += len(errors)
        self.duplicates += dup
        return out

    def _emitted(self, t: Trade) -> Trade:
        if t.trade_id:
            self.dedup.add(t.trade_id)
        # inclusive watermark: the next page starts at this millisecond, the deduper drops repeats
        self.since_ms = max(self.since_ms or 0, t.ts_exchange // 1_000_000)
        self.updates += 1
        return t

    async def _poll(self) -> tuple[list[Trade], bool]:
        """One REST page: see :func:`collector.ccxt_rest.trade_page`."""
        return await trade_page(self)

    async def stream(self) -> AsyncIterator[Trade]:
        """Yield every new trade, oldest first, forever."""
        await self.load_markets()
        gen = watch_trades(self) if self.mode == "ws" else poll_trades(self)
        async for t in gen:
            yield t
