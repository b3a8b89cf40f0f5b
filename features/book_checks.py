"""Compiled (numba) batch checks of padded (T, L, 2) book arrays: one pass per row instead of
a dozen full-array numpy temporaries. Pure array logic; the rules are
:func:`features.orderbook.validate_books`'s (the test keeps the numpy formulation as the
reference: ``tests/features/test_book_checks.py``)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _side_code(side, r, descending, any_pad):  # pragma: no cover - compiled
    """First failing check of one side of row ``r``: 1 empty, 2 non-finite (incl. a level
    after padding), 3 non-positive, 4 unsorted; 0 when good. ``any_pad``: the whole batch has
    NaN-price padding somewhere (then a row of only padding is "empty")."""
    L = side.shape[1]
    empty = True
    nonfinite = False
    nonpos = False
    unsorted = False
    seen_pad = False
    inf = np.inf
    for j in range(L):
        p = side[r, j, 0]
        q = side[r, j, 1]
        pad = p != p
        if pad:
            seen_pad = True
        else:
            empty = False
            if seen_pad:
                nonfinite = True  # a present level after a padding row is a hole
            if not (-inf < p < inf) or not (-inf < q < inf):
                nonfinite = True
            if not (p > 0.0) or not (q > 0.0):
                nonpos = True
        if j > 0:
            # NaN (padding) comparisons are False, so padding never counts as unsorted
            prev = side[r, j - 1, 0]
            if (p >= prev) if descending else (p <= prev):
                unsorted = True
    if any_pad and empty:
        return 1
    if nonfinite:
        return 2
    if nonpos:
        return 3
    if unsorted:
        return 4
    return 0


@njit(cache=True, nogil=True)
def validate_rows(bids, asks):  # pragma: no cover - compiled
    """Reason code per row (0 valid, 1..5 as ``features.orderbook.REASONS``)."""
    T = bids.shape[0]
    code = np.zeros(T, dtype=np.int8)
    pad_b = False
    pad_a = False
    for r in range(T):
        for j in range(bids.shape[1]):
            if bids[r, j, 0] != bids[r, j, 0]:
                pad_b = True
                break
        for j in range(asks.shape[1]):
            if asks[r, j, 0] != asks[r, j, 0]:
                pad_a = True
                break
        if pad_b and pad_a:
            break
    for r in range(T):
        c = 1 if bids.shape[1] == 0 else _side_code(bids, r, True, pad_b)
        if c == 0:
            c = 1 if asks.shape[1] == 0 else _side_code(asks, r, False, pad_a)
        if c == 0 and bids.shape[1] and asks.shape[1] and bids[r, 0, 0] >= asks[r, 0, 0]:
            c = 5
        code[r] = c
    return code


@njit(cache=True, nogil=True)
def cum_sizes_at(side, idx):  # pragma: no cover - compiled
    """``np.cumsum(side[:, :, 1], axis=1)`` read at level ``idx[r, d]`` of each row (the same
    left-to-right float additions as numpy's accumulate, so the same bits), without the
    (T, L) temporary. ``idx`` (T, D) level indices; levels past the largest are never read."""
    T = side.shape[0]
    nD = idx.shape[1]
    out = np.empty((T, nD))
    buf = np.empty(side.shape[1])
    for r in range(T):
        top = 0
        for d in range(nD):
            if idx[r, d] > top:
                top = idx[r, d]
        s = 0.0
        for j in range(top + 1):
            s = side[r, j, 1] if j == 0 else s + side[r, j, 1]
            buf[j] = s
        for d in range(nD):
            out[r, d] = buf[idx[r, d]]
    return out
