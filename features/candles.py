"""OHLCV candles (from trades or mid prices) and candle indicators, batch and streaming.

Every indicator at bar t uses bars <= t only. Warm-up rows are NaN (``min_periods`` = window
unless stated). Formulas (``c`` close, ``h`` high, ``l`` low, ``v`` volume, windows from
FeatureSpec):

  ret_log        log(c_t / c_{t-1})
  sma_w          mean of the last w closes;  close_sma_w_pct = (c / sma_w - 1) * 100
  ewma_s         EWMA with alpha = 2/(s+1), y_0 = c_0, y_t = alpha c_t + (1-alpha) y_{t-1}
                 (pandas ``ewm(span=s, adjust=False)``); close_ewma_s_pct likewise
  cci_n          TP = (h+l+c)/3; (TP - SMA_n(TP)) / (0.015 * mean|TP_window - SMA_n(TP)|)
  evm_n          SMA_n of EMV_t = ((h+l)/2 - (h'+l')/2) * (h-l) * scale / v  (0 when v == 0),
                 i.e. midpoint move divided by the box ratio (v/scale)/(h-l)
  bb_*_n         mid = SMA_n(c), sd = population std (ddof=0) of the last n closes,
                 upper/lower = mid +- k sd, width = (upper-lower)/mid, pctb = (c-lower)/(upper-lower)
  force_s        EWMA_s (adjust=False) of (c_t - c_{t-1}) * v_t (starts at bar 1)
  roc_n          (c_t / c_{t-n} - 1) * 100
  vol_rel_N      v_t / mean(v_{t-N} .. v_{t-1})  (benchmark excludes the current bar,
                 min_periods = vol_bench_min_periods; N = 1440 is one day of 1 m bars)
  vol_z_W        robust z of log1p(v_t) vs the previous W bars (see features.anomaly)

Streaming (:class:`StreamingCandleFeatures`) keeps the last ``lookback(spec)`` bars plus the
EWMA states and calls the same functions with ``start`` = the new bar's index.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping

import numpy as np
from scipy.signal import lfilter

from features.anomaly import robust_zscore
from features.spec import FeatureSpec, candle_names

__all__ = [
    "CandleInputError",
    "OHLCV_FIELDS",
    "candle_features",
    "StreamingCandleFeatures",
    "ohlcv_from_trades",
    "ohlcv_from_mid",
    "CandleBuilder",
    "rolling_mean",
    "rolling_std",
    "ewma",
    "lookback",
]

OHLCV_FIELDS = ("open", "high", "low", "close", "volume")


class CandleInputError(ValueError):
    """OHLCV input is missing a field, has mismatched lengths or non-finite values."""


# --------------------------------------------------------------------------- primitives


def rolling_mean(x: np.ndarray, n: int, min_periods: int | None = None, start: int = 0) -> np.ndarray:
    """Mean of the finite values among x[t-n+1 .. t] for t >= start (NaN if fewer than
    ``min_periods`` (default n) finite values).

    Each window is summed on its own (sliding window over x with NaN -> 0 and zeros before
    the series start), so a row's value depends only on the n values in its window: batch
    and streaming (which passes only the last bars) get bit-identical results.
    """
    mp = n if min_periods is None else min_periods
    T = x.shape[0]
    fin = np.isfinite(x)
    x0 = np.where(fin, x, 0.0)
    first = start - (n - 1)  # index of the first element of the first window
    seg = x0[first:] if first >= 0 else np.concatenate((np.zeros(-first), x0))
    sums = np.lib.stride_tricks.sliding_window_view(seg, n).sum(axis=1)
    C = np.concatenate(([0], np.cumsum(fin)))
    t = np.arange(start, T)
    cnt = C[t + 1] - C[np.maximum(t + 1 - n, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = sums / cnt
    return np.where(cnt >= mp, m, np.nan)


def _windows(x: np.ndarray, n: int, start: int) -> tuple[np.ndarray, int]:
    """(m, n) sliding windows ending at rows max(start, n-1) .. T-1, and that first row."""
    first = max(start, n - 1)
    if first >= x.shape[0]:
        return np.empty((0, n)), first
    return np.lib.stride_tricks.sliding_window_view(x[first - n + 1 :], n), first


def rolling_std(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Population (ddof=0) std of x[t-n+1 .. t], two-pass per window; NaN for t < n-1."""
    out = np.full(x.shape[0] - start, np.nan)
    w, first = _windows(x, n, start)
    if w.shape[0]:
        m = w.mean(axis=1)
        out[first - start :] = np.sqrt(((w - m[:, None]) ** 2).mean(axis=1))
    return out


