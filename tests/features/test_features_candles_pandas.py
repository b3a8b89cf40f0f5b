"""Candle indicators vs an independent pandas reference (rolling / ewm) on 29 days of real
Binance 1 m klines.

Tolerance: rel 1e-9 on every indicator column (plus atol 1e-9 on the percent-deviation
columns and %b, 1e-8 on CCI, which are differences of nearly equal numbers); NaN patterns
(warm-up) must match exactly.
The robust z-score reference (rolling apply of a median) is checked on the first 6,000 bars to
keep the test fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.candles import candle_features
from features.spec import FeatureSpec

SPEC = FeatureSpec()
RTOL = 1e-9
# CCI's numerator TP - SMA(TP) cancels; pandas' online rolling mean carries ~1e-11 absolute
# error on ~1e5 prices, so near CCI = 0 only an absolute tolerance is meaningful
# (same for %b when the close sits on the lower band)
ATOL = {"cci": 1e-8, "bb_pctb": 1e-9}


def _reference(k: dict, spec: FeatureSpec, zn: int) -> dict[str, pd.Series]:
    o, h, l, c, v = (pd.Series(k[f]) for f in ("open", "high", "low", "close", "volume"))
    ref: dict[str, pd.Series] = {"ret_log": np.log(c / c.shift(1))}
    for w in spec.sma_windows:
        ref[f"sma_{w}"] = c.rolling(w).mean()
        ref[f"close_sma_{w}_pct"] = (c / ref[f"sma_{w}"] - 1) * 100
    for s in spec.ewma_spans:
        ref[f"ewma_{s}"] = c.ewm(span=s, adjust=False).mean()
        ref[f"close_ewma_{s}_pct"] = (c / ref[f"ewma_{s}"] - 1) * 100
    n = spec.cci_window
    tp = (h + l + c) / 3
    mad = tp.rolling(n).apply(lambda x: np.abs(x - x.mean()).mean(), raw=True)
    ref[f"cci_{n}"] = (tp - tp.rolling(n).mean()) / (0.015 * mad)
    dm = (h + l) / 2 - (h.shift(1) + l.shift(1)) / 2
    br = (v / spec.evm_volume_scale) / (h - l)
    emv = (dm / br).where(h != l, 0.0).where(dm.notna())
    ref[f"evm_{spec.evm_window}"] = emv.rolling(spec.evm_window).mean()
    w = spec.bb_window
    mid = c.rolling(w).mean()
    # pandas' online rolling std loses ~1e-8 relative on 1e5-sized prices with small spread;
    # the reference uses an exact two-pass std per window instead
    sd = c.rolling(w).apply(lambda x: np.std(x), raw=True)
    up, lo = mid + spec.bb_k * sd, mid - spec.bb_k * sd
    ref.update(
        {
            f"bb_mid_{w}": mid,
            f"bb_upper_{w}": up,
            f"bb_lower_{w}": lo,
            f"bb_width_{w}": (up - lo) / mid,
            f"bb_pctb_{w}": (c - lo) / (up - lo),
        }
    )
    ref[f"force_{spec.force_span}"] = (c.diff() * v).ewm(span=spec.force_span, adjust=False).mean()
    ref[f"roc_{spec.roc_window}"] = c.pct_change(spec.roc_window, fill_method=None) * 100
    bench = v.shift(1).rolling(spec.vol_bench_window, min_periods=spec.vol_bench_min_periods).mean()
    ref[f"vol_rel_{spec.vol_bench_window}"] = v / bench
    lv = np.log1p(v.iloc[:zn])
    W, mp = spec.anomaly_window, spec.anomaly_min_periods
    med = lv.shift(1).rolling(W, min_periods=mp).median()
    madz = lv.shift(1).rolling(W, min_periods=mp).apply(lambda x: np.nanmedian(np.abs(x - np.nanmedian(x))), raw=True)
    ref[f"vol_z_{W}"] = (lv - med) / (1.4826 * madz)
    return ref


@pytest.fixture(scope="module")
def computed(klines):
    X, names = candle_features(SPEC, klines)
    ref = _reference(klines, SPEC, zn=6000)
    return X, names, ref


def test_every_column_has_a_reference(computed):
    X, names, ref = computed
    assert sorted(names) == sorted(ref)
    assert X.shape == (41761, len(names))


@pytest.mark.parametrize("name", [n for n in __import__("features.spec", fromlist=["candle_names"]).candle_names(SPEC)])
def test_indicator_matches_pandas(computed, name):
    X, names, ref = computed
    got = X[:, names.index(name)]
    exp = ref[name].to_numpy(dtype=np.float64)
    got = got[: exp.shape[0]]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exp), err_msg=f"{name}: warm-up / NaN pattern differs")
    atol = next((a for k, a in ATOL.items() if name.startswith(k)), 1e-9 if name.endswith("_pct") else 0.0)
    np.testing.assert_allclose(got, exp, rtol=RTOL, atol=atol, err_msg=name)
    assert np.isfinite(got).sum() > 0.9 * got.shape[0]
