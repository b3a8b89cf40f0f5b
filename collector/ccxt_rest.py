"""The REST-polling side of the ccxt feeds: ``fetch_order_book`` polled every
``poll_interval_s``, and ``fetch_trades`` pages with a watermark.

Trades over REST: ``fetch_trades`` polled with ``since`` = the newest trade time seen
(inclusive, so trades sharing that millisecond are not lost); the pages overlap and
:class:`collector.ccxt_common.TradeDeduper` drops every trade id already emitted. The first
poll (no ``since``) only seeds the watermark: trades from before the source started are not
published (a restarted collector would otherwise publish them again); ``since_ms``/``seen_ids``
resume a replaced source exactly where the old one stopped. Note the ids differ per route on
Binance: REST ``fetch_trades`` reads ``/api/v3/aggTrades`` (aggregate ids), the websocket
``<sym>@trade`` (trade ids).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, AsyncIterator

from depthpilot.messages import BookSnapshot, Trade

if TYPE_CHECKING:
    from collector.ccxt_source import CcxtBookSource, CcxtTradeSource

__all__ = ["fetch_book", "poll_books", "poll_trades", "trade_page"]

log = logging.getLogger(__name__)


async def fetch_book(src: CcxtBookSource) -> BookSnapshot:
    """One REST snapshot (with retries), recorded when the source has a ``raw_sink``."""
    await src.load_markets()
    ob = await src._call("fetch_order_book", lambda: src.client.fetch_order_book(src.symbol, src.limit))
    return src._emit(ob, "fetch_order_book")


async def poll_books(src: CcxtBookSource) -> AsyncIterator[BookSnapshot]:
    """A book per poll, every ``poll_interval_s``, forever."""
    while True:
        t0 = time.monotonic()
        yield await fetch_book(src)
        await asyncio.sleep(max(0.0, src.poll_interval_s - (time.monotonic() - t0)))


async def trade_page(src: CcxtTradeSource, seed: bool = False) -> tuple[list[Trade], bool]:
    """One REST page (with retries): (new trades, page was full). Advances the watermark
    only over trades already emitted, so a source stopped mid-page resumes without holes."""
    await src.load_markets()
    since = src.since_ms
    page = await src._call("fetch_trades", lambda: src.client.fetch_trades(src.symbol, since, src.limit))
    ts_recv = time.time_ns()
    src.polls += 1
    new = src._new(page, ts_recv, "fetch_trades", seed)
    full = src.limit is not None and len(page) >= src.limit
    stamps = [int(t["timestamp"]) for t in page if t.get("timestamp")]
    if stamps and not new and since is not None and full and max(stamps) <= since:
        # a whole page inside one millisecond, all seen: step over it (trades may be lost)
        src.skipped_windows += 1
        log.warning(
            "%s %s: %d trades in one ms at %d fill the page; stepping over it", src.name, src.symbol, len(page), since
        )
        src.since_ms = since + 1
    return new, full


async def poll_trades(src: CcxtTradeSource) -> AsyncIterator[Trade]:
    """Every new trade, oldest first, forever (the first page only seeds, see the module doc)."""
    if src.since_ms is None:  # seed: trades from before the start are not published
        seed, _ = await trade_page(src, seed=True)
        for t in seed:
            src._emitted(t)
        src.updates = 0
        await asyncio.sleep(src.poll_interval_s)
    while True:
        t0 = time.monotonic()
        new, full = await trade_page(src)
        for t in new:
            yield src._emitted(t)
        if not full:
            await asyncio.sleep(max(0.0, src.poll_interval_s - (time.monotonic() - t0)))
