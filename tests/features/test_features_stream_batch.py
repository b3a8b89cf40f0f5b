"""Streaming == batch on whole real recordings, no lookahead, validity rules, spec hash."""

from __future__ import annotations

import numpy as np
import pytest

from depthpilot.messages import BookSnapshot, decode, encode
from features.aggregate import StreamingAggregator, aggregate_blocks
from features.anomaly import StreamingAnomalyDetector, detect_anomalies
from features.candles import CandleBuilder, StreamingCandleFeatures, candle_features, ohlcv_from_trades
from features.engine import (
    StreamingFeatures,
    batch_features,
    check_feature_vector,
    make_feature_vector,
)
from features.orderbook import REASONS, validate_books, validate_one
from features.spec import FeatureSpec, SpecError, SpecMismatchError, check_spec_hash, feature_names


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Max relative error where both are finite (NaN patterns are compared separately)."""
    m = np.isfinite(a) & np.isfinite(b)
    if not m.any():
        return 0.0
    return float(np.max(np.abs(a[m] - b[m]) / np.maximum(np.abs(b[m]), 1e-300)))


SPEC25 = FeatureSpec(depths=(5, 10, 15, 20, 25), interval_s=5.0)
FULL = FeatureSpec()  # default depths up to 250


def _stream(spec, ts, bids, asks):
    sf = StreamingFeatures(spec)
    rows, reasons = [], []
    for t, b, a in zip(ts, bids, asks):
        x = sf.update(int(t), b, a)
        rows.append(np.full(len(sf.names), np.nan) if x is None else x)
        reasons.append(sf.reason)
    return np.array(rows), reasons


@pytest.mark.parametrize("which", ["spot25", "usdm25", "spot250"])
def test_streaming_equals_batch_whole_recording(which, request):
    ts, bids, asks = request.getfixturevalue(which)
    spec = FULL if which == "spot250" else SPEC25
    X = batch_features(spec, ts, (bids, asks))
    S, reasons = _stream(spec, ts, bids, asks)
    assert not np.isnan(X).any() and set(reasons) == {""}
    assert rel_err(S, X) <= 1e-9  # (currently bit-identical)
    if which == "spot250":
        names = feature_names(spec)
        assert X[:, names.index("depth_ok_250")].all()


def test_streaming_equals_batch_with_invalid_snapshots(usdm25):
    ts, bids, asks = (x[:3000].copy() for x in usdm25)
    bids[100, 3, 1] = np.nan  # NaN size
    asks[200, 0, 0] = bids[200, 0, 0] - 0.1  # crossed
    bids[300] = np.nan  # empty bid side
    asks[400, 5, 0] = asks[400, 4, 0]  # duplicate ask price
    bids[500, 2, 1] = 0.0  # non-positive size
    ts[600] = ts[599] - 1  # timestamp going backwards
    X, codes = batch_features(SPEC25, ts, (bids, asks), return_codes=True)
    S, reasons = _stream(SPEC25, ts, bids, asks)
    expected = {
        100: "non_finite",
        200: "crossed",
        300: "empty_side",
        400: "unsorted_levels",
        500: "non_positive",
        600: "ts_backwards",
    }
    for i, r in expected.items():
        assert REASONS[int(codes[i])] == r and reasons[i] == r
        assert np.isnan(X[i]).all()
    assert (codes != 0).sum() == len(expected)
    np.testing.assert_array_equal(np.isnan(S), np.isnan(X))
    assert rel_err(S, X) <= 1e-9
    # an invalid book resets OFI: the next valid book is not compared with the one before it
    j = feature_names(SPEC25).index("ofi")
    ref = batch_features(SPEC25, ts[[199, 201]], (bids[[199, 201]], asks[[199, 201]]))
    assert ref[1, j] != 0.0 and X[201, j] == 0.0
    # a late (ts going backwards) book is only dropped: OFI at 601 is against 599
    ref = batch_features(SPEC25, ts[[599, 601]], (bids[[599, 601]], asks[[599, 601]]))
    assert X[601, j] == ref[1, j]


def test_validate_one_agrees_with_batch_rules(spot25):
    ts, bids, asks = spot25
    rng = np.random.default_rng(7)
    cases = []
    for i in rng.choice(len(ts), 40, replace=False):
        b, a = bids[i].copy(), asks[i].copy()
        kind = i % 8
        if kind == 0:
            b[rng.integers(25), rng.integers(2)] = np.inf
        elif kind == 1:
            a[rng.integers(1, 24)] = np.nan  # hole inside the ask side
        elif kind == 2:
            b[10:] = np.nan  # padding: valid
        elif kind == 3:
            a[rng.integers(25), 1] = -1.0
        elif kind == 4:
            b[[3, 4]] = b[[4, 3]]  # unsorted
        elif kind == 5:
            b[0, 0] = a[0, 0]  # crossed (locked)
        elif kind == 6:
            a[:] = np.nan
        cases.append((b, a))
    B = np.stack([c[0] for c in cases])
    A = np.stack([c[1] for c in cases])
    codes = validate_books(B, A)
    assert [validate_one(b, a) for b, a in cases] == codes.tolist()
    assert len(set(codes.tolist())) >= 6


def test_aggregates_stream_equal_batch(spot25):
    ts, bids, asks = spot25
    X = batch_features(SPEC25, ts, (bids, asks))
    bts, A = aggregate_blocks(SPEC25, ts, X)
    agg = StreamingAggregator(SPEC25)
    got = []
    for t, x in zip(ts, X):
        got.extend(agg.update(int(t), x))
    got.extend(agg.flush())
    assert [g[0] for g in got] == bts.tolist()
    G = np.array([g[1] for g in got])
    np.testing.assert_array_equal(np.isnan(G), np.isnan(A))
    assert rel_err(G, A) <= 1e-9
    assert len(bts) > 100


def test_candles_and_indicators_stream_equal_batch(klines, spot_trades):
    spec = FeatureSpec()
    n = 2000  # > lookback(spec) = 1442: the streaming buffers roll over
    k = {f: klines[f][:n] for f in ("open", "high", "low", "close", "volume")}
    X, names = candle_features(spec, k)
    sc = StreamingCandleFeatures(spec)
    S = np.array([sc.update(*(k[f][i] for f in ("open", "high", "low", "close", "volume"))) for i in range(n)])
    np.testing.assert_array_equal(np.isnan(S), np.isnan(X))
    assert rel_err(S, X) <= 1e-9
    assert np.isfinite(X[-1]).all()
    # candle builder (streaming) == ohlcv_from_trades (batch) on real trades, 10 s bars
    t = spot_trades
    iv = 10_000_000_000
    batch = ohlcv_from_trades(t["ts"], t["price"], t["size"], iv)
    cb = CandleBuilder(iv)
    out = []
    for x, p, q in zip(t["ts"], t["price"], t["size"]):
        out.extend(cb.update(int(x), float(p), float(q)))
    out.extend(cb.flush())
    for key in ("ts", "open", "high", "low", "close", "n"):
        assert np.array_equal(np.array([c[key] for c in out]), batch[key]), key
    # volume: sequential += vs numpy's pairwise reduceat differ in the last bits only
    np.testing.assert_allclose(np.array([c["volume"] for c in out]), batch["volume"], rtol=1e-12)


def test_anomaly_stream_equals_batch_and_fires(spot25):
    spec = FeatureSpec(
        depths=(5, 10, 20), interval_s=1.0, anomaly_window=60, anomaly_min_periods=20, anomaly_threshold=4.0
    )
    ts, bids, asks = spot25
    X = batch_features(spec, ts, (bids, asks))
    bts, A = aggregate_blocks(spec, ts, X)
    from features.spec import aggregate_names

    an = aggregate_names(spec)
    cols = ["last_vol_ratio_10", "mean_imb_dw"]
    V = A[:, [an.index(c) for c in cols]]
    ev = detect_anomalies(spec, bts, V, cols)
    det = StreamingAnomalyDetector(spec, cols)
    sev = []
    for t, row in zip(bts, V):
        sev.extend(det.update(int(t), row)[1])
    assert ev == sev
    assert ev, "real 10-minute book has at least one 4-sigma robust outlier in 1 s blocks"
    e = ev[0]
    assert abs(e.score) >= 4.0 and e.spec_hash == spec.hash and e.as_dict()["severity"] in ("warning", "critical")


# ----------------------------------------------------------------------- no lookahead


def test_no_lookahead_snapshot_and_blocks(spot25):
    ts, bids, asks = spot25
    t = 3000
    X0 = batch_features(SPEC25, ts, (bids, asks))
    b2, a2 = bids.copy(), asks.copy()
    rng = np.random.default_rng(1)
    b2[t + 1 :, :, 1] *= rng.uniform(0.1, 10, size=b2[t + 1 :, :, 1].shape)
    a2[t + 1 :, :, 1] *= rng.uniform(0.1, 10, size=a2[t + 1 :, :, 1].shape)
    b2[t + 1 :, :, 0] -= 50.0
    a2[t + 1 :, :, 0] += 50.0
    b2[t + 10] = np.nan  # and an invalid future row
    X1 = batch_features(SPEC25, ts, (b2, a2))
    np.testing.assert_array_equal(X0[: t + 1], X1[: t + 1])
    assert not np.allclose(X0[t + 1 :], X1[t + 1 :], equal_nan=True)
    bt0, A0 = aggregate_blocks(SPEC25, ts, X0)
    bt1, A1 = aggregate_blocks(SPEC25, ts, X1)
    done = bt0 <= ts[t]
    assert done.sum() > 10
    np.testing.assert_array_equal(bt0[done], bt1[done])
    np.testing.assert_array_equal(A0[done], A1[done])


def test_no_lookahead_candle_indicators(klines):
    spec = FeatureSpec()
    k = {f: klines[f][:6000].copy() for f in ("open", "high", "low", "close", "volume")}
    X0, _ = candle_features(spec, k)
    t = 4000
    rng = np.random.default_rng(2)
    k2 = {f: a.copy() for f, a in k.items()}
    scale = rng.uniform(0.5, 2.0, size=6000 - t - 1)
    for f in ("open", "high", "low", "close"):
        k2[f][t + 1 :] *= scale
    k2["volume"][t + 1 :] *= rng.uniform(0.0, 50.0, size=6000 - t - 1)
    X1, _ = candle_features(spec, k2)
    np.testing.assert_array_equal(X0[: t + 1], X1[: t + 1])
    assert not np.allclose(X0[t + 1 :], X1[t + 1 :], equal_nan=True)


# ----------------------------------------------------------------------- spec identity


def test_spec_hash_stable_and_sensitive():
    a, b = FeatureSpec(), FeatureSpec(depths=list(FeatureSpec().depths))
    assert a.hash == b.hash and len(a.hash) == 16
    assert FeatureSpec.from_dict(a.to_dict()).hash == a.hash
    assert FeatureSpec(interval_s=1.0).hash != a.hash
    assert FeatureSpec(depths=(5, 10)).hash != a.hash
    assert FeatureSpec(version=a.version + 1).hash != a.hash
    with pytest.raises(SpecError):
        FeatureSpec(depths=(10, 5))
    with pytest.raises(SpecError):
        FeatureSpec(interval_s=0.5)
    with pytest.raises(SpecError):
        FeatureSpec.from_dict({**a.to_dict(), "bogus": 1})


def test_spec_mismatch_refused_loudly(spot25):
    ts, bids, asks = spot25
    sf = StreamingFeatures(SPEC25)
    x = sf.update(int(ts[0]), bids[0], asks[0])
    fv = decode(encode(make_feature_vector(SPEC25, "binance", "BTCUSDT", int(ts[0]), x)))
    check_feature_vector(SPEC25, fv)  # same spec: fine
    other = FeatureSpec(depths=(5, 10, 15, 20, 25), interval_s=60.0)
    with pytest.raises(SpecMismatchError) as ei:
        check_feature_vector(other, fv, where="predictor")
    msg = str(ei.value)
    assert other.hash in msg and SPEC25.hash in msg and "predictor" in msg
    check_spec_hash(SPEC25.hash, SPEC25)
    with pytest.raises(SpecMismatchError):
        check_spec_hash("0" * 16, SPEC25)


def test_update_snapshot_and_bad_input(spot25):
    ts, bids, asks = spot25
    sf = StreamingFeatures(SPEC25)
    snap = BookSnapshot(
        exchange="binance", symbol="BTCUSDT", ts_exchange=int(ts[5]), ts_recv=0, seq=1, bids=bids[5], asks=asks[5]
    )
    x = sf.update_snapshot(snap)
    assert x is not None and x.shape == (len(sf.names),)
    snap.valid, snap.reason = False, "resyncing"
    assert sf.update_snapshot(snap) is None and sf.reason == "resyncing"
    assert sf.update(int(ts[6]), np.empty((0, 2)), asks[6]) is None and sf.reason == "empty_side"
    from features.orderbook import BookInputError

    with pytest.raises(BookInputError):
        sf.update(int(ts[6]), bids[6].reshape(-1), asks[6])
