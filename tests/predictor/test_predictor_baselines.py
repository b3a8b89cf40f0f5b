"""The baselines pinned on hand-built label arrays, expected outputs worked out by hand.

Series (h = 2, classes 0/1/2), train = indices 0..7, gap 8..9, test = 10..13:

    t : 0 1 2 3 4 5 6 7 | 8 9 | 10 11 12 13
    y : 0 0 1 0 0 2 0 1 | 1 0 |  2  1  2  0

* train priors (Laplace +1): counts [5, 2, 1] -> [6, 3, 2] / 11, majority class 0.
  (The test block's own majority would be class 2: a majority fitted on test labels fails.)
* persistence predicts y[t-2]: t=10..13 -> y[8..11] = [1, 0, 2, 1]
  (y[t] would give [2, 1, 2, 0], y[t-1] would give [0, 2, 1, 2]).
* transition pairs (y[t-2] -> y[t]) with both ends in train, t = 2..7:
  0->1, 0->0, 1->0, 0->2, 0->0, 2->1; +1 everywhere:
  row 0 = [3, 2, 2] / 7, row 1 = [2, 1, 1] / 4, row 2 = [1, 2, 1] / 4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictor.evaluate import FittedBaselines, baseline_predictions, fit_baselines, predict_baselines

Y = np.array([0, 0, 1, 0, 0, 2, 0, 1, 1, 0, 2, 1, 2, 0])
TRAIN = np.arange(0, 8)
TEST = np.arange(10, 14)
H = 2
PRIORS = np.array([6, 3, 2]) / 11
TRANS = np.array([[3 / 7, 2 / 7, 2 / 7], [2 / 4, 1 / 4, 1 / 4], [1 / 4, 2 / 4, 1 / 4]])


def _base(seed=0):
    return baseline_predictions(Y, TRAIN, TEST, 3, H, seed=seed)


def test_fitted_priors_and_transition_table_by_hand():
    fb = fit_baselines(Y, TRAIN, 3, H)
    np.testing.assert_allclose(fb.priors, PRIORS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(fb.transition, TRANS, rtol=0, atol=1e-15)
    assert fb.majority == 0


def test_persistence_predicts_the_label_known_at_t():
    probs, pred = _base()["persistence"]
    assert pred.tolist() == [1, 0, 2, 1]  # y[t-h]; y[t] = [2, 1, 2, 0], y[t-h+1] = [0, 2, 1, 2]
    np.testing.assert_allclose(probs, TRANS[[1, 0, 2, 1]], rtol=0, atol=1e-15)


def test_persistence_is_exact_on_a_longer_hand_built_series():
    # h = 3: a period-6 pattern; y[t-3] is the class three steps back
    y = np.array([0, 1, 2, 2, 1, 0] * 4)
    test = np.arange(15, 24)
    _, pred = baseline_predictions(y, np.arange(0, 11), test, 3, 3, seed=0)["persistence"]
    assert pred.tolist() == [y[t - 3] for t in test] == [0, 1, 2, 2, 1, 0, 0, 1, 2]


def test_persistence_falls_back_to_the_training_majority_when_nothing_is_known():
    y = np.array([2, 2, 1, -1, 0, 1])  # y[3] unknown; t=0,1 have no t-h
    fb = FittedBaselines(horizon=2, priors=np.array([0.2, 0.3, 0.5]), transition=np.full((3, 3), 1 / 3))
    probs, pred = predict_baselines(fb, y, np.array([0, 1, 2, 5]))["persistence"]
    assert pred.tolist() == [2, 2, 2, 2]  # majority, majority, y[0]=2, y[3] unknown -> majority
    np.testing.assert_allclose(probs[[0, 1, 3]], np.tile([0.2, 0.3, 0.5], (3, 1)))


def test_majority_uses_the_training_priors_not_the_test_labels():
    probs, pred = _base()["majority"]
    assert pred.tolist() == [0, 0, 0, 0]  # the test block's own majority would be 2
    np.testing.assert_allclose(probs, np.tile(PRIORS, (4, 1)), rtol=0, atol=1e-15)


def test_test_labels_do_not_move_any_baseline_parameter():
    y2 = Y.copy()
    y2[TEST] = [1, 1, 1, 1]
    y2[8:10] = [2, 2]  # the gap rows are not training samples either
    a, b = fit_baselines(Y, TRAIN, 3, H), fit_baselines(y2, TRAIN, 3, H)
    np.testing.assert_array_equal(a.priors, b.priors)
    np.testing.assert_array_equal(a.transition, b.transition)
    pa, pb = _base()["majority"], baseline_predictions(y2, TRAIN, TEST, 3, H, seed=0)["majority"]
    np.testing.assert_array_equal(pa[0], pb[0])


def test_random_is_seeded():
    y = np.array([0, 1, 2] * 100)
    train, test = np.arange(0, 150), np.arange(152, 300)
    a = baseline_predictions(y, train, test, 3, 2, seed=5)["random"]
    b = baseline_predictions(y, train, test, 3, 2, seed=5)["random"]
    c = baseline_predictions(y, train, test, 3, 2, seed=6)["random"]
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_allclose(a[0], np.full((len(test), 3), 1 / 3))  # priors [51, 51, 51] / 153
    # the draw follows the training priors (148 draws, each class ~1/3)
    share = np.bincount(a[1], minlength=3) / len(test)
    assert np.all(np.abs(share - 1 / 3) < 0.15)


def test_fitted_baselines_round_trip_through_json():
    fb = fit_baselines(Y, TRAIN, 3, H, seed=9)
    back = FittedBaselines.from_dict(json.loads(json.dumps(fb.to_dict())))
    np.testing.assert_array_equal(back.priors, fb.priors)
    np.testing.assert_array_equal(back.transition, fb.transition)
    assert (back.horizon, back.seed) == (H, 9)


# ---------------------------------------------------------------- the artifact's stored baselines


def test_manifest_stores_the_baselines_of_the_final_training_rows(trained):
    from predictor.dataset import sample_mask
    from predictor.labels import make_labels

    man = json.loads((trained["path"] / "manifest.json").read_text())
    d, cfg = trained["data"], trained["config"]
    y = make_labels(cfg.label, d.prices())
    mask = sample_mask(d.X, y, cfg.seq_len)
    lo, hi = man["data_range"]["final_train_start_ts"], man["data_range"]["final_train_end_ts"]
    final_idx = np.flatnonzero(mask & (d.ts >= lo) & (d.ts <= hi))
    expect = fit_baselines(y, final_idx, 3, cfg.label.horizon, seed=cfg.seed)
    stored = FittedBaselines.from_dict(man["baselines"])
    np.testing.assert_allclose(stored.priors, expect.priors, rtol=0, atol=1e-15)
    np.testing.assert_allclose(stored.transition, expect.transition, rtol=0, atol=1e-15)
    assert stored.horizon == cfg.label.horizon


def test_evaluate_on_new_data_uses_the_stored_training_baselines(trained, klines):
    from predictor.artifact import load_artifact
    from predictor.holdout import evaluate_on
    from predictor.labels import make_labels

    art = load_artifact(trained["path"])
    fb = FittedBaselines.from_dict(art.manifest.baselines)
    new = slice(len(klines.ts) - 14000, len(klines.ts) - 9000)  # bars before the training data
    X, y = klines.X[new], make_labels(art.label, klines.prices(new))
    res = evaluate_on(art, X, y, seed=3)
    n = res["n"]
    assert n > 4000 and all(res[w]["n"] == n for w in ("model", "majority", "persistence", "random"))
    # majority: the stored training priors -> log-loss = -mean log prior[y] over the scored samples
    from predictor.dataset import sample_mask

    idx = np.flatnonzero(sample_mask(X, y, art.seq_len))
    assert res["majority"]["log_loss"] == pytest.approx(float(-np.mean(np.log(fb.priors[y[idx]]))), abs=1e-12)
    assert res["majority"]["pred_share"][art.classes[fb.majority]] == 1.0
    # persistence: y[t-h] of the new series, probabilities from the stored transition table
    known = idx - fb.horizon >= 0
    assert known.all()
    assert res["persistence"]["accuracy"] == pytest.approx(float(np.mean(y[idx - fb.horizon] == y[idx])))
    p = fb.transition[y[idx - fb.horizon], y[idx]]
    assert res["persistence"]["log_loss"] == pytest.approx(float(-np.mean(np.log(p))), abs=1e-12)
    # the model part equals batch inference on the same windows
    from predictor.inference import Predictor

    windows = np.stack([X[t - art.seq_len + 1 : t + 1] for t in idx])
    probs = Predictor(art).predict_windows(windows)
    assert res["model"]["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y[idx])))


@pytest.mark.parametrize("name", ["book-default", "klines-default"])
def test_bundled_models_carry_their_training_baselines(name):
    from depthpilot.paths import models_dir
    from predictor.artifact import load_artifact
    from predictor.holdout import stored_baselines

    art = load_artifact(models_dir() / name)
    fb = stored_baselines(art)
    C = len(art.classes)
    assert fb.horizon == art.label.horizon
    assert fb.priors.shape == (C,) and fb.priors.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(fb.transition.sum(axis=1), np.ones(C))


def test_evaluate_on_refuses_an_artifact_without_stored_baselines(trained, tmp_path):
    import shutil

    from predictor.artifact import ArtifactError, load_artifact
    from predictor.holdout import evaluate_on

    p = tmp_path / "old"
    shutil.copytree(trained["path"], p)
    man = json.loads((p / "manifest.json").read_text())
    del man["baselines"]
    (p / "manifest.json").write_text(json.dumps(man))
    art = load_artifact(p)
    d = trained["data"]
    with pytest.raises(ArtifactError, match="no fitted baselines"):
        evaluate_on(art, d.X, np.zeros(len(d.ts), dtype=np.int64))
