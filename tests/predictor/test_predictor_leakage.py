"""The leakage checks fire on injected leaks (future return / shifted label in the features,
folds without a purge gap) and stay quiet on honest causal features."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.dataset import LeakageError, check_feature_leakage, walk_forward_folds
from predictor.labels import LabelSpec, forward_return, make_labels
from predictor.train import train, walk_forward


def _labels(d, h=5, kind="updown", thr=0.0005):
    return make_labels(LabelSpec(kind, h, thr), d.prices())


def test_honest_features_pass(klines):
    y = _labels(klines)
    worst = check_feature_leakage(klines.X, klines.close, y, klines.names, horizon=5)
    assert set(worst) == set(klines.names)
    assert max(worst.values()) < 0.3  # causal features barely correlate with the future


@pytest.mark.parametrize("shift", [1, 3, 5])
def test_future_return_column_is_caught(klines, shift):
    y = _labels(klines)
    leaked = forward_return(klines.close, shift)  # information from t+1..t+shift at row t
    X = np.column_stack([klines.X, leaked])
    with pytest.raises(LeakageError, match="leak_col"):
        check_feature_leakage(X, klines.close, y, klines.names + ["leak_col"], horizon=5)


def test_past_return_is_not_flagged_but_the_same_column_shifted_by_the_horizon_is(klines):
    """ret over the last 5 bars is honest; the same column moved back by h rows (a classic
    alignment bug: features joined on the label's end time) equals the forward return."""
    y = _labels(klines, h=5)
    lc = np.log(klines.close)
    past5 = np.full_like(lc, np.nan)
    past5[5:] = lc[5:] - lc[:-5]
    check_feature_leakage(np.column_stack([klines.X, past5]), klines.close, y, klines.names + ["past5"], 5)
    shifted = np.full_like(past5, np.nan)
    shifted[:-5] = past5[5:]
    with pytest.raises(LeakageError, match="shifted_past5"):
        check_feature_leakage(
            np.column_stack([klines.X, shifted]), klines.close, y, klines.names + ["shifted_past5"], 5
        )


def test_label_copied_into_features_is_caught(klines):
    y = _labels(klines, kind="binary_high", thr=0.001)
    lab = np.where(y >= 0, y, np.nan).astype(float)
    with pytest.raises(LeakageError, match="label"):
        check_feature_leakage(np.column_stack([klines.X, lab]), klines.close, y, klines.names + ["y_copy"], 5)


def test_train_refuses_leaked_features_before_fitting(klines, tmp_path, small_config):
    d = klines.tail(4000)
    X = np.column_stack([d.X, forward_return(d.close, 5)])
    events = []
    with pytest.raises(LeakageError):
        train(
            small_config(), X, d.ts, d.prices(), d.names + ["fwd5"], d.spec_hash, tmp_path / "m", progress=events.append
        )
    assert events == []  # nothing was trained
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_fold_boundaries_respect_the_horizon_even_with_a_smaller_embargo(klines, small_config):
    d = klines.tail(6000)
    cfg = small_config(label=LabelSpec("updown", horizon=20, threshold=0.0005), embargo=3, max_epochs=1)
    folds = walk_forward_folds(6000, cfg.n_folds, 1000, horizon=20, embargo=3, mode="rolling", train_size=2000)
    for f in folds:
        assert f.test_start - f.train_end >= 20
    results = walk_forward(cfg, d.X, d.ts, d.prices(), d.names)
    step = int(d.ts[1] - d.ts[0])
    for r in results:
        # last training sample's label ends (t + h bars) strictly before the first test sample
        assert r.train_range[1] + 20 * step < r.test_range[0]
