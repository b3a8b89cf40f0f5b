"""The compiled batch checks (features.book_checks) equal their numpy formulations: the
validity codes on books broken in every way, and the cumulative sizes bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from features.book_checks import cum_sizes_at, validate_rows
from features.orderbook import _validate_books_numpy


def broken_books(rng: np.random.Generator, T: int, L: int, pad: bool) -> tuple[np.ndarray, np.ndarray]:
    px_b = 100.0 - np.cumsum(rng.uniform(0.01, 1, (T, L)), axis=1)
    px_a = 100.0 + np.cumsum(rng.uniform(0.01, 1, (T, L)), axis=1)
    bids = np.stack([px_b, rng.uniform(0.1, 5, (T, L))], axis=2)
    asks = np.stack([px_a, rng.uniform(0.1, 5, (T, L))], axis=2)
    for side in (bids, asks):
        for r in rng.choice(T, size=T // 2, replace=False):
            j = int(rng.integers(0, L))
            k = int(rng.integers(0, 9))
            if k == 0 and pad:
                side[r, j:, 0] = np.nan  # padding from level j (j == 0: an empty side)
            elif k == 1 and pad:
                side[r, j, 0] = np.nan  # a hole
            elif k == 2:
                side[r, j, int(rng.integers(0, 2))] = rng.choice([np.inf, -np.inf, np.nan])
            elif k == 3:
                side[r, j, int(rng.integers(0, 2))] = rng.choice([0.0, -1.0, -0.0])
            elif k == 4 and L > 1:
                side[r, [j, (j + 1) % L]] = side[r, [(j + 1) % L, j]]  # unsorted
            elif k == 5:
                side[r, j, 0] = side[r, max(j - 1, 0), 0]  # a repeated price
            elif k == 6:
                bids[r, 0, 0] = asks[r, 0, 0] + rng.choice([0.0, 0.5])  # crossed / locked
    return bids, asks


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("L", [1, 2, 7, 40])
def test_validate_rows_equals_the_numpy_rules(L: int, pad: bool) -> None:
    rng = np.random.default_rng(L * 2 + pad)
    for _ in range(20):
        bids, asks = broken_books(rng, 300, L, pad)
        want = _validate_books_numpy(bids, asks)
        assert np.array_equal(validate_rows(bids, asks), want)
        assert len(set(want.tolist())) >= 4  # several kinds of breakage did occur
    empty = np.empty((5, 0, 2))
    full = broken_books(rng, 5, 3, False)[0]
    assert np.array_equal(validate_rows(empty, full), _validate_books_numpy(empty, full))
    assert np.array_equal(validate_rows(full, empty), _validate_books_numpy(full, empty))


def test_cum_sizes_at_equals_numpy_cumsum_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    side = rng.uniform(0, 1, (500, 250, 2)) * rng.choice([1e-8, 1.0, 1e6], size=(500, 250, 1))
    idx = np.sort(rng.integers(0, 250, size=(500, 13)), axis=1)
    want = np.take_along_axis(np.cumsum(side[:, :, 1], axis=1), idx, axis=1)
    got = cum_sizes_at(side, idx)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    # a shared index row broadcast to every row (the unpadded batch case)
    shared = np.broadcast_to(idx[0], idx.shape)
    want = np.cumsum(side[:, :, 1], axis=1)[:, idx[0]]
    assert np.array_equal(cum_sizes_at(side, shared).view(np.int64), want.view(np.int64))
