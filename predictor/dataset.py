"""Supervised dataset construction: windows, chronological walk-forward folds, leakage checks.

Pure numpy (no I/O). Conventions:

* ``X`` is the (T, F) float64 feature matrix; row ``t`` uses data ``<= t`` (the features engine's
  contract). ``ts`` (T,) int64 ns, strictly increasing.
* A *sample* is identified by its end index ``t``: input window ``X[t-seq_len+1 .. t]``, target
  ``y[t]`` (which uses bars ``t+1 .. t+h``). A sample exists when the whole window is finite and
  the label is known.
* Folds split sample end indices chronologically. Because ``y[t]`` is only known at ``t+h``, a
  training sample ``t`` must satisfy ``t + h < test_start`` (purge/embargo gap ``>= h``), and the
  same gap separates the early-stopping validation tail from the fitted part of train.
  :func:`check_folds` verifies this and :func:`walk_forward_folds` builds folds that satisfy it.
* Clock: rows sit on a fixed clock (sampled books, blocks, candles; :mod:`predictor.clock`).
  Rows can be missing (feed gaps, resyncs), so a window of ``seq_len`` rows or a label over ``h``
  rows only means ``seq_len`` / ``h`` clock steps when the rows are contiguous:
  :func:`contiguous_mask` keeps the samples whose window and label span exactly that.
* :func:`check_feature_leakage` looks for label information inside the features: a column that
  (nearly) equals / perfectly correlates with a forward return over 1..h bars, or with the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from predictor.labels import UNLABELLED, forward_return

__all__ = [
    "DatasetError",
    "LeakageError",
    "Fold",
    "Scaler",
    "validate_inputs",
    "sample_mask",
    "contiguous_mask",
    "make_windows",
    "walk_forward_folds",
    "split_validation_tail",
    "check_folds",
    "check_feature_leakage",
]


class DatasetError(ValueError):
    """Bad training input (shapes, dtypes, ordering, too little data)."""


class LeakageError(DatasetError):
    """Label information can reach the features or the training side of a fold."""


# --------------------------------------------------------------------------- input checks


def validate_inputs(
    X: np.ndarray, ts: np.ndarray, names: Sequence[str], n_prices: int
) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    ts = np.asarray(ts)
    if X.ndim != 2:
        raise DatasetError(f"X must be 2-D (T, F), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise DatasetError(f"X must be floating point, got {X.dtype}")
    if ts.shape != (X.shape[0],):
        raise DatasetError(f"ts shape {ts.shape} does not match X rows {X.shape[0]}")
    if not np.issubdtype(ts.dtype, np.integer):
        raise DatasetError(f"ts must be int64 ns, got {ts.dtype}")
    if len(names) != X.shape[1]:
        raise DatasetError(f"{len(names)} feature names for {X.shape[1]} columns")
    if len(set(names)) != len(names):
        raise DatasetError("duplicate feature names")
    if n_prices != X.shape[0]:
        raise DatasetError(f"price series length {n_prices} != X rows {X.shape[0]}")
    if len(ts) > 1 and not np.all(np.diff(ts) > 0):
        raise DatasetError("ts must be strictly increasing (sort and de-duplicate first)")
    return X.astype(np.float64, copy=False), ts.astype(np.int64, copy=False)


def sample_mask(X: np.ndarray, y: np.ndarray, seq_len: int) -> np.ndarray:
    """Bool (T,): True where a sample ending at t exists (full finite window, known label)."""
    T = X.shape[0]
    finite = np.isfinite(X).all(axis=1)
    ok = np.zeros(T, dtype=bool)
    if T >= seq_len:
        win_ok = np.lib.stride_tricks.sliding_window_view(finite, seq_len).all(axis=1)
        ok[seq_len - 1 :] = win_ok
    return ok & (y != UNLABELLED)


def contiguous_mask(ts: np.ndarray, row_ns: int, seq_len: int, horizon: int) -> np.ndarray:
    """Bool (T,): True at t when rows ``t-seq_len+1 .. t+horizon`` are consecutive ticks of the
    ``row_ns`` clock (the window spans exactly ``(seq_len-1)`` steps, the label ``horizon``
    steps). Raises DatasetError when rows are not on the clock at all."""
    ts = np.asarray(ts, dtype=np.int64)
    T = ts.size
    d = np.diff(ts)
    if T > 1 and (d % row_ns).any():
        bad = int(np.flatnonzero(d % row_ns)[0])
        raise DatasetError(
            f"ts is not on the {row_ns / 1e9:g} s row clock: rows {bad} and {bad + 1} are {d[bad] / 1e9:g} s apart"
        )
    step = np.concatenate(([False], d == row_ns))  # step[i]: row i directly follows row i-1
    run = np.zeros(T, dtype=np.int64)  # consecutive steps ending at i
    if T:
        c = np.cumsum(~step)  # segment id
        start = np.flatnonzero(~step)
        run = np.arange(T) - start[c - 1]
    ok = np.zeros(T, dtype=bool)
    # window back: run[t] >= seq_len - 1; label forward: run[t + h] - run[t] == h
    if T > horizon:
        fwd = np.zeros(T, dtype=bool)
        fwd[: T - horizon] = run[horizon:] - run[: T - horizon] == horizon
        ok = (run >= seq_len - 1) & fwd
    return ok


def make_windows(Xs: np.ndarray, idx: np.ndarray, seq_len: int, dtype=np.float32) -> np.ndarray:
    """(len(idx), seq_len, F) windows ending at each index in ``idx`` (copy)."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) and (idx.min() < seq_len - 1 or idx.max() >= Xs.shape[0]):
        raise DatasetError("window index out of range")
    view = np.lib.stride_tricks.sliding_window_view(Xs, seq_len, axis=0)  # (T-seq+1, F, seq)
    return np.ascontiguousarray(view[idx - (seq_len - 1)].transpose(0, 2, 1), dtype=dtype)


