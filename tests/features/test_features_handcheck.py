"""Hand-checked feature values on real books: expected numbers come from explicit Python loops
over the real levels (no call into the code under test for the expectation)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from features.aggregate import aggregate_blocks
from features.anomaly import robust_zscore
from features.candles import ohlcv_from_trades
from features.engine import StreamingFeatures, batch_features
from features.spec import FeatureSpec, feature_names

SPEC = FeatureSpec(depths=(1, 5, 10, 20, 25, 30), dwi_levels=10, interval_s=1.0)
ROWS = [0, 1, 500, 1000, 3000, 6492]


def _expected_book(bids, asks, depths, K):
    """Loop-computed per-snapshot features (ofi excluded) for one real book."""
    bl = [(float(p), float(q)) for p, q in bids if p == p]
    al = [(float(p), float(q)) for p, q in asks if p == p]
    exp = {}
    for d in depths:
        nb, na = min(d, len(bl)), min(d, len(al))
        bv = 0.0
        for i in range(nb):
            bv += bl[i][1]
        av = 0.0
        for i in range(na):
            av += al[i][1]
        exp[f"bid_vol_{d}"] = bv
        exp[f"ask_vol_{d}"] = av
        exp[f"vol_ratio_{d}"] = bv / av
        exp[f"bid_dist_pct_{d}"] = (bl[0][0] - bl[nb - 1][0]) / bl[0][0] * 100
        exp[f"ask_dist_pct_{d}"] = (al[na - 1][0] - al[0][0]) / al[0][0] * 100
        exp[f"depth_ok_{d}"] = 1.0 if (len(bl) >= d and len(al) >= d) else 0.0
    (bb, qb), (ba, qa) = bl[0], al[0]
    mid = (bb + ba) / 2
    exp["mid"] = mid
    exp["spread"] = ba - bb
    exp["spread_bps"] = (ba - bb) / mid * 10000
    micro = (bb * qa + ba * qb) / (qb + qa)
    exp["microprice"] = micro
    exp["micro_dev_bps"] = (micro - mid) / mid * 10000
    exp["imb_top"] = (qb - qa) / (qb + qa)
    wb = sum(bl[i][1] / (i + 1) for i in range(min(K, len(bl))))
    wa = sum(al[i][1] / (i + 1) for i in range(min(K, len(al))))
    exp["imb_dw"] = (wb - wa) / (wb + wa)
    exp["n_bid_levels"] = float(len(bl))
    exp["n_ask_levels"] = float(len(al))
    return exp


def _ofi_loop(prev, cur):
    (pbb, pqb, pba, pqa), (bb, qb, ba, qa) = prev, cur
    e = 0.0
    if bb >= pbb:
        e += qb
    if bb <= pbb:
        e -= pqb
    if ba <= pba:
        e -= qa
    if ba >= pba:
        e += pqa
    return e


def _check_row(x, exp, names):
    for k, v in exp.items():
        got = x[names.index(k)]
        assert got == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_snapshot_features_match_loops(spot25):
    ts, bids, asks = spot25
    names = feature_names(SPEC)
    X = batch_features(SPEC, ts, (bids, asks))
    for i in ROWS:
        exp = _expected_book(bids[i], asks[i], SPEC.depths, SPEC.dwi_levels)
        _check_row(X[i], exp, names)
        # 30 > 25 levels: computed over the 25 available, flagged unavailable
        assert X[i, names.index("depth_ok_30")] == 0.0 and X[i, names.index("depth_ok_25")] == 1.0
        assert X[i, names.index("bid_vol_30")] == X[i, names.index("bid_vol_25")]


def test_ofi_matches_loop_on_every_real_step(spot25):
    ts, bids, asks = spot25
    X = batch_features(SPEC, ts, (bids, asks))
    ofi = X[:, feature_names(SPEC).index("ofi")]
    assert ofi[0] == 0.0  # no previous snapshot
    branches = set()
    for i in range(1, len(ts)):
        prev = (bids[i - 1, 0, 0], bids[i - 1, 0, 1], asks[i - 1, 0, 0], asks[i - 1, 0, 1])
        cur = (bids[i, 0, 0], bids[i, 0, 1], asks[i, 0, 0], asks[i, 0, 1])
        assert ofi[i] == pytest.approx(_ofi_loop(prev, cur), rel=1e-12, abs=1e-12)
        branches.add((np.sign(cur[0] - prev[0]), np.sign(cur[2] - prev[2])))
    assert len(branches) >= 5  # the real data exercises up/down/unchanged moves on both sides


def test_padded_short_book_uses_available_levels(spot25):
    """Real book truncated to 7 bid / 3 ask levels (NaN padding), batch and streaming."""
    ts, bids, asks = spot25
    b = bids[1000].copy()
    a = asks[1000].copy()
    b[7:] = np.nan
    a[3:] = np.nan
    exp = _expected_book(b, a, SPEC.depths, SPEC.dwi_levels)
    names = feature_names(SPEC)
    X = batch_features(SPEC, ts[1000:1001], (b[None], a[None]))
    _check_row(X[0], exp, names)
    assert X[0, names.index("depth_ok_5")] == 0.0 and X[0, names.index("depth_ok_1")] == 1.0
    s = StreamingFeatures(SPEC).update(int(ts[1000]), b[:7], a[:3])
    _check_row(s, exp, names)


def test_block_aggregation_matches_loops(spot25):
    ts, bids, asks = spot25
    n = 400  # ~40 s of 100 ms books -> 1 s blocks
    X = batch_features(SPEC, ts[:n], (bids[:n], asks[:n]))
    bts, A = aggregate_blocks(SPEC, ts[:n], X)
    names = feature_names(SPEC)
    iv = 1_000_000_000
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(int(ts[i]) // iv, []).append(i)
    keys = sorted(groups)
    assert list(bts) == [(k + 1) * iv - 1 for k in keys]
    from features.spec import aggregate_names

    an = aggregate_names(SPEC)
    j_mid = names.index("mid")
    j_bv = names.index("bid_vol_10")
    j_vr = names.index("vol_ratio_5")
    for r, key in enumerate(keys):
        idx = groups[key]
        assert A[r, an.index("n_snapshots")] == len(idx)
        assert A[r, an.index("mean_mid")] == pytest.approx(sum(X[i, j_mid] for i in idx) / len(idx), rel=1e-12)
        assert A[r, an.index("last_bid_vol_10")] == X[idx[-1], j_bv]
        if r == 0:
            assert math.isnan(A[r, an.index("d_bid_vol_10")])
        else:
            prev_last = groups[keys[r - 1]][-1]
            assert A[r, an.index("d_bid_vol_10")] == pytest.approx(X[idx[-1], j_bv] - X[prev_last, j_bv], abs=1e-12)
            assert A[r, an.index("d_vol_ratio_5")] == pytest.approx(X[idx[-1], j_vr] - X[prev_last, j_vr], abs=1e-12)


def test_candles_from_real_trades_match_loops(spot_trades):
    t = spot_trades
    iv = 60_000_000_000
    c = ohlcv_from_trades(t["ts"], t["price"], t["size"], iv)
    buckets: dict[int, list[int]] = {}
    for i, x in enumerate(t["ts"]):
        buckets.setdefault(int(x) // iv, []).append(i)
    keys = sorted(buckets)
    assert len(c["ts"]) == keys[-1] - keys[0] + 1
    for r, key in enumerate(range(keys[0], keys[-1] + 1)):
        idx = buckets[key]
        ps = [float(t["price"][i]) for i in idx]
        assert c["ts"][r] == (key + 1) * iv - 1
        assert (c["open"][r], c["high"][r], c["low"][r], c["close"][r]) == (ps[0], max(ps), min(ps), ps[-1])
        assert c["volume"][r] == pytest.approx(sum(float(t["size"][i]) for i in idx), rel=1e-12)


def test_candle_indicators_match_loops_at_one_bar(klines):
    from features.candles import candle_features

    spec = FeatureSpec(
        sma_windows=(5,),
        ewma_spans=(12,),
        cci_window=20,
        evm_window=14,
        bb_window=20,
        roc_window=10,
        force_span=13,
        vol_bench_window=60,
        vol_bench_min_periods=60,
        anomaly_window=60,
        anomaly_min_periods=60,
    )
    n = 400
    k = {f: klines[f][:n] for f in ("open", "high", "low", "close", "volume")}
    X, names = candle_features(spec, k)
    o, h, l, c, v = ([float(x) for x in k[f]] for f in ("open", "high", "low", "close", "volume"))
    t = 300
    col = lambda nm: X[t, names.index(nm)]  # noqa: E731
    assert col("sma_5") == pytest.approx(sum(c[t - 4 : t + 1]) / 5, rel=1e-12)
    tp = [(h[i] + l[i] + c[i]) / 3 for i in range(t - 19, t + 1)]
    m = sum(tp) / 20
    mad = sum(abs(x - m) for x in tp) / 20
    assert col("cci_20") == pytest.approx((tp[-1] - m) / (0.015 * mad), rel=1e-9)
    emv = [((h[i] + l[i]) / 2 - (h[i - 1] + l[i - 1]) / 2) * (h[i] - l[i]) / v[i] for i in range(t - 13, t + 1)]
    assert col("evm_14") == pytest.approx(sum(emv) / 14, rel=1e-9)
    assert col("roc_10") == pytest.approx((c[t] / c[t - 10] - 1) * 100, rel=1e-9)
    a = 2 / 13
    y = c[0]
    for i in range(1, t + 1):
        y = a * c[i] + (1 - a) * y
    assert col("ewma_12") == pytest.approx(y, rel=1e-12)
    a = 2 / 14
    f = (c[1] - c[0]) * v[1]
    for i in range(2, t + 1):
        f = a * ((c[i] - c[i - 1]) * v[i]) + (1 - a) * f
    assert col("force_13") == pytest.approx(f, rel=1e-9)
    w = c[t - 19 : t + 1]
    mu = sum(w) / 20
    sd = math.sqrt(sum((x - mu) ** 2 for x in w) / 20)
    assert col("bb_upper_20") == pytest.approx(mu + 2 * sd, rel=1e-12)
    assert col("bb_pctb_20") == pytest.approx((c[t] - (mu - 2 * sd)) / (4 * sd), rel=1e-9)
    assert col("vol_rel_60") == pytest.approx(v[t] / (sum(v[t - 60 : t]) / 60), rel=1e-12)
    lv = [math.log1p(x) for x in v[t - 60 : t]]
    med = statistics.median(lv)
    md = statistics.median([abs(x - med) for x in lv])
    assert col("vol_z_60") == pytest.approx((math.log1p(v[t]) - med) / (1.4826 * md), rel=1e-12)
    # warm-up: undefined until enough bars
    assert math.isnan(X[18, names.index("cci_20")]) and not math.isnan(X[19, names.index("cci_20")])


def test_robust_zscore_matches_loop_on_real_volume(klines):
    v = np.log1p(klines["volume"][:500])
    z = robust_zscore(v, 50, 20)
    for t in (0, 19, 20, 21, 100, 499):
        prev = [float(x) for x in v[max(0, t - 50) : t]]
        if len(prev) < 20:
            assert math.isnan(z[t])
            continue
        med = statistics.median(prev)
        mad = statistics.median([abs(x - med) for x in prev])
        assert z[t] == pytest.approx((v[t] - med) / (1.4826 * mad), rel=1e-12)
