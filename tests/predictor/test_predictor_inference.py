"""Streaming push == offline batch inference on the same windows; invalid-input policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthpilot.messages import Signal, decode, encode
from predictor.artifact import ModelSpecMismatch
from predictor.inference import Predictor, PredictorError


@pytest.fixture
def pred(trained):
    return Predictor.from_artifact(trained["path"], expected_spec_hash=trained["data"].spec_hash)


def _stream(pred, d, sym, rows):
    probs, wins = [], []
    for i in rows:
        p = pred.push(sym, int(d.ts[i]), d.X[i])
        if p is not None:
            probs.append(p)
            wins.append(d.X[i - pred.seq_len + 1 : i + 1])
    return np.array(probs), np.array(wins)


def test_push_equals_offline_batch_and_eager_model(pred, trained):
    d = trained["data"]
    rows = range(20, 1020)  # ret_10 is NaN before row 10
    probs, wins = _stream(pred, d, "BTCUSDT", rows)
    assert len(probs) == 1000 - pred.seq_len + 1
    assert pred.stats["warmup"] == pred.seq_len - 1 and pred.stats["ok"] == len(probs)
    offline = pred.predict_windows(wins)
    assert np.abs(probs - offline).max() <= 1e-5
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # and the plain eager model on the same scaled windows
    xs = torch.from_numpy(((wins - pred._mean) / pred._scale).astype(np.float32))
    with torch.no_grad():
        eager = torch.softmax(pred.model(xs), -1).double().numpy()
    assert np.abs(probs - eager).max() <= 1e-5
    # the ring buffer holds exactly the last seq_len vectors
    np.testing.assert_array_equal(pred.window("BTCUSDT"), wins[-1])


def test_symbols_are_independent(pred, trained):
    d = trained["data"]
    alone, _ = _stream(pred, d, "A", range(100, 200))
    pred.reset()
    a, b = [], []
    for i, j in zip(range(100, 200), range(3000, 3100)):
        pa = pred.push("A", int(d.ts[i]), d.X[i])
        pb = pred.push("B", int(d.ts[j]), d.X[j])
        if pa is not None:
            a.append(pa)
            b.append(pb)
    np.testing.assert_array_equal(np.array(a), alone)
    batched = pred.predict_symbols(["A", "B", "never-seen"])
    assert set(batched) == {"A", "B"}
    assert np.abs(batched["A"] - a[-1]).max() <= 1e-5 and np.abs(batched["B"] - b[-1]).max() <= 1e-5


def test_invalid_vector_resets_the_window(pred, trained):
    d = trained["data"]
    S = pred.seq_len
    probs, _ = _stream(pred, d, "X", range(100, 100 + S))
    assert len(probs) == 1
    bad = d.X[100 + S].copy()
    bad[2] = np.nan
    assert pred.push("X", int(d.ts[100 + S]), bad) is None
    assert pred.stats["invalid_vector"] == 1
    assert pred.push("X", int(d.ts[101 + S]), d.X[:3, 0]) is None  # wrong length
    assert pred.stats["invalid_vector"] == 2
    assert not pred.ready("X")
    # re-warms over seq_len fresh vectors, then equals offline inference on the new window
    start = 102 + S
    got, wins = _stream(pred, d, "X", range(start, start + S))
    assert len(got) == 1
    np.testing.assert_array_equal(wins[0], d.X[start : start + S])
    assert np.abs(got[0] - pred.predict_windows(wins)[0]).max() <= 1e-5


def test_stale_timestamp_dropped_without_reset(pred, trained):
    d = trained["data"]
    S = pred.seq_len
    probs, _ = _stream(pred, d, "X", range(100, 100 + S))
    assert pred.push("X", int(d.ts[100]), d.X[100 + S]) is None
    assert pred.stats["stale_ts"] == 1 and pred.ready("X")
    p = pred.push("X", int(d.ts[100 + S]), d.X[100 + S])
    assert p is not None
    assert np.abs(p - pred.predict_windows(d.X[None, 101 : 101 + S])[0]).max() <= 1e-5


def test_time_gap_resets_when_configured(trained):
    pred = Predictor.from_artifact(trained["path"], max_gap_ns=90 * 10**9)
    d = trained["data"]
    S = pred.seq_len
    assert pred.push("X", 0, d.X[100]) is None
    for k in range(1, S):
        out = pred.push("X", k * 60 * 10**9, d.X[100 + k])
    assert out is not None
    assert pred.push("X", (S + 5) * 60 * 10**9, d.X[100 + S]) is None  # 6-minute hole
    assert pred.stats["gap_reset"] == 1 and not pred.ready("X")


def test_scores_signals_and_errors(pred, trained):
    p = np.array([0.2, 0.3, 0.5])
    assert pred.score(p) == pytest.approx(0.3)
    sig = pred.make_signal("binance", "BTCUSDT", 10**18, p, decision="up")
    assert isinstance(sig, Signal) and sig.expires_at > sig.ts and sig.model_id == pred.model_id
    back = decode(encode(sig))
    assert back.probs == pytest.approx(list(p)) and back.score == pytest.approx(0.3)
    with pytest.raises(PredictorError):
        pred.predict_windows(np.zeros((2, pred.seq_len + 1, pred.n_features)))
    with pytest.raises(PredictorError, match="NaN"):
        pred.predict_windows(np.full((1, pred.seq_len, pred.n_features), np.nan))
    with pytest.raises(ModelSpecMismatch):
        Predictor.from_artifact(trained["path"], expected_spec_hash="ffffffffffffffff")
