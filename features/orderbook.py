"""Per-snapshot order-book features: one vectorised kernel over (T, L, 2) arrays.

Input convention: ``bids``/``asks`` float64 arrays (T, L, 2) of [price, size], bids by price
descending, asks ascending. A side with fewer than L levels is padded at the end with NaN
prices (the size of a padding row is ignored). Batch mode calls :func:`snapshot_kernel` on
the whole recording; streaming mode calls it on a (1, n, 2) view of one snapshot, so both
produce the same numbers by construction.

Depth policy (documented in FeatureSpec): at depth ``d`` a side with ``n < d`` levels uses the
``n`` levels it has (cumulative volume over all of them, distance to its last level) and the
column ``depth_ok_d`` is 0.0; it is 1.0 when both sides have at least ``d`` levels.

Formulas (``bb``/``ba`` best bid/ask price, ``qb``/``qa`` their sizes, ``mid`` = (bb+ba)/2):
  bid_vol_d / ask_vol_d  sum of sizes of the first min(d, n) levels
  vol_ratio_d            bid_vol_d / ask_vol_d
  bid_dist_pct_d         (bb - bid_price[min(d,n)-1]) / bb * 100     (>= 0)
  ask_dist_pct_d         (ask_price[min(d,n)-1] - ba) / ba * 100     (>= 0)
  spread, spread_bps     ba - bb, (ba - bb) / mid * 1e4
  microprice             (bb * qa + ba * qb) / (qb + qa);  micro_dev_bps = (micro - mid)/mid*1e4
  imb_top                (qb - qa) / (qb + qa)
  imb_dw                 (Wb - Wa) / (Wb + Wa), W = sum_i size_i / (i + 1) over the first
                         ``dwi_levels`` levels of each side
  ofi                    Cont, Kukanov & Stoikov (2014) order-flow imbalance vs the previous
                         valid snapshot: 1{bb>=bb'} qb - 1{bb<=bb'} qb' - 1{ba<=ba'} qa
                         + 1{ba>=ba'} qa'; 0.0 for the first valid snapshot.
  n_bid_levels, n_ask_levels  levels present.
"""

from __future__ import annotations

import numpy as np

from features.spec import SCALARS, PER_DEPTH, FeatureSpec, feature_names

__all__ = [
    "BookInputError",
    "REASONS",
    "KernelConsts",
    "snapshot_kernel",
    "ofi_kernel",
    "validate_books",
    "validate_one",
    "as_batch",
]

REASONS = {
    0: "",
    1: "empty_side",
    2: "non_finite",
    3: "non_positive",
    4: "unsorted_levels",
    5: "crossed",
    6: "ts_backwards",
}
_INF = np.inf


class BookInputError(ValueError):
    """Arrays passed to the book kernels have the wrong shape/dtype."""