def _cci(tp: np.ndarray, n: int, start: int) -> np.ndarray:
    out = np.full(tp.shape[0] - start, np.nan)
    w, first = _windows(tp, n, start)
    if w.shape[0]:
        m = w.mean(axis=1)
        mad = np.abs(w - m[:, None]).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            v = (tp[first:] - m) / (0.015 * mad)
        out[first - start :] = np.where(mad > 0, v, np.nan)
    return out


def ewma(x: np.ndarray, alpha: float, y_prev: float = np.nan) -> np.ndarray:
    """y_t = alpha x_t + (1-alpha) y_{t-1}; seeded with the first finite x when ``y_prev`` is
    NaN (leading NaNs stay NaN). Same recursion as pandas ``ewm(adjust=False)``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape[0], np.nan)
    i0 = 0
    if not np.isfinite(y_prev):
        fin = np.flatnonzero(np.isfinite(x))
        if fin.size == 0:
            return out
        i0 = int(fin[0])
        out[i0] = y_prev = x[i0]
        i0 += 1
    if i0 < x.shape[0]:
        out[i0:], _ = lfilter([alpha], [1.0, -(1.0 - alpha)], x[i0:], zi=[(1.0 - alpha) * y_prev])
    return out


def lookback(spec: FeatureSpec) -> int:
    """Bars of history (including the current one) any indicator at t reads."""
    return 1 + max(
        max(spec.sma_windows),
        spec.cci_window,
        spec.evm_window + 1,
        spec.bb_window,
        spec.roc_window + 1,
        spec.vol_bench_window + 1,
        spec.anomaly_window + 1,
        2,
    )


def _as_ohlcv(ohlcv: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    missing = [f for f in OHLCV_FIELDS if f not in ohlcv]
    if missing:
        raise CandleInputError(f"ohlcv is missing fields {missing}")
    arrs = tuple(np.ascontiguousarray(ohlcv[f], dtype=np.float64) for f in OHLCV_FIELDS)
    n = arrs[0].shape
    if any(a.ndim != 1 or a.shape != n for a in arrs):
        raise CandleInputError(f"ohlcv fields must be 1-D arrays of one length; got {[a.shape for a in arrs]}")
    if not all(np.isfinite(a).all() for a in arrs):
        raise CandleInputError("ohlcv contains non-finite values")
    return arrs


# --------------------------------------------------------------------------- the kernel


def _indicators(
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    spec: FeatureSpec,
    start: int,
    state: dict[str, float] | None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Indicator rows ``start..T-1`` (and the EWMA states after the last row).

    ``state`` None = the arrays begin at the first bar ever (batch); otherwise it holds the
    EWMA values at row ``start - 1`` (streaming)."""
    T = c.shape[0]
    cols: list[np.ndarray] = []
    new_state: dict[str, float] = {}
    c_prev = np.concatenate(([np.nan], c[:-1]))[start:]
    cs = c[start:]
    with np.errstate(invalid="ignore", divide="ignore"):
        cols.append(np.log(cs / c_prev))
        smas = [rolling_mean(c, w, start=start) for w in spec.sma_windows]
        cols.extend(smas)
        cols.extend((cs / m - 1.0) * 100.0 for m in smas)
        emas = []
        for sp in spec.ewma_spans:
            y0 = np.nan if state is None else state[f"ewma_{sp}"]
            e = ewma(cs, 2.0 / (sp + 1.0), y0)
            new_state[f"ewma_{sp}"] = float(e[-1]) if e.size else y0
            emas.append(e)
        cols.extend(emas)
        cols.extend((cs / e - 1.0) * 100.0 for e in emas)
        cols.append(_cci((h + l + c) / 3.0, spec.cci_window, start))
        mp = 0.5 * (h + l)
        dm = mp - np.concatenate(([np.nan], mp[:-1]))
        emv = np.where(
            v > 0, dm * (h - l) * spec.evm_volume_scale / np.where(v > 0, v, 1.0), np.where(np.isnan(dm), np.nan, 0.0)
        )
        cols.append(rolling_mean(emv, spec.evm_window, start=start))
        w = spec.bb_window
        mid = rolling_mean(c, w, start=start)
        sd = rolling_std(c, w, start=start)
        up = mid + spec.bb_k * sd
        lo = mid - spec.bb_k * sd
        cols.extend((mid, up, lo, (up - lo) / mid, np.where(up > lo, (cs - lo) / (up - lo), np.nan)))
        fi = (cs - c_prev) * v[start:]
        y0 = np.nan if state is None else state["force"]
        f = ewma(fi, 2.0 / (spec.force_span + 1.0), y0)
        new_state["force"] = float(f[-1]) if f.size else y0
        cols.append(f)
        n = spec.roc_window
        c_lag = np.concatenate((np.full(n, np.nan), c[:-n]))[start:] if n < T else np.full(T - start, np.nan)
        cols.append((cs / c_lag - 1.0) * 100.0)
        v_prev = np.concatenate(([np.nan], v[:-1]))
        bench = rolling_mean(v_prev, spec.vol_bench_window, spec.vol_bench_min_periods, start=start)
        cols.append(v[start:] / bench)
    cols.append(robust_zscore(np.log1p(v), spec.anomaly_window, spec.anomaly_min_periods, start=start))
    return np.stack(cols, axis=1), new_state