# --------------------------------------------------------------------------- scaler


@dataclass
class Scaler:
    """Standardisation fitted on training rows only (sklearn's StandardScaler does the fit; we keep
    the two vectors so the hot path is a numpy subtract/divide and the artifact stays JSON)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> "Scaler":
        from depthpilot.extras import require

        StandardScaler = require("sklearn.preprocessing", "train", "fitting a scaler (training)").StandardScaler

        rows = X[np.isfinite(X).all(axis=1)]
        if len(rows) < 2:
            raise DatasetError("fewer than 2 finite rows to fit the scaler on")
        sk = StandardScaler().fit(rows)
        return cls(mean=np.asarray(sk.mean_, dtype=np.float64), scale=np.asarray(sk.scale_, dtype=np.float64))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(mean=np.asarray(d["mean"], dtype=np.float64), scale=np.asarray(d["scale"], dtype=np.float64))


# --------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    """Half-open index ranges over sample end indices: train [train_start, train_end),
    test [test_start, test_end). ``test_start - train_end >= gap`` with gap >= horizon."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def train_idx(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask[self.train_start : self.train_end]) + self.train_start

    def test_idx(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask[self.test_start : self.test_end]) + self.test_start


def walk_forward_folds(
    n: int,
    n_folds: int,
    test_size: int,
    horizon: int,
    *,
    embargo: int = 0,
    mode: Literal["rolling", "expanding"] = "rolling",
    train_size: int | None = None,
    min_train: int = 1,
) -> list[Fold]:
    """Chronological walk-forward folds over ``n`` rows; the last fold's test ends at ``n``.

    Test blocks are consecutive and non-overlapping, ordered in time. ``gap = max(horizon,
    embargo)`` rows are dropped between train end and test start. ``rolling`` keeps a fixed
    ``train_size`` window right before the gap; ``expanding`` trains on everything before it.
    """
    if n_folds < 1 or test_size < 1:
        raise DatasetError("n_folds and test_size must be >= 1")
    gap = max(int(horizon), int(embargo))
    first_test = n - n_folds * test_size
    folds = []
    for k in range(n_folds):
        ts0 = first_test + k * test_size
        te = ts0 + test_size
        tr_end = ts0 - gap
        if mode == "rolling":
            if train_size is None:
                raise DatasetError("rolling mode needs train_size")
            tr_start = max(0, tr_end - train_size)
        elif mode == "expanding":
            tr_start = 0
        else:
            raise DatasetError(f"unknown fold mode {mode!r}")
        if tr_end - tr_start < min_train:
            raise DatasetError(
                f"fold {k}: only {max(tr_end - tr_start, 0)} training rows (< {min_train}); "
                f"reduce n_folds/test_size or provide more data (n={n})"
            )
        folds.append(Fold(k, tr_start, tr_end, ts0, te))
    check_folds(folds, horizon, n)
    return folds


