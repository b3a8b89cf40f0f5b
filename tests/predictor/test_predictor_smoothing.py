"""Decision smoothing rules."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.smoothing import DecisionSmoother, SmoothingConfig, decide, score_from_probs

C3 = ["down", "flat", "up"]


def test_mean_of_last_k_and_warmup():
    h = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.3, 0.6]])
    d = decide(h[:2], C3, SmoothingConfig(k=3))
    assert d.decision == "" and d.reason == "warmup"
    d = decide(h, C3, SmoothingConfig(k=3))
    np.testing.assert_allclose(d.probs, h[1:].mean(0))
    assert d.decision == "up"  # mean = [.3, .267, .433]
    assert d.score == pytest.approx(h[1:, 2].mean() - h[1:, 0].mean())


def test_probability_threshold():
    h = np.array([[0.3, 0.25, 0.45]] * 3)
    assert decide(h, C3, SmoothingConfig(k=3, prob_threshold=0.5)).decision == "flat"
    assert decide(h, C3, SmoothingConfig(k=3, prob_threshold=0.4)).decision == "up"


def test_all_agree_rule():
    h = np.array([[0.1, 0.1, 0.8], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    assert decide(h, C3, SmoothingConfig(k=3)).decision == "up"
    d = decide(h, C3, SmoothingConfig(k=3, require_agree=True))
    assert d.decision == "flat" and d.reason == "disagree"
    assert decide(h[[0, 2]], C3, SmoothingConfig(k=2, require_agree=True)).decision == "up"


def test_score_threshold():
    h = np.array([[0.35, 0.2, 0.45]] * 2)
    assert decide(h, C3, SmoothingConfig(k=2, score_threshold=0.2)).decision == "flat"
    assert decide(h, C3, SmoothingConfig(k=2, score_threshold=0.05)).decision == "up"
    h = np.array([[0.6, 0.1, 0.3]] * 2)
    assert decide(h, C3, SmoothingConfig(k=2, score_threshold=0.2)).decision == "down"


def test_binary_classes_never_short():
    cls = ["flat", "up"]
    assert score_from_probs(np.array([0.3, 0.7]), cls) == pytest.approx(0.7)
    np.testing.assert_allclose(score_from_probs(np.array([[0.3, 0.7], [0.9, 0.1]]), cls), [0.7, 0.1])
    assert decide(np.array([[0.2, 0.8]]), cls, SmoothingConfig(k=1)).decision == "up"
    assert decide(np.array([[0.8, 0.2]]), cls, SmoothingConfig(k=1)).decision == "flat"


def test_smoother_keeps_per_symbol_history():
    s = DecisionSmoother(C3, SmoothingConfig(k=2, require_agree=True))
    up, down = np.array([0.1, 0.1, 0.8]), np.array([0.8, 0.1, 0.1])
    assert s.update("A", up).decision == ""
    assert s.update("B", down).decision == ""
    assert s.update("A", up).decision == "up"
    assert s.update("B", down).decision == "down"
    assert s.update("A", down).decision == "flat"
    s.reset("A")
    assert s.update("A", down).decision == ""


def test_config_validation():
    with pytest.raises(ValueError):
        SmoothingConfig(k=0)
    with pytest.raises(ValueError):
        SmoothingConfig(prob_threshold=1.5)
    with pytest.raises(ValueError):
        decide(np.ones((3, 2)), C3, SmoothingConfig())
    assert SmoothingConfig.from_dict(SmoothingConfig(k=5).to_dict()).k == 5