def candle_features(spec: FeatureSpec, ohlcv: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Batch candle indicators: ``ohlcv`` maps open/high/low/close/volume to 1-D arrays of
    equal length (extra keys ignored). Returns (X (T, F), names)."""
    o, h, l, c, v = _as_ohlcv(ohlcv)
    if c.shape[0] == 0:
        return np.empty((0, len(candle_names(spec)))), candle_names(spec)
    X, _ = _indicators(o, h, l, c, v, spec, 0, None)
    return X, candle_names(spec)


class StreamingCandleFeatures:
    """Feed closed candles one at a time; ``update`` returns the indicator row for that bar,
    equal to the corresponding row of :func:`candle_features` on the whole series."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.names = candle_names(spec)
        self.spec_hash = spec.hash
        n = lookback(spec)
        self._bufs: list[deque[float]] = [deque(maxlen=n) for _ in OHLCV_FIELDS]
        self._state: dict[str, float] | None = None

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> np.ndarray:
        vals = (open, high, low, close, volume)
        if not all(np.isfinite(x) for x in vals):
            raise CandleInputError(f"non-finite candle {vals}")
        for b, x in zip(self._bufs, vals):
            b.append(float(x))
        o, h, l, c, v = (np.fromiter(b, dtype=np.float64, count=len(b)) for b in self._bufs)
        X, self._state = _indicators(o, h, l, c, v, self.spec, c.shape[0] - 1, self._state)
        return X[0]


# --------------------------------------------------------------------------- candles


def ohlcv_from_trades(
    ts: np.ndarray, price: np.ndarray, size: np.ndarray | None, interval_ns: int, fill_gaps: bool = True
) -> dict[str, np.ndarray]:
    """Bucket ticks (ts ns, sorted) into candles ``[k*interval, (k+1)*interval)``.

    Returns arrays ``ts`` (candle close time = bucket end - 1 ns, the last ns it covers),
    open, high, low, close, volume (sum of ``size``; 0 when ``size`` is None) and ``n`` (ticks).
    With ``fill_gaps`` empty buckets between ticks become flat candles at the previous close
    with volume 0 and n 0. Only buckets that contain or precede the last tick are emitted;
    the last candle may therefore be incomplete (it covers data up to the last tick only).
    """
    ts = np.asarray(ts, dtype=np.int64)
    p = np.asarray(price, dtype=np.float64)
    q = np.zeros_like(p) if size is None else np.asarray(size, dtype=np.float64)
    if not (ts.shape == p.shape == q.shape) or ts.ndim != 1:
        raise CandleInputError("ts, price, size must be 1-D arrays of equal length")
    if ts.size and (np.diff(ts) < 0).any():
        raise CandleInputError("ts must be non-decreasing")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise CandleInputError("price/size contain non-finite values")
    if ts.size == 0:
        return {k: np.empty(0) for k in ("ts", *OHLCV_FIELDS, "n")}
    b = ts // interval_ns
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    ends = np.concatenate((starts[1:], [ts.size])) - 1
    out = {
        "bucket": b[starts],
        "open": p[starts],
        "high": np.maximum.reduceat(p, starts),
        "low": np.minimum.reduceat(p, starts),
        "close": p[ends],
        "volume": np.add.reduceat(q, starts),
        "n": (ends - starts + 1).astype(np.float64),
    }
    if fill_gaps:
        allb = np.arange(out["bucket"][0], out["bucket"][-1] + 1)
        pos = np.searchsorted(out["bucket"], allb)
        has = out["bucket"][np.minimum(pos, len(starts) - 1)] == allb
        idx = np.cumsum(has) - 1  # row of the last non-empty bucket at or before each bucket
        close_ff = out["close"][idx]
        filled = {"bucket": allb}
        for k in ("open", "high", "low", "close"):
            arr = np.empty(allb.size)
            arr[has] = out[k]
            arr[~has] = close_ff[~has]
            filled[k] = arr
        for k in ("volume", "n"):
            arr = np.zeros(allb.size)
            arr[has] = out[k]
            filled[k] = arr
        out = filled
    out["ts"] = (out.pop("bucket") + 1) * interval_ns - 1
    return out


def ohlcv_from_mid(ts: np.ndarray, mid: np.ndarray, interval_ns: int, fill_gaps: bool = True) -> dict[str, np.ndarray]:
    """Candles from mid prices (volume 0: volume-based indicators are then 0 or NaN)."""
    return ohlcv_from_trades(ts, mid, None, interval_ns, fill_gaps)


class CandleBuilder:
    """Streaming twin of :func:`ohlcv_from_trades`: ``update`` returns the candles closed by
    this tick (a tick in a later bucket closes the current one, plus flat gap candles);
    ``flush`` closes the open candle."""

    def __init__(self, interval_ns: int, fill_gaps: bool = True) -> None:
        self.interval_ns = int(interval_ns)
        self.fill_gaps = fill_gaps
        self._b: int | None = None
        self._o = self._h = self._l = self._c = self._v = 0.0
        self._n = 0
        self._last_ts: int | None = None

    def _emit(self, b: int) -> dict[str, float]:
        """The candle of the open bucket ``b`` (``self._b``, passed in once checked non-None)."""
        return {
            "ts": (b + 1) * self.interval_ns - 1,
            "open": self._o,
            "high": self._h,
            "low": self._l,
            "close": self._c,
            "volume": self._v,
            "n": float(self._n),
        }

    def update(self, ts: int, price: float, size: float = 0.0) -> list[dict[str, float]]:
        if not (np.isfinite(price) and np.isfinite(size)):
            raise CandleInputError(f"non-finite tick price={price} size={size}")
        if self._last_ts is not None and ts < self._last_ts:
            raise CandleInputError(f"tick ts {ts} is before the previous tick {self._last_ts}")
        self._last_ts = ts
        b = ts // self.interval_ns
        closed: list[dict[str, float]] = []
        if self._b is not None and b != self._b:
            closed.append(self._emit(self._b))
            if self.fill_gaps:
                c = self._c
                for g in range(self._b + 1, b):
                    closed.append(
                        {
                            "ts": (g + 1) * self.interval_ns - 1,
                            "open": c,
                            "high": c,
                            "low": c,
                            "close": c,
                            "volume": 0.0,
                            "n": 0.0,
                        }
                    )
            self._b = None
        if self._b is None:
            self._b = b
            self._o = self._h = self._l = self._c = float(price)
            self._v = float(size)
            self._n = 1
        else:
            self._h = max(self._h, price)
            self._l = min(self._l, price)
            self._c = float(price)
            self._v += size
            self._n += 1
        return closed

    def flush(self) -> list[dict[str, float]]:
        if self._b is None:
            return []
        out = [self._emit(self._b)]
        self._b = None
        return out