def split_validation_tail(train_idx: np.ndarray, frac: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Split chronologically sorted train sample indices into (fit, val): val is the last ``frac``;
    fit samples whose label window reaches into val (t + h >= first val index) are purged."""
    if not 0 < frac < 1:
        raise DatasetError(f"validation fraction must be in (0, 1), got {frac}")
    n_val = max(1, int(round(len(train_idx) * frac)))
    if len(train_idx) - n_val < 2:
        raise DatasetError(f"too few training samples ({len(train_idx)}) for a validation tail")
    val = train_idx[-n_val:]
    fit = train_idx[:-n_val]
    fit = fit[fit + horizon < val[0]]
    if len(fit) < 2:
        raise DatasetError("too few training samples left after purging before the validation tail")
    return fit, val


def check_folds(folds: Sequence[Fold], horizon: int, n: int | None = None) -> None:
    """Raise LeakageError if any fold lets a training label see into its test block
    (train_end - 1 + horizon >= test_start) or if train/test ranges are malformed/overlapping."""
    for f in folds:
        if not (0 <= f.train_start < f.train_end and f.test_start < f.test_end):
            raise LeakageError(f"fold {f.index}: malformed ranges {f}")
        if n is not None and f.test_end > n:
            raise LeakageError(f"fold {f.index}: test end {f.test_end} beyond data ({n})")
        gap = f.test_start - f.train_end
        if gap < horizon:
            raise LeakageError(
                f"fold {f.index}: gap between train end ({f.train_end}) and test start ({f.test_start}) "
                f"is {gap} < horizon {horizon}: the last training labels use bars inside the test block"
            )
    for a, b in zip(folds, folds[1:]):
        if b.test_start < a.test_end:
            raise LeakageError(f"folds {a.index} and {b.index}: test blocks overlap")


# --------------------------------------------------------------------------- feature leakage


def _abs_corr_columns(X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """|Pearson corr| of every column of X with target over rows where both are finite."""
    out = np.zeros(X.shape[1])
    tmask = np.isfinite(target)
    for j in range(X.shape[1]):
        m = tmask & np.isfinite(X[:, j])
        if m.sum() < 10:
            continue
        a = X[m, j] - X[m, j].mean()
        b = target[m] - target[m].mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 0:
            out[j] = abs((a * b).sum() / den)
    return out


def check_feature_leakage(
    X: np.ndarray,
    close: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    horizon: int,
    *,
    max_abs_corr: float = 0.9,
) -> dict[str, float]:
    """Raise LeakageError if a feature column carries label information.

    For every column: |corr| with the forward returns ``close[t+k]/close[t]-1`` for k = 1..h
    (also in log form) and with the label ``y`` itself. Honest features (built from data <= t)
    have |corr| near 0 with future returns on market data; a shifted/leaked column sits near 1.
    Returns the worst |corr| per feature (for the report).
    """
    close = np.asarray(close, dtype=np.float64)
    targets: list[tuple[str, np.ndarray]] = []
    for k in range(1, horizon + 1):
        fr = forward_return(close, k)
        targets.append((f"fwd_return_{k}", fr))
    yl = np.where(y == UNLABELLED, np.nan, y.astype(np.float64))
    targets.append(("label", yl))
    worst = np.zeros(X.shape[1])
    worst_what = [""] * X.shape[1]
    for what, tgt in targets:
        c = _abs_corr_columns(X, tgt)
        better = c > worst
        worst = np.where(better, c, worst)
        for j in np.flatnonzero(better):
            worst_what[j] = what
    bad = [(names[int(j)], worst_what[j], worst[j]) for j in np.flatnonzero(worst >= max_abs_corr)]
    if bad:
        desc = ", ".join(f"{n!r} ~ {w} (|corr|={c:.3f})" for n, w, c in bad)
        raise LeakageError(
            f"feature(s) carry future information: {desc}; features at t must use data <= t "
            f"(labels use t+1..t+{horizon})"
        )
    return {names[j]: float(worst[j]) for j in range(X.shape[1])}
