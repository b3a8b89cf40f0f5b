"""A plain-Python L2 order book split into a near-top window and the rest (pure logic, no I/O).

Each side is stored as two dicts (price -> size, both floats): the *window* holds exactly the
levels on the near side of a boundary price (bids: every price ``>= lo``; asks: every price
``<= hi``), normally the best ``window`` to ``2 * window`` levels; the *far* dict holds all
other levels. Size 0 deletes a level. So:

* applying a level costs one comparison with the boundary and one dict operation, on the
  window or on the far dict;
* the cached best bid/ask only moves inwards on insert; when the best level itself is
  removed the new best is ``max``/``min`` of the small window, never a scan of the side;
* a window grown past ``2 * window`` levels is trimmed back to the best ``window`` (its lowest
  levels move to the far dict and the boundary moves inwards); a window that runs empty while
  the far dict is not (the market moved through it) is refilled with the best ``window`` far
  levels, found with one numpy partition of the far prices.

``bids``/``asks`` are read-only live views over both dicts of a side (a ``Mapping``:
``len``, ``in``, ``[]``, iteration, ``items()``, ``==`` with a dict). ``top(n)`` sorts only
the window (moving far levels into it first if it holds fewer than ``n``) and raises the
window target to ``n`` (at most :data:`MAX_WINDOW`), so repeated emits of a fixed depth never
touch the rest of the book.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import chain

import numpy as np

__all__ = ["DEFAULT_WINDOW", "MAX_WINDOW", "BookSide", "L2Book", "make_snapshot"]

_EMPTY = np.empty((0, 2), dtype=np.float64)
_EMPTY.setflags(write=False)
_NEG_INF = float("-inf")
_POS_INF = float("inf")

DEFAULT_WINDOW = 128  # levels per side kept in the window (grown by top(n))
MAX_WINDOW = 1024  # top(n) beyond this sorts the whole side and does not grow the window
_SORT_ALL = 256  # up to this many prices sorted() beats numpy for picking the best k


def _largest(prices: Iterable[float], m: int, k: int) -> list[float]:
    """The ``k`` largest of the ``m`` prices (all of them if ``m <= k``), unordered."""
    if m <= k:
        return list(prices)
    if m <= _SORT_ALL:
        return sorted(prices)[m - k :]
    return np.partition(np.fromiter(prices, dtype=np.float64, count=m), m - k)[m - k :].tolist()


def _smallest(prices: Iterable[float], m: int, k: int) -> list[float]:
    """The ``k`` smallest of the ``m`` prices (all of them if ``m <= k``), unordered."""
    if m <= k:
        return list(prices)
    if m <= _SORT_ALL:
        return sorted(prices)[:k]
    return np.partition(np.fromiter(prices, dtype=np.float64, count=m), k - 1)[:k].tolist()


class BookSide(Mapping):
    """Read-only live view of one side of an :class:`L2Book` (price -> size, floats)."""

    __slots__ = ("_far", "_near")

    def __init__(self, near: dict[float, float], far: dict[float, float]) -> None:
        self._near = near
        self._far = far

    def __getitem__(self, price: float) -> float:
        q = self._near.get(price)
        return self._far[price] if q is None else q

    def __contains__(self, price: object) -> bool:
        return price in self._near or price in self._far

    def __iter__(self) -> Iterator[float]:
        return chain(self._near, self._far)

    def __len__(self) -> int:
        return len(self._near) + len(self._far)

    def copy(self) -> dict[float, float]:
        """A plain dict of the side (window levels first, unordered)."""
        return {**self._near, **self._far}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BookSide):
            other = other.copy()
        if isinstance(other, dict):
            return len(self) == len(other) and self.copy() == other
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dict

    def __repr__(self) -> str:
        return f"BookSide({self.copy()!r})"


class L2Book:
    """Level-2 book. ``bids``/``asks``: read-only :class:`BookSide` views (price -> size).

    Mutate it only through its methods. Attributes ``seq`` (last applied exchange update
    id) and ``ts_exchange`` (ns) are set by the feed-specific builder that owns the book.
    ``window`` is the number of levels per side kept in the near-top window.
    """

    __slots__ = ("_ba", "_bb", "_fa", "_fb", "_hi", "_lo", "_wa", "_wb", "asks", "bids", "seq", "ts_exchange", "window")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be an int in [1, {MAX_WINDOW}], not {window!r}")
        self.window = window
        # window / far dicts (never replaced: the views hold them). Invariants after every
        # mutation: _wb = {bids >= _lo}, _fb = {bids < _lo}, _wa = {asks <= _hi},
        # _fa = {asks > _hi}; a window is empty only if its whole side is; _bb = max(_wb)
        # (-inf if empty), _ba = min(_wa) (+inf if empty).
        self._wb: dict[float, float] = {}
        self._fb: dict[float, float] = {}
        self._wa: dict[float, float] = {}
        self._fa: dict[float, float] = {}
        self._lo: float = _NEG_INF
        self._hi: float = _POS_INF
        self._bb: float = _NEG_INF
        self._ba: float = _POS_INF
        self.bids = BookSide(self._wb, self._fb)
        self.asks = BookSide(self._wa, self._fa)
        self.seq: int = 0
        self.ts_exchange: int = 0

    # ----------------------------------------------------------------- windows
    def _fill_bids(self, k: int) -> None:
        """Move the best ``k`` far bids into the window (all of them if fewer)."""
        fb, wb = self._fb, self._wb
        top = _largest(fb, len(fb), k)
        pop = fb.pop
        for p in top:
            wb[p] = pop(p)
        if fb:
            self._lo = min(top)
        else:
            self._lo = _NEG_INF
        self._bb = max(wb) if wb else _NEG_INF

    def _fill_asks(self, k: int) -> None:
        fa, wa = self._fa, self._wa
        top = _smallest(fa, len(fa), k)
        pop = fa.pop
        for p in top:
            wa[p] = pop(p)
        if fa:
            self._hi = max(top)
        else:
            self._hi = _POS_INF
        self._ba = min(wa) if wa else _POS_INF

    def _trim_bids(self) -> None:
        """Move all but the best ``window`` window bids to the far dict."""
        wb, fb = self._wb, self._fb
        keep = sorted(wb)
        cut = len(keep) - self.window
        pop = wb.pop
        for p in keep[:cut]:
            fb[p] = pop(p)
        self._lo = keep[cut]

    def _trim_asks(self) -> None:
        wa, fa = self._wa, self._fa
        keep = sorted(wa)
        w = self.window
        pop = wa.pop
        for p in keep[w:]:
            fa[p] = pop(p)
        self._hi = keep[w - 1]

    # ----------------------------------------------------------------- mutation
    def clear(self) -> None:
        self._wb.clear()
        self._fb.clear()
        self._wa.clear()
        self._fa.clear()
        self._lo = _NEG_INF
        self._hi = _POS_INF
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
        self._wb.clear()
        self._wa.clear()
        self._fb.clear()
        self._fa.clear()
        self._fb.update(b)
        self._fa.update(a)
        self._fill_bids(self.window)
        self._fill_asks(self.window)

    def set_bid(self, price: float, size: float) -> None:
        """Set one bid level (floats; size <= 0 removes it)."""
        self.apply_levels(((price, size),), ())

    def set_ask(self, price: float, size: float) -> None:
        """Set one ask level (floats; size <= 0 removes it)."""
        self.apply_levels((), ((price, size),))

    def apply_deltas(self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]) -> None:
        """Apply absolute level updates (size 0 = remove). Prices/sizes may be str or float."""
        self.apply_levels([(float(p), float(q)) for p, q in bids], [(float(p), float(q)) for p, q in asks])

    def apply_levels(
        self, bid_levels: Iterable[tuple[float, float]], ask_levels: Iterable[tuple[float, float]]
    ) -> None:
        """Hot path: apply levels that are already ``(float, float)`` (size <= 0 removes).

        Per level: one comparison with the window boundary, one dict operation. The best price
        is only raised (bids; asks: lowered) while the batch is applied; if the best level was
        removed, the new best is the extreme of the window.
        """
        wb = self._wb
        fb = self._fb
        lo = self._lo
        bb = self._bb
        for p, q in bid_levels:
            if p >= lo:
                if q > 0.0:
                    wb[p] = q
                    if p > bb:  # noqa: PLR1730 (hot loop: a compare beats a max() call)
                        bb = p
                else:
                    wb.pop(p, None)
            elif q > 0.0:
                fb[p] = q
            else:
                fb.pop(p, None)
        if bb not in wb:  # the best level was removed (or the side is empty)
            if wb:
                bb = max(wb)
            elif fb:
                self._fill_bids(self.window)
                bb = self._bb
            else:
                bb = _NEG_INF
        self._bb = bb
        if len(wb) > 2 * self.window:
            self._trim_bids()

        wa = self._wa
        fa = self._fa
        hi = self._hi
        ba = self._ba
        for p, q in ask_levels:
            if p <= hi:
                if q > 0.0:
                    wa[p] = q
                    if p < ba:  # noqa: PLR1730
                        ba = p
                else:
                    wa.pop(p, None)
            elif q > 0.0:
                fa[p] = q
            else:
                fa.pop(p, None)
        if ba not in wa:
            if wa:
                ba = min(wa)
            elif fa:
                self._fill_asks(self.window)
                ba = self._ba
            else:
                ba = _POS_INF
        self._ba = ba
        if len(wa) > 2 * self.window:
            self._trim_asks()

    # ----------------------------------------------------------------- queries
    def best_bid(self) -> tuple[float, float] | None:
        """(price, size) of the best bid, None if the side is empty."""
        bb = self._bb
        return None if bb == _NEG_INF else (bb, self._wb[bb])

    def best_ask(self) -> tuple[float, float] | None:
        ba = self._ba
        return None if ba == _POS_INF else (ba, self._wa[ba])

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
        return len(self._wb) + len(self._fb) + len(self._wa) + len(self._fa)

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` levels per side as float64 (k, 2) [price, size] arrays;
        bids descending, asks ascending.

        Sorts only the window (filled up to ``n`` levels first); raises the window target to
        ``n`` so the next call finds it filled. ``n > MAX_WINDOW`` sorts the whole side.
        """
        if n <= 0:
            return _EMPTY, _EMPTY
        if n > MAX_WINDOW:
            return _side_top(self.bids, n, True), _side_top(self.asks, n, False)
        self.window = max(self.window, n)
        if len(self._wb) < n and self._fb:
            self._fill_bids(n - len(self._wb))
        if len(self._wa) < n and self._fa:
            self._fill_asks(n - len(self._wa))
        # each window now holds at least the top n levels of its side (or the whole side)
        return _window_top(self._wb, n, True), _window_top(self._wa, n, False)