class KernelConsts:
    """Per-spec constants precomputed once (depth indices, imbalance weights)."""

    __slots__ = ("depths", "depths_f", "dwi_w", "dwi_levels", "n_features", "n_per_depth", "names", "_idx")

    def __init__(self, spec: FeatureSpec) -> None:
        self.depths = np.asarray(spec.depths, dtype=np.int64)
        self.depths_f = self.depths.astype(np.float64)
        self.dwi_levels = int(spec.dwi_levels)
        self.dwi_w = 1.0 / np.arange(1, self.dwi_levels + 1, dtype=np.float64)
        self.names = feature_names(spec)
        self.n_per_depth = len(PER_DEPTH)
        self.n_features = len(self.names)
        assert self.n_features == len(spec.depths) * len(PER_DEPTH) + len(SCALARS)
        self._idx: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def depth_index(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a side with ``n`` levels: (level index used at each depth, its flat price index
        2*idx, depth-available mask) - cached, it only depends on n."""
        r = self._idx.get(n)
        if r is None:
            i = np.minimum(self.depths, n) - 1
            r = self._idx[n] = (i, 2 * i, self.depths <= n)
        return r


def as_batch(arr: np.ndarray, name: str) -> np.ndarray:
    """Check a (T, L, 2) float64 side array (L may be 0)."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] != 2:
        raise BookInputError(f"{name} must have shape (T, L, 2); got {a.shape}")
    return a


def ofi_kernel(bb, qb, ba, qa, pbb, pqb, pba, pqa):
    """Cont-Kukanov-Stoikov OFI between a snapshot and the previous one.

    Works elementwise on arrays and on plain floats (same expression). With no previous
    snapshot pass the snapshot's own top of book as "previous": the result is exactly 0.0.
    """
    return (bb >= pbb) * qb - (bb <= pbb) * pqb - (ba <= pba) * qa + (ba >= pba) * pqa


def _n_levels(p: np.ndarray):
    """Levels present per row of a (T, L) price array: an int when no row is padded or
    T == 1, else a (T, 1) int array."""
    L = p.shape[1]
    if p.shape[0] == 1:
        v = p[0, L - 1]
        return L if v == v else int((p == p).sum())
    last = p[:, L - 1]
    if (last == last).all():
        return L
    return (p == p).sum(axis=1)[:, None]


def snapshot_kernel(
    bids: np.ndarray, asks: np.ndarray, prev_top, k: KernelConsts, out: np.ndarray | None = None
) -> np.ndarray:
    """All per-snapshot features of valid books, written into ``out`` (T, F).

    bids (T, Lb, 2), asks (T, La, 2) C-contiguous float64 (Lb, La >= 1, NaN-price padding at
    the end of a row allowed); prev_top = [bb, qb, ba, qa] of the previous valid snapshot:
    a (T, 4) array, or for T == 1 a sequence of 4 floats. Columns follow
    :func:`features.spec.feature_names`. Rows must be valid (see :func:`validate_books`).

    T == 1 (streaming) takes the top-of-book values as Python floats instead of (T, 1)
    columns: the same expressions below run on either, so both modes share every formula.
    """
    T, Lb, _ = bids.shape
    La = asks.shape[1]
    if out is None:
        out = np.empty((T, k.n_features))
    D = k.depths
    nD = D.shape[0]
    nb = _n_levels(bids[:, :, 0])
    na = _n_levels(asks[:, :, 0])
    if type(nb) is int:
        ib, ib2, okb = k.depth_index(nb)
    else:
        ib = np.minimum(D, nb) - 1  # (T, D): index of the level used at each depth
        ib2, okb = 2 * ib, nb >= D
    if type(na) is int:
        ia, ia2, oka = k.depth_index(na)
    else:
        ia = np.minimum(D, na) - 1
        ia2, oka = 2 * ia, na >= D
    # cumulative sizes; NaN after the padding start is never read (indices stop at n - 1)
    if T > 1:  # batch: compiled, without the (T, L) cumsum temporaries (same additions, same bits)
        from features.book_checks import cum_sizes_at

        cum_b = cum_sizes_at(bids, np.broadcast_to(ib, (T, nD)))
        cum_a = cum_sizes_at(asks, np.broadcast_to(ia, (T, nD)))
        rows = np.arange(T)[:, None]
        ib2 = ib2 + rows * (2 * Lb)
        ia2 = ia2 + rows * (2 * La)
    else:
        cum_b = np.cumsum(bids[:, :, 1], axis=1).reshape(-1)[ib]
        cum_a = np.cumsum(asks[:, :, 1], axis=1).reshape(-1)[ia]
    px_b = bids.reshape(-1)[ib2]
    px_a = asks.reshape(-1)[ia2]

    # depth-weighted sizes over the first K levels (padding NaN -> 0 only when padded)
    K = k.dwi_levels
    qbk = bids[:, :K, 1]
    qak = asks[:, :K, 1]
    if type(nb) is not int or nb < K:
        qbk = np.fmax(qbk, 0.0)
    if type(na) is not int or na < K:
        qak = np.fmax(qak, 0.0)
    wb = (qbk * k.dwi_w[: qbk.shape[1]]).sum(axis=1)
    wa = (qak * k.dwi_w[: qak.shape[1]]).sum(axis=1)
    if T == 1:
        bb, qb = bids[0, 0].tolist()
        ba, qa = asks[0, 0].tolist()
        if isinstance(prev_top, np.ndarray):
            prev_top = prev_top.reshape(-1).tolist()
        pbb, pqb, pba, pqa = prev_top
        wb = float(wb[0])
        wa = float(wa[0])
    else:
        bb = bids[:, 0, 0:1]
        qb = bids[:, 0, 1:2]
        ba = asks[:, 0, 0:1]
        qa = asks[:, 0, 1:2]
        pbb, pqb, pba, pqa = (prev_top[:, j : j + 1] for j in range(4))
        wb = wb[:, None]
        wa = wa[:, None]

    s = k.n_per_depth
    out[:, 0 : s * nD : s] = cum_b
    out[:, 1 : s * nD : s] = cum_a
    out[:, 2 : s * nD : s] = cum_b / cum_a
    out[:, 3 : s * nD : s] = (bb - px_b) / bb * 100.0
    out[:, 4 : s * nD : s] = (px_a - ba) / ba * 100.0
    out[:, 5 : s * nD : s] = okb & oka

    mid = 0.5 * (bb + ba)
    spread = ba - bb
    qsum = qb + qa
    micro = (bb * qa + ba * qb) / qsum
    vals = (
        mid,
        spread,
        spread / mid * 1e4,
        micro,
        (micro - mid) / mid * 1e4,
        (qb - qa) / qsum,
        (wb - wa) / (wb + wa),
        ofi_kernel(bb, qb, ba, qa, pbb, pqb, pba, pqa),
        nb,
        na,
    )
    c0 = s * nD
    if T == 1:
        out[0, c0:] = vals
    else:
        for j, v in enumerate(vals):
            out[:, c0 + j : c0 + j + 1] = v
    return out


def validate_books(bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """Reason code per row (0 = valid; see REASONS) for padded (T, L, 2) batches.

    A side is valid when its levels are a prefix of good levels (finite price > 0 and finite
    size > 0) followed only by NaN-price padding, has at least one level, and prices are
    strictly monotone (bids descending, asks ascending). A book is crossed when bb >= ba.
    First failing check wins, in the order: bid side (empty, non-finite, non-positive,
    unsorted), then ask side (same), then crossed. :func:`validate_one` applies the same rules
    to one unpadded snapshot.
    """
    from features.book_checks import validate_rows

    if bids.dtype == np.float64 and asks.dtype == np.float64:
        return validate_rows(bids, asks)  # compiled: the rules below, one pass per row
    return _validate_books_numpy(bids, asks)


def _validate_books_numpy(bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """:func:`validate_books` in numpy (the reference the compiled check is tested against)."""
    T = bids.shape[0]
    code = np.zeros(T, dtype=np.int8)
    for side, descending in ((bids, True), (asks, False)):
        if side.shape[1] == 0:
            code[code == 0] = 1
            continue
        p = side[:, :, 0]
        pad = np.isnan(p)
        if pad.any():
            present = ~pad
            empty = pad.all(axis=1)
            # a present level after a padding row is a hole: non-finite
            hole = (present[:, 1:] & pad[:, :-1]).any(axis=1)
            nonfinite = hole | (present[:, :, None] & ~np.isfinite(side)).any(axis=(1, 2))
            nonpos = (present[:, :, None] & ~(side > 0)).any(axis=(1, 2))
        else:
            empty = None
            nonfinite = ~np.isfinite(side).all(axis=(1, 2))
            nonpos = ~(side > 0).all(axis=(1, 2))
        # NaN (padding) comparisons are False, so padding never counts as unsorted
        if side.shape[1] > 1:
            out_of_order = (p[:, 1:] >= p[:, :-1]) if descending else (p[:, 1:] <= p[:, :-1])
            unsorted = out_of_order.any(axis=1)
        else:
            unsorted = None
        for c, m in ((1, empty), (2, nonfinite), (3, nonpos), (4, unsorted)):
            if m is not None and m.any():
                code[(code == 0) & m] = c
    if bids.shape[1] and asks.shape[1]:
        crossed = bids[:, 0, 0] >= asks[:, 0, 0]
        code[(code == 0) & crossed] = 5
    return code


def _side_code_one(side: np.ndarray, descending: bool) -> int:
    """Validity of one unpadded (n, 2) side (trailing NaN-price rows are treated as padding)."""
    n = side.shape[0]
    if n == 0:
        return 1
    p = side[:, 0]
    if not (p[-1] == p[-1]):  # trailing padding present: strip it, exactly as the batch rule
        present = ~np.isnan(p)
        m = int(present.sum())
        if m == 0:
            return 1
        if not present[:m].all():
            return 2
        side = side[:m]
        p = side[:, 0]
        n = m
    if not side.min() > 0.0:  # NaN min compares False: tell non-finite from non-positive
        return 2 if not np.isfinite(side).all() else 3
    if not side.max() < _INF:
        return 2
    if n > 1:
        if not ((p[1:] < p[:-1]) if descending else (p[1:] > p[:-1])).all():
            return 4
    return 0


def validate_one(bids: np.ndarray, asks: np.ndarray) -> int:
    """Reason code for one snapshot given as (n, 2) arrays; same rules as :func:`validate_books`."""
    c = _side_code_one(bids, True)
    if c:
        return c
    c = _side_code_one(asks, False)
    if c:
        return c
    if bids[0, 0] >= asks[0, 0]:
        return 5
    return 0
