"""Robust z-score anomaly scores and threshold events (pure logic).

``robust_zscore(x, window, min_periods)`` scores each value against the *previous* ``window``
values (the current value is excluded, so a spike does not mask itself):

    z_t = (x_t - median(prev)) / (1.4826 * MAD(prev)),   MAD = median(|prev - median(prev)|)

NaN when fewer than ``min_periods`` finite previous values exist or MAD == 0. ``|z| >=
threshold`` raises an :class:`AnomalyEvent`; the wiring turns it into a ``RiskEvent``
(``kind`` = event.kind, ``data`` = event.as_dict()).

Used for the candle volume spike (``vol_z`` column, on log1p(volume)) and for book-distribution
anomalies over aggregated block features (e.g. ``last_vol_ratio_20``, ``mean_imb_dw``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np

from features.spec import FeatureSpec, SpecError

__all__ = [
    "AnomalyEvent",
    "robust_zscore",
    "detect_anomalies",
    "StreamingAnomalyDetector",
    "MAD_SCALE",
]

MAD_SCALE = 1.4826  # makes MAD a consistent estimator of sigma for normal data
_CHUNK = 4096


@dataclass(frozen=True)
class AnomalyEvent:
    kind: str  # "volume_spike" | "book_distribution" | caller-chosen
    ts: int  # ns, time of the value that triggered
    feature: str
    value: float
    score: float  # robust z
    threshold: float
    spec_hash: str

    @property
    def severity(self) -> Literal["warning", "critical"]:
        return "critical" if abs(self.score) >= 2.0 * self.threshold else "warning"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = self.severity
        return d


def robust_zscore(x: np.ndarray, window: int, min_periods: int, start: int = 0) -> np.ndarray:
    """Robust z of ``x[t]`` against ``x[t-window : t]`` for t in ``start..len(x)-1``.

    Returns an array of length ``len(x) - start``. NaN inputs are ignored inside windows
    (they do not count towards ``min_periods``).
    """
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    out = np.full(T - start, np.nan)
    if T - start <= 0:
        return out
    # padded so that row t has exactly `window` previous slots (NaN before the data start)
    pad = np.concatenate((np.full(window, np.nan), x))
    win = np.lib.stride_tricks.sliding_window_view(pad, window)  # win[t] = prev values of x[t]
    for c0 in range(start, T, _CHUNK):
        c1 = min(T, c0 + _CHUNK)
        w = win[c0:c1]
        cnt = np.isfinite(w).sum(axis=1)
        ok = cnt >= min_periods
        if not ok.any():
            continue
        w = w[ok]
        if np.isnan(w).any():
            med = np.nanmedian(w, axis=1)
            mad = np.nanmedian(np.abs(w - med[:, None]), axis=1)
        else:
            med = np.median(w, axis=1)
            mad = np.median(np.abs(w - med[:, None]), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x[c0:c1][ok] - med) / (MAD_SCALE * mad)
        z[mad == 0] = np.nan
        seg = out[c0 - start : c1 - start]
        seg[ok] = z
    return out


def _events(
    kind: str, ts: np.ndarray, values: np.ndarray, z: np.ndarray, feature: str, thr: float, spec_hash: str
) -> list[AnomalyEvent]:
    hit = np.flatnonzero(np.abs(np.nan_to_num(z, nan=0.0)) >= thr)
    return [AnomalyEvent(kind, int(ts[i]), feature, float(values[i]), float(z[i]), float(thr), spec_hash) for i in hit]


def detect_anomalies(
    spec: FeatureSpec, ts: np.ndarray, values: np.ndarray, names: Sequence[str], kind: str = "book_distribution"
) -> list[AnomalyEvent]:
    """Batch: events for every column of ``values`` (T, k) named ``names``, ordered by (ts, column)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[1] != len(names) or values.shape[0] != len(ts):
        raise SpecError(f"values {values.shape} do not match ts ({len(ts)}) and names ({len(names)})")
    ev: list[AnomalyEvent] = []
    for j, name in enumerate(names):
        z = robust_zscore(values[:, j], spec.anomaly_window, spec.anomaly_min_periods)
        ev.extend(_events(kind, ts, values[:, j], z, name, spec.anomaly_threshold, spec.hash))
    ev.sort(key=lambda e: (e.ts, list(names).index(e.feature)))
    return ev


class StreamingAnomalyDetector:
    """Streaming twin of :func:`detect_anomalies`: keeps the last ``anomaly_window`` rows."""

    def __init__(self, spec: FeatureSpec, names: Sequence[str], kind: str = "book_distribution") -> None:
        self.spec = spec
        self.names = list(names)
        self.kind = kind
        self._buf: deque[np.ndarray] = deque(maxlen=spec.anomaly_window + 1)
        self._hash = spec.hash

    def update(self, ts: int, row: np.ndarray) -> tuple[np.ndarray, list[AnomalyEvent]]:
        """Add one row (k,); returns (z-scores (k,), events raised by this row)."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.names):
            raise SpecError(f"row has {row.shape[0]} values, detector expects {len(self.names)}")
        self._buf.append(row)
        hist = np.stack(self._buf)  # (<= window + 1, k), current row last
        s = self.spec
        z = np.array(
            [
                robust_zscore(hist[:, j], s.anomaly_window, s.anomaly_min_periods, start=hist.shape[0] - 1)[0]
                for j in range(hist.shape[1])
            ]
        )
        ev = []
        for j, name in enumerate(self.names):
            ev.extend(
                _events(self.kind, np.array([ts]), row[j : j + 1], z[j : j + 1], name, s.anomaly_threshold, self._hash)
            )
        return z, ev
