"""The websocket side of the ccxt feeds (ccxt.pro): ``watch_order_book`` and ``watch_trades``.

ccxt.pro keeps the book itself (for Binance: the diff stream plus a REST depth snapshot, as
its ``watch_order_book`` does); each call returns the book after the next update, which is
emitted (and recorded, when the source has a ``raw_sink``) as it is.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, AsyncIterator

from depthpilot.messages import BookSnapshot, Trade

if TYPE_CHECKING:
    from collector.ccxt_source import CcxtBookSource, CcxtTradeSource

__all__ = ["watch_books", "watch_trades"]


async def watch_books(src: CcxtBookSource) -> AsyncIterator[BookSnapshot]:
    """A book per websocket update, forever."""
    while True:
        ob = await src._call("watch_order_book", lambda: src.client.watch_order_book(src.symbol, src.limit))
        yield src._emit(ob, "watch_order_book")


async def watch_trades(src: CcxtTradeSource) -> AsyncIterator[Trade]:
    """Every new trade of each websocket message, oldest first, forever (repeats dropped)."""
    while True:
        raw = await src._call("watch_trades", lambda: src.client.watch_trades(src.symbol))
        for t in src._new(raw, time.time_ns(), "watch_trades"):
            yield src._emitted(t)
