"""Time aggregation of per-snapshot features into fixed blocks (default 1 minute, >= 1 s).

Block k covers ``[k*interval, (k+1)*interval)`` ns; its row is stamped ``(k+1)*interval - 1``
(the last ns it covers: data up to and including that ts). Only valid snapshots (rows that
are not all-NaN) count; blocks without a valid snapshot produce no row.

Row layout (:func:`features.spec.aggregate_names`): ``n_snapshots``, ``mean_<f>`` for every
snapshot feature, ``last_<f>`` for every snapshot feature, then ``d_<f>`` = last_<f> of this
block minus last_<f> of the previous emitted block for the spec's change columns (seed
system's dvol / dvor); NaN for the first block.

Resets: rows flagged ``reset`` (the per-symbol state restarted before them: an invalid book,
a resync or a feed gap; see :mod:`features.clock`) make ``d_*`` of their block NaN -- a change
is never measured across a gap. The block's means and lasts are kept.

A closed block is never re-opened: a row for a block already emitted (a late snapshot, e.g.
after ``advance`` closed the block on the wall clock) is dropped and counted in ``late``.

Batch: :func:`aggregate_blocks`. Streaming: :class:`StreamingAggregator` (sums the block's
rows in arrival order, exactly as ``np.add.reduceat`` does in batch).
"""

from __future__ import annotations

import numpy as np

from features.spec import FeatureSpec, aggregate_names, change_columns, feature_names

__all__ = ["aggregate_blocks", "StreamingAggregator"]


def _change_idx(spec: FeatureSpec) -> np.ndarray:
    names = feature_names(spec)
    pos = {n: i for i, n in enumerate(names)}
    return np.array([pos[n] for n in change_columns(spec)], dtype=np.int64)


def _assemble(n: np.ndarray, sums: np.ndarray, last: np.ndarray, prev_last: np.ndarray, ci: np.ndarray) -> np.ndarray:
    mean = sums / n[:, None]
    d = last[:, ci] - prev_last[:, ci]
    return np.concatenate((n[:, None], mean, last, d), axis=1)


def aggregate_blocks(
    spec: FeatureSpec, ts: np.ndarray, X: np.ndarray, reset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate (T, F) per-snapshot features (invalid rows all-NaN) with their ns timestamps;
    ``reset`` (T,) bool marks rows where per-symbol state restarted (``d_*`` NaN in their block).

    Returns (block_ts (B,) int64, A (B, len(aggregate_names(spec))))."""
    ts = np.asarray(ts, dtype=np.int64)
    X = np.asarray(X, dtype=np.float64)
    F = len(feature_names(spec))
    if X.ndim != 2 or X.shape[1] != F or ts.shape != (X.shape[0],):
        raise ValueError(f"expected X (T, {F}) and ts (T,); got {X.shape} and {ts.shape}")
    valid = ~np.isnan(X[:, 0])
    tv = ts[valid]
    Xv = X[valid]
    na = len(aggregate_names(spec))
    if tv.size == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, na))
    if (np.diff(tv) < 0).any():
        raise ValueError("timestamps of valid rows must be non-decreasing")
    iv = spec.interval_ns
    b = tv // iv
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    ends = np.concatenate((starts[1:], [tv.size])) - 1
    n = (ends - starts + 1).astype(np.float64)
    sums = np.add.reduceat(Xv, starts, axis=0)
    last = Xv[ends]
    prev_last = np.concatenate((np.full((1, F), np.nan), last[:-1]))
    A = _assemble(n, sums, last, prev_last, _change_idx(spec))
    if reset is not None:
        rv = np.asarray(reset, dtype=bool)[valid]
        broken = np.logical_or.reduceat(rv, starts)
        A[broken, A.shape[1] - len(_change_idx(spec)) :] = np.nan
    return (b[starts] + 1) * iv - 1, A


class StreamingAggregator:
    """Feed (ts, per-snapshot row or None) in time order; completed blocks come back.

    ``update`` returns the blocks closed by this timestamp (at most one: the previous open
    block, closed as soon as a later block starts), ``advance(now_ns)`` closes the open block
    once wall-clock time has passed its end without a new snapshot, ``flush`` closes it
    unconditionally (end of a recording). Each returned item is ``(block_ts, row)``.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.names = aggregate_names(spec)
        self._iv = spec.interval_ns
        F = len(feature_names(spec))
        self._ci = _change_idx(spec)
        self._sum = np.zeros((1, F))
        self._last = np.full((1, F), np.nan)
        self._prev_last = np.full((1, F), np.nan)
        self._n = 0
        self._block: int | None = None
        self._closed: int | None = None  # index of the last closed block: never re-opened
        self._broken = False  # a row of the open block followed a reset
        self.last_broken = False
        self.late = 0  # rows dropped because their block was already closed

    def _close(self, block: int) -> tuple[int, np.ndarray]:
        """Close the open block ``block`` (``self._block``, passed in once checked non-None)."""
        row = _assemble(np.array([float(self._n)]), self._sum, self._last, self._prev_last, self._ci)[0]
        self.last_broken = self._broken  # the closed block's d_* spans a reset (NaN)
        if self._broken:
            row[row.size - self._ci.size :] = np.nan
        bts = (block + 1) * self._iv - 1
        self._prev_last = self._last.copy()
        self._sum[:] = 0.0
        self._n = 0
        self._closed = block
        self._block = None
        self._broken = False
        return bts, row

    def advance(self, now_ns: int) -> list[tuple[int, np.ndarray]]:
        if self._block is not None and now_ns // self._iv > self._block:
            return [self._close(self._block)]
        return []

    def update(self, ts_ns: int, x: np.ndarray | None, reset: bool = False) -> list[tuple[int, np.ndarray]]:
        """Add one row (``None``: an invalid snapshot, only advances time); ``reset``: per-symbol
        state restarted before this row (its block's ``d_*`` becomes NaN)."""
        out = self.advance(ts_ns)
        if x is None:
            return out
        b = ts_ns // self._iv
        if (self._closed is not None and b <= self._closed) or (self._block is not None and b < self._block):
            self.late += 1  # its block was emitted already: never re-opened
            return out
        self._broken = self._broken or bool(reset)
        if self._block is None:
            self._block = b
            self._sum[0] = x  # first row: the sum starts at exactly x, as reduceat does
        else:
            self._sum[0] += x
        self._n += 1
        self._last[0] = x
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return [self._close(self._block)] if self._block is not None else []
