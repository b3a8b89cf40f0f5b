"""A plain-Python L2 order book with cached best prices (pure logic, no I/O).

Prices are float keys of one dict per side; size 0 deletes a level. The best bid/ask are
cached: while a batch of levels is applied the cached best bid is an upper bound (best ask: a
lower bound) and it is re-derived with one ``max``/``min`` scan only when the best level
itself was removed (a few % of real Binance diffs), so applying a diff costs O(levels in the
diff) dict operations. ``top(n)`` (the only sort: numpy argpartition + argsort) runs when a
snapshot is emitted, which the collector throttles.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["L2Book", "make_snapshot"]

_EMPTY = np.empty((0, 2), dtype=np.float64)
_EMPTY.setflags(write=False)
_NEG_INF = float("-inf")
_POS_INF = float("inf")


class L2Book:
    """Level-2 book: ``bids``/``asks`` map price -> size (both floats).

    Attributes ``seq`` (last applied exchange update id) and ``ts_exchange`` (ns) are set by
    the feed-specific builder that owns the book.
    """

    __slots__ = ("bids", "asks", "_bb", "_ba", "seq", "ts_exchange")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        # cached best prices; -inf / +inf sentinels mean "side empty" (keeps the hot loop
        # free of None checks)
        self._bb: float = _NEG_INF
        self._ba: float = _POS_INF
        self.seq: int = 0
        self.ts_exchange: int = 0

    # ----------------------------------------------------------------- mutation
    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bb = _NEG_INF
        self._ba = _POS_INF
        self.seq = 0

    def apply_snapshot(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Replace the whole book. Prices/sizes may be str or float; size 0 levels are ignored."""
        b: dict[float, float] = {}
        for p, q in bids:
            q = float(q)
            if q > 0.0:
                b[float(p)] = q
        a: dict[float, float] = {}
        for p, q in asks:
            q = float(q)
            if q > 0.0:
                a[float(p)] = q
        self.bids, self.asks = b, a
        self._bb = max(b) if b else _NEG_INF
        self._ba = min(a) if a else _POS_INF

    def set_bid(self, price: float, size: float) -> None:
        """Set one bid level (floats; size <= 0 removes it)."""
        bids = self.bids
        if size > 0.0:
            bids[price] = size
            if price > self._bb:
                self._bb = price
        elif bids.pop(price, None) is not None and price == self._bb:
            self._bb = max(bids) if bids else _NEG_INF

    def set_ask(self, price: float, size: float) -> None:
        """Set one ask level (floats; size <= 0 removes it)."""
        asks = self.asks
        if size > 0.0:
            asks[price] = size
            if price < self._ba:
                self._ba = price
        elif asks.pop(price, None) is not None and price == self._ba:
            self._ba = min(asks) if asks else _POS_INF

    def apply_deltas(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Apply absolute level updates (size 0 = remove). Prices/sizes may be str or float."""
        self.apply_levels([(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks])

    def apply_levels(self, bid_levels: Iterable[tuple[float, float]], ask_levels: Iterable[tuple[float, float]]) -> None:
        """Hot path: apply levels that are already ``(float, float)`` (size <= 0 removes).

        While the batch is applied the cached best bid is only an upper bound (best ask: a
        lower bound): inserts above it raise it, removing it leaves it stale. At the end of the
        batch, if the cached best is no longer in the book it is re-derived with one
        ``max``/``min`` scan. That happens on a few % of real diffs, so it is cheaper than
        keeping a heap up to date on every insert.
        """
        bids = self.bids
        bb = self._bb
        pop = bids.pop
        for p, q in bid_levels:
            if q > 0.0:
                bids[p] = q
                if p > bb:
                    bb = p
            else:
                pop(p, None)
        if bb not in bids:
            bb = max(bids) if bids else _NEG_INF
        self._bb = bb

        asks = self.asks
        ba = self._ba
        pop = asks.pop
        for p, q in ask_levels:
            if q > 0.0:
                asks[p] = q
                if p < ba:
                    ba = p
            else:
                pop(p, None)
        if ba not in asks:
            ba = min(asks) if asks else _POS_INF
        self._ba = ba

    # ----------------------------------------------------------------- queries
    def best_bid(self) -> tuple[float, float] | None:
        """(price, size) of the best bid, None if the side is empty."""
        bb = self._bb
        return None if bb == _NEG_INF else (bb, self.bids[bb])

    def best_ask(self) -> tuple[float, float] | None:
        ba = self._ba
        return None if ba == _POS_INF else (ba, self.asks[ba])

    def best_bid_price(self) -> float | None:
        bb = self._bb
        return None if bb == _NEG_INF else bb

    def best_ask_price(self) -> float | None:
        ba = self._ba
        return None if ba == _POS_INF else ba

    def is_crossed(self) -> bool:
        """Best bid >= best ask (False while a side is empty)."""
        return self._bb >= self._ba

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` levels per side as float64 (k, 2) [price, size] arrays;
        bids descending, asks ascending."""
        return _side_top(self.bids, n, True), _side_top(self.asks, n, False)


def _side_top(side: dict[float, float], n: int, descending: bool) -> np.ndarray:
    m = len(side)
    if m == 0 or n <= 0:
        return _EMPTY
    if n >= m:
        prices = np.fromiter(side.keys(), dtype=np.float64, count=m)
        sizes = np.fromiter(side.values(), dtype=np.float64, count=m)
        order = np.argsort(-prices if descending else prices, kind="stable")
    else:
        prices = np.fromiter(side.keys(), dtype=np.float64, count=m)
        sizes = np.fromiter(side.values(), dtype=np.float64, count=m)
        key = -prices if descending else prices
        part = np.argpartition(key, n - 1)[:n]
        order = part[np.argsort(key[part], kind="stable")]
    out = np.empty((len(order), 2), dtype=np.float64)
    out[:, 0] = prices[order]
    out[:, 1] = sizes[order]
    return out


def make_snapshot(
    book: L2Book,
    exchange: str,
    symbol: str,
    ts_recv: int,
    depth: int,
    valid: bool = True,
    reason: str = "",
):
    """Materialise the top ``depth`` levels of ``book`` as a :class:`depthpilot.messages.BookSnapshot`.

    This is the (throttled) emit path: it sorts, so do not call it after every diff.
    """
    from depthpilot.messages import BookSnapshot

    bids, asks = book.top(depth)
    return BookSnapshot(
        exchange=exchange,
        symbol=symbol,
        ts_exchange=int(book.ts_exchange),
        ts_recv=int(ts_recv),
        seq=int(book.seq),
        bids=bids,
        asks=asks,
        depth=depth,
        valid=valid,
        reason=reason,
    )
