"""Labels, windows, folds, scaler: pure dataset logic."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.dataset import (
    DatasetError,
    Fold,
    LeakageError,
    Scaler,
    check_folds,
    make_windows,
    sample_mask,
    split_validation_tail,
    validate_inputs,
    walk_forward_folds,
)
from predictor.labels import UNLABELLED, LabelError, LabelSpec, Prices, make_labels


def test_updown_labels_match_bruteforce_on_real_closes(klines):
    c = klines.close[:3000]
    spec = LabelSpec("updown", horizon=7, threshold=0.0008)
    y = make_labels(spec, Prices(c))
    for t in range(len(c)):
        if t + 7 >= len(c):
            assert y[t] == UNLABELLED
            continue
        r = c[t + 7] / c[t] - 1
        want = 2 if r > 0.0008 else 0 if r < -0.0008 else 1
        assert y[t] == want, t
    assert set(np.unique(y[:-7])) == {0, 1, 2}


def test_binary_high_labels_match_bruteforce_on_real_bars(klines):
    c, h = klines.close[:3000], klines.high[:3000]
    spec = LabelSpec("binary_high", horizon=10, threshold=0.001)
    y = make_labels(spec, Prices(c, high=h, low=klines.low[:3000]))
    for t in range(len(c) - 10):
        assert y[t] == int(h[t + 1 : t + 11].max() >= c[t] * 1.001), t
    assert (y[-10:] == UNLABELLED).all()
    assert spec.classes == ["flat", "up"]
    assert 0.05 < y[:-10].mean() < 0.95


def test_label_uses_only_bars_t_plus_1_to_t_plus_h(klines):
    c, h = klines.close[:500].copy(), klines.high[:500].copy()
    spec = LabelSpec("binary_high", horizon=5, threshold=0.0005)
    y0 = make_labels(spec, Prices(c, high=h))
    t = 200
    # changing bars before t or after t+h leaves y[t] alone
    c2, h2 = c.copy(), h.copy()
    c2[:t] *= 1.5
    h2[:t] *= 1.5
    c2[t + 6 :] *= 0.5
    h2[t + 6 :] *= 0.5
    assert make_labels(spec, Prices(c2, high=h2))[t] == y0[t]
    # a spike at t+h flips it to "up"; at t+h+1 it does not
    h3 = h.copy()
    h3[t + 5] = c[t] * 1.01
    assert make_labels(spec, Prices(c, high=h3))[t] == 1
    h4 = h.copy()
    h4[t + 1 : t + 6] = c[t]  # no touch within the horizon
    h4[t + 6] = c[t] * 1.01
    assert make_labels(spec, Prices(c, high=h4))[t] == 0


def test_label_spec_validation_and_roundtrip():
    with pytest.raises(LabelError):
        LabelSpec("sideways", 5, 0.001)
    with pytest.raises(LabelError):
        LabelSpec("updown", 0, 0.001)
    with pytest.raises(LabelError):
        LabelSpec("updown", 5, -1.0)
    with pytest.raises(LabelError):
        Prices(np.ones(5), high=np.ones(4))
    s = LabelSpec("binary_high", 12, 0.002)
    assert LabelSpec.from_dict(s.to_dict()) == s
    with pytest.raises(LabelError):
        LabelSpec.from_dict({"kind": "updown"})


def test_make_windows_and_sample_mask(klines):
    X = klines.X[:200]
    y = make_labels(LabelSpec("updown", 3, 0.0), klines.prices(slice(0, 200)))
    m = sample_mask(X, y, seq_len=8)
    # ret_10 is NaN for the first 10 rows -> first full window ends at 10 + 8 - 1
    assert not m[:17].any() and m[17]
    assert not m[-3:].any()
    idx = np.array([17, 50, 196])
    W = make_windows(X, idx, 8, dtype=np.float64)
    for k, t in enumerate(idx):
        np.testing.assert_array_equal(W[k], X[t - 7 : t + 1])
    with pytest.raises(DatasetError):
        make_windows(X, np.array([3]), 8)


def test_walk_forward_folds_are_chronological_and_purged():
    folds = walk_forward_folds(10_000, 4, 1_500, horizon=15, embargo=5, mode="rolling", train_size=3_000)
    assert [f.test_end for f in folds][-1] == 10_000
    for a, b in zip(folds, folds[1:]):
        assert a.test_end == b.test_start
    for f in folds:
        assert f.test_start - f.train_end >= 15
        assert f.train_end - f.train_start == 3_000
    exp = walk_forward_folds(10_000, 4, 1_500, horizon=15, embargo=40, mode="expanding")
    assert all(f.train_start == 0 and f.test_start - f.train_end == 40 for f in exp)
    with pytest.raises(DatasetError):
        walk_forward_folds(1_000, 4, 300, horizon=5, mode="expanding", min_train=100)


def test_check_folds_rejects_a_gap_shorter_than_the_horizon():
    ok = [Fold(0, 0, 100, 105, 200)]
    check_folds(ok, horizon=5)
    with pytest.raises(LeakageError, match="gap"):
        check_folds([Fold(0, 0, 100, 104, 200)], horizon=5)
    with pytest.raises(LeakageError, match="overlap"):
        check_folds([Fold(0, 0, 100, 105, 200), Fold(1, 0, 150, 160, 300)], horizon=5)


def test_validation_tail_is_purged():
    idx = np.arange(100, 1100)
    fit, val = split_validation_tail(idx, 0.2, horizon=9)
    assert len(val) == 200 and val[0] == 900
    assert fit[-1] + 9 < val[0]
    assert np.all(np.diff(fit) > 0)


def test_scaler_fit_ignores_nan_rows_and_roundtrips(klines):
    X = klines.X[:1000]
    s = Scaler.fit(X)
    rows = X[np.isfinite(X).all(1)]
    np.testing.assert_allclose(s.mean, rows.mean(0))
    np.testing.assert_allclose(s.scale, rows.std(0))
    s2 = Scaler.from_dict(s.to_dict())
    np.testing.assert_array_equal(s2.transform(X[50:60]), s.transform(X[50:60]))


def test_validate_inputs_errors(klines):
    X, ts, names = klines.X[:100], klines.ts[:100], klines.names
    with pytest.raises(DatasetError, match="increasing"):
        validate_inputs(X, ts[::-1], names, 100)
    with pytest.raises(DatasetError, match="names"):
        validate_inputs(X, ts, names[:-1], 100)
    with pytest.raises(DatasetError, match="price"):
        validate_inputs(X, ts, names, 99)
    with pytest.raises(DatasetError, match="2-D"):
        validate_inputs(X[:, 0], ts, names, 100)


def test_label_balance_check_counts_by_hand():
    from predictor.labels import ImbalancedLabels, LabelSpec, check_label_balance

    spec = LabelSpec("updown", horizon=2, threshold=0.001)
    y = np.array([1] * 96 + [0, 0, 2, 2, -1, -1])  # down 2, flat 96, up 2 of 100 labelled rows
    with pytest.raises(ImbalancedLabels) as ei:
        check_label_balance(spec, y, 0.05)
    msg = str(ei.value)
    assert "down=2, flat=96, up=2" in msg and "lower --threshold or raise --horizon" in msg
    assert "\n" not in msg and ei.value.counts == {"down": 2, "flat": 96, "up": 2}
    assert check_label_balance(spec, y, 0.02) == {"down": 2, "flat": 96, "up": 2}  # exactly 2% passes
    with pytest.raises(ImbalancedLabels):
        check_label_balance(spec, np.full(5, -1), 0.05)  # nothing labelled at all
