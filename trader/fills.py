"""Market-order fills against an order book, the paper exchange's matching rule. Pure.

A market order takes liquidity level by level from the best price outwards until its quantity
is filled or the book (the levels the snapshot holds) runs out. Only the levels it touches are
converted to ``Decimal`` (``to_decimal``: a float's shortest repr, so ``63944.1`` stays exact),
so a 1,000-level book costs the same as a 3-level one for a small order.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from trader.domain import ZERO, to_decimal


def walk_levels(
    levels: np.ndarray, qty: Decimal, skip: Decimal = ZERO, limit: float | None = None, sign: int = 1
) -> tuple[list[tuple[Decimal, Decimal]], Decimal]:
    """Take ``qty`` from ``levels`` (float64 (n, 2) [price, size], best first), after the first
    ``skip`` of size (liquidity our earlier orders already took from this same snapshot). With a
    ``limit`` price, stop at the first level beyond it (``sign`` +1 for asks: above it is beyond,
    -1 for bids: below it is beyond).

    Returns ``([(price, qty), ...], unfilled)``: one entry per touched level, ``unfilled`` > 0
    when the book ran out (partial depth)."""
    out: list[tuple[Decimal, Decimal]] = []
    rest = qty
    n = len(levels)
    i = 0
    while rest > 0 and i < n:
        px_f, sz_f = levels[i]
        i += 1
        if px_f != px_f:  # NaN padding: the side has no more levels
            break
        if limit is not None and (px_f - limit) * sign > 0.0:
            break
        if not sz_f > 0.0:
            continue
        sz = to_decimal(float(sz_f))
        if skip:
            used = sz if sz < skip else skip
            skip -= used
            sz -= used
            if not sz:
                continue
        take = sz if sz < rest else rest
        out.append((to_decimal(float(px_f)), take))
        rest -= take
    return out, rest


def vwap(parts: list[tuple[Decimal, Decimal]]) -> Decimal | None:
    q = sum((t for _, t in parts), ZERO)
    return sum((p * t for p, t in parts), ZERO) / q if q else None


def slippage(parts: list[tuple[Decimal, Decimal]], best: Decimal, side: str) -> Decimal:
    """Cost of walking the book versus filling everything at the touch, in quote currency
    (positive = worse than the best price)."""
    s = 1 if side == "buy" else -1
    return sum((s * (p - best) * t for p, t in parts), ZERO)
