"""A plain-Python L2 order book with cached best prices (pure logic, no I/O).

Prices are float keys of one dict per side; size 0 deletes a level. The best bid/ask are
cached. The cached best is kept as an *upper bound* for bids (lower bound for asks) while a
batch of levels is applied and only re-derived at the end of the batch if the best level
itself was removed, so applying a diff costs O(levels in the diff) dict operations.

Re-deriving the best after it was removed uses a lazy heap per side (prices pushed when a
level is created, stale entries discarded when they surface), so it costs O(log n) instead
of an O(n) scan of a book that can hold thousands of levels. ``top(n)`` (the only sort) runs
when a snapshot is emitted, which the collector throttles.
"""
from __future__ import annotations

import heapq
from typing import Iterable

import numpy as np

__all__ = ["L2Book", "make_snapshot"]

_EMPTY = np.empty((0, 2), dtype=np.float64)
_heappush = heapq.heappush
_heappop = heapq.heappop


class L2Book:
    """Level-2 book: ``bids``/``asks`` map price -> size (both floats).

    Attributes ``seq`` (last applied exchange update id) and ``ts_exchange`` (ns) are set by
    the feed-specific builder that owns the book.
    """

    __slots__ = ("bids", "asks", "_best_bid", "_best_ask", "_bheap", "_aheap", "seq", "ts_exchange")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._best_bid: float | None = None
        self._best_ask: float | None = None
        # lazy heaps: bids as negated prices (max-heap), asks as prices (min-heap); may hold
        # prices no longer (or twice) in the book; the dict is the truth.
        self._bheap: list[float] = []
        self._aheap: list[float] = []
        self.seq: int = 0
        self.ts_exchange: int = 0

    # ----------------------------------------------------------------- mutation
    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bheap.clear()
        self._aheap.clear()
        self._best_bid = self._best_ask = None
        self.seq = 0

    def apply_snapshot(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Replace the whole book. Levels with size 0 are ignored."""
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
        self._bheap = [-p for p in b]
        heapq.heapify(self._bheap)
        self._aheap = list(a)
        heapq.heapify(self._aheap)
        self._best_bid = max(b) if b else None
        self._best_ask = min(a) if a else None

    def set_bid(self, price: float, size: float) -> None:
        self.apply_bid_levels(((price, size),))

    def set_ask(self, price: float, size: float) -> None:
        self.apply_ask_levels(((price, size),))

    def apply_deltas(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Apply absolute level updates (size 0 = remove). Prices/sizes may be str or float."""
        self.apply_bid_levels([(float(p), float(q)) for p, q in bids])
        self.apply_ask_levels([(float(p), float(q)) for p, q in asks])

    def apply_bid_levels(self, levels: Iterable[tuple[float, float]]) -> None:
        """Hot path: apply bid levels that are already floats (size <= 0 removes)."""
        bids = self.bids
        heap = self._bheap
        bb = self._best_bid
        pop = bids.pop
        # invariant during the loop: bb >= every price in ``bids`` (or None if empty before)
        for p, q in levels:
            if q > 0.0:
                if p not in bids:
                    _heappush(heap, -p)
                    if bb is None or p > bb:
                        bb = p
                bids[p] = q
            else:
                pop(p, None)
        if bb is not None and bb not in bids:
            # the best level went away: surface the next live price from the lazy heap
            while heap and -heap[0] not in bids:
                _heappop(heap)
            bb = -heap[0] if heap else None
        if len(heap) > 2 * len(bids) + 256:  # too many stale entries: rebuild (amortised O(1))
            self._bheap = heap = [-x for x in bids]
            heapq.heapify(heap)
        self._best_bid = bb

    def apply_ask_levels(self, levels: Iterable[tuple[float, float]]) -> None:
        """Hot path: apply ask levels that are already floats (size <= 0 removes)."""
        asks = self.asks
        heap = self._aheap
        ba = self._best_ask
        pop = asks.pop
        for p, q in levels:
            if q > 0.0:
                if p not in asks:
                    _heappush(heap, p)
                    if ba is None or p < ba:
                        ba = p
                asks[p] = q
            else:
                pop(p, None)
        if ba is not None and ba not in asks:
            while heap and heap[0] not in asks:
                _heappop(heap)
            ba = heap[0] if heap else None
        if len(heap) > 2 * len(asks) + 256:
            self._aheap = heap = list(asks)
            heapq.heapify(heap)
        self._best_ask = ba

    # ----------------------------------------------------------------- queries
    def best_bid(self) -> tuple[float, float] | None:
        bb = self._best_bid
        return None if bb is None else (bb, self.bids[bb])

    def best_ask(self) -> tuple[float, float] | None:
        ba = self._best_ask
        return None if ba is None else (ba, self.asks[ba])

    def best_bid_price(self) -> float | None:
        return self._best_bid

    def best_ask_price(self) -> float | None:
        return self._best_ask

    def is_crossed(self) -> bool:
        bb, ba = self._best_bid, self._best_ask
        return bb is not None and ba is not None and bb >= ba

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` levels per side as float64 (k, 2) [price, size] arrays;
        bids descending, asks ascending."""
        bids, asks = self.bids, self.asks
        if bids and n > 0:
            bp = heapq.nlargest(n, bids) if n < len(bids) else sorted(bids, reverse=True)
            b = np.empty((len(bp), 2), dtype=np.float64)
            b[:, 0] = bp
            b[:, 1] = [bids[p] for p in bp]
        else:
            b = _EMPTY
        if asks and n > 0:
            ap = heapq.nsmallest(n, asks) if n < len(asks) else sorted(asks)
            a = np.empty((len(ap), 2), dtype=np.float64)
            a[:, 0] = ap
            a[:, 1] = [asks[p] for p in ap]
        else:
            a = _EMPTY
        return b, a


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