def _window_top(window: dict[float, float], n: int, descending: bool) -> np.ndarray:
    """Top ``n`` of a window dict (prices are unique keys, so the order is exact)."""
    m = len(window)
    if m == 0:
        return _EMPTY
    prices = np.fromiter(window.keys(), dtype=np.float64, count=m)
    sizes = np.fromiter(window.values(), dtype=np.float64, count=m)
    if n < m:
        idx = np.argpartition(prices, m - n)[m - n :] if descending else np.argpartition(prices, n - 1)[:n]
        idx = idx[np.argsort(prices[idx])]
    else:
        idx = np.argsort(prices)
    if descending:
        idx = idx[::-1]
    out = np.empty((len(idx), 2), dtype=np.float64)
    out[:, 0] = prices[idx]
    out[:, 1] = sizes[idx]
    return out


def _side_top(side: BookSide, n: int, descending: bool) -> np.ndarray:
    """Top ``n`` of a whole side (numpy argpartition + argsort)."""
    m = len(side)
    if m == 0:
        return _EMPTY
    levels = side.copy()
    prices = np.fromiter(levels.keys(), dtype=np.float64, count=m)
    sizes = np.fromiter(levels.values(), dtype=np.float64, count=m)
    key = -prices if descending else prices
    if n >= m:
        order = np.argsort(key, kind="stable")
    else:
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
    size_unit: str = "base",
    contract_value: float = 0.0,
):
    """Materialise the top ``depth`` levels of ``book`` as a :class:`depthpilot.messages.BookSnapshot`.

    This is the emit path: it sorts the book's window (``depth`` to ``2 * depth`` levels per
    side once the window has grown to ``depth``), not the whole book.
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
        size_unit=size_unit,
        contract_value=contract_value,
    )
