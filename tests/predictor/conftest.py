"""Fixtures for predictor tests: real Binance BTCUSDT 1 m klines and a few simple causal features
computed here (returns, ranges, volume changes), independent of the features engine."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

KLINES = Path("binance-spot-btcusdt-klines-1m-2024-12") / "BTCUSDT_1m.csv.gz"


@dataclass
class KlineData:
    X: np.ndarray
    ts: np.ndarray
    names: list[str]
    spec_hash: str
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray

    def prices(self, sl=slice(None)):
        from predictor.labels import Prices

        return Prices(close=self.close[sl], high=self.high[sl], low=self.low[sl])

    def tail(self, n: int) -> "KlineData":
        s = slice(len(self.ts) - n, None)
        return KlineData(self.X[s], self.ts[s], self.names, self.spec_hash, self.close[s], self.high[s], self.low[s])


def _lag_diff(a: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(a, np.nan)
    out[k:] = a[k:] - a[:-k]
    return out


@pytest.fixture(scope="session")
def klines(data_dir) -> KlineData:
    import pandas as pd

    p = data_dir / KLINES
    if not p.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"klines recording not found at {p} (CI must have its data)")
        pytest.skip(f"klines recording not found at {p}")
    df = pd.read_csv(p)
    ts = (
        pd.to_datetime(df["close_datetime"], utc=True)
        .dt.tz_convert(None)
        .to_numpy()
        .astype("datetime64[ns]")
        .astype(np.int64)
    )
    c, h, lo = (df[k].to_numpy(np.float64) for k in ("close", "high", "low"))
    v = df["volume"].to_numpy(np.float64)
    lc = np.log(c)
    cols = {
        "ret_1": _lag_diff(lc, 1),
        "ret_3": _lag_diff(lc, 3),
        "ret_10": _lag_diff(lc, 10),
        "hl_range": (h - lo) / c,
        "close_minus_low": (c - lo) / c,
        "dlog_vol": _lag_diff(np.log1p(v), 1),
    }
    names = list(cols)
    X = np.column_stack([cols[k] for k in names])
    spec_hash = hashlib.sha256(("test-features:" + ",".join(names)).encode()).hexdigest()[:16]
    return KlineData(X, ts, names, spec_hash, c, h, lo)


def _small_config(**kw):
    from predictor.labels import LabelSpec
    from predictor.train import TrainConfig

    base = dict(
        label=LabelSpec("updown", horizon=5, threshold=0.0005),
        seq_len=12,
        hidden=12,
        layers=1,
        dropout=0.0,
        lr=5e-3,
        batch_size=256,
        max_epochs=3,
        patience=2,
        n_folds=3,
        train_stride=2,
        seed=7,
        num_threads=2,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def small_config():
    """Factory for a small, quick TrainConfig (keyword overrides)."""
    return _small_config


@pytest.fixture(scope="session")
def trained(klines, tmp_path_factory):
    """One small walk-forward training on the last 9,000 real 1 m bars (shared, ~5 s)."""
    from predictor.train import train

    d = klines.tail(9000)
    events = []
    out = tmp_path_factory.mktemp("artifact") / "m"
    path = train(_small_config(), d.X, d.ts, d.prices(), d.names, d.spec_hash, out, progress=events.append)
    return {"path": Path(path), "data": d, "events": events, "config": _small_config()}
