"""End-to-end training on the real klines: artifact, report, same-fold baselines, exact reload."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from predictor.artifact import load_artifact
from predictor.dataset import make_windows
from predictor.evaluate import BASELINES
from predictor.labels import make_labels
from predictor.train import TuningUnavailable, fit_model, predict_proba, train


def test_training_writes_artifact_and_report(trained):
    p = trained["path"]
    for f in ("model.pt", "manifest.json", "report.md"):
        assert (p / f).is_file(), f
    man = json.loads((p / "manifest.json").read_text())
    d = trained["data"]
    assert man["spec_hash"] == d.spec_hash
    assert man["feature_names"] == d.names
    assert man["classes"] == ["down", "flat", "up"]
    assert man["seq_len"] == 12
    assert man["label"]["horizon"] == 5 and man["label"]["kind"] == "updown"
    assert len(man["scaler"]["mean"]) == len(d.names)
    assert man["data_range"]["start_ts"] == int(d.ts[0]) and man["data_range"]["end_ts"] == int(d.ts[-1])
    assert len(man["weights_sha256"]) == 64
    assert (p / "model.pt").stat().st_size < 2_000_000
    report = (p / "report.md").read_text()
    for who in ("model",) + BASELINES:
        assert f"| {who} |" in report
    assert report.count("### Fold") == 3
    pytest.importorskip("matplotlib")
    for png in ("folds.png", "reliability.png", "learning_curves.png"):
        assert (p / png).stat().st_size > 1000


def test_model_and_baselines_scored_on_the_same_out_of_sample_folds(trained):
    man = json.loads((trained["path"] / "manifest.json").read_text())
    folds = man["metrics"]["folds"]
    assert len(folds) == 3
    prev_end = None
    for f in folds:
        m = f["metrics"]
        assert set(m) == {"model", *BASELINES}
        sizes = {who: m[who]["n"] for who in m}
        supports = {who: tuple(m[who]["support"].values()) for who in m}
        assert len(set(sizes.values())) == 1 and sizes["model"] == f["n_test"]
        assert len(set(supports.values())) == 1
        assert f["train_range"][1] < f["test_range"][0]
        if prev_end is not None:
            assert f["test_range"][0] > prev_end
        prev_end = f["test_range"][1]
        for who in m:
            assert 0.0 <= m[who]["accuracy"] <= 1.0 and m[who]["log_loss"] > 0 and 0 <= m[who]["brier"] <= 2
    wf = man["metrics"]["walk_forward"]
    # majority and random share the prior probabilities -> equal log-loss by definition
    assert wf["majority"]["mean_fold_log_loss"] == pytest.approx(wf["random"]["mean_fold_log_loss"])


def test_reload_reproduces_predictions_exactly(trained):
    art = load_artifact(trained["path"], expected_spec_hash=trained["data"].spec_hash)
    d = trained["data"]
    fp = art.manifest.metrics["fingerprint"]
    idx = np.searchsorted(d.ts, fp["end_ts"])
    Xs = art.scaler.transform(d.X[: idx[-1] + 1]).astype(np.float32)
    probs = predict_proba(art.model, make_windows(Xs, idx, art.seq_len))
    np.testing.assert_array_equal(probs, np.array(fp["probs"]))
    art2 = load_artifact(trained["path"])
    for (k, a), (_, b) in zip(art.model.state_dict().items(), art2.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_progress_events_cover_all_fits(trained):
    ev = trained["events"]
    assert ev[-1].stage == "done"
    assert {e.stage for e in ev} == {"fold", "final", "done"}
    assert {e.fold for e in ev if e.stage == "fold"} == {0, 1, 2}
    steps = [e.step for e in ev]
    assert steps == sorted(steps) and steps[-1] == ev[-1].steps_total
    assert all(np.isfinite(e.val_loss) for e in ev if e.stage in ("fold", "final"))


def test_fit_is_seeded_and_reproducible(klines, small_config):
    d = klines.tail(3000)
    cfg = small_config(max_epochs=2)
    y = make_labels(cfg.label, d.prices())
    idx = np.arange(40, 2900)
    a = fit_model(cfg, d.X, y, idx, seed=3)
    b = fit_model(cfg, d.X, y, idx, seed=3)
    c = fit_model(cfg, d.X, y, idx, seed=4)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.history == b.history


def test_scaler_is_fitted_on_training_rows_only(klines, small_config):
    d = klines.tail(3000)
    cfg = small_config(max_epochs=1)
    y = make_labels(cfg.label, d.prices())
    idx = np.arange(40, 2000)
    a = fit_model(cfg, d.X, y, idx, seed=1)
    X2 = d.X.copy()
    X2[2000:] *= 1000.0  # the future (after the last training sample) must not matter
    b = fit_model(cfg, X2, y, idx, seed=1)
    np.testing.assert_array_equal(a.scaler.mean, b.scaler.mean)
    np.testing.assert_array_equal(a.scaler.scale, b.scaler.scale)


def test_binary_label_training(klines, tmp_path, small_config):
    from predictor.labels import LabelSpec

    d = klines.tail(5000)
    cfg = small_config(label=LabelSpec("binary_high", horizon=10, threshold=0.001), n_folds=2, max_epochs=2)
    p = train(cfg, d.X, d.ts, d.prices(), d.names, d.spec_hash, tmp_path / "bin")
    art = load_artifact(p)
    assert art.classes == ["flat", "up"] and art.model.cfg.n_classes == 2
    assert "| persistence |" in (p / "report.md").read_text()


def test_tune_without_optuna_gives_a_clear_error(klines, tmp_path, monkeypatch, small_config):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    d = klines.tail(3000)
    with pytest.raises(TuningUnavailable, match="optuna"):
        train(small_config(tune_trials=2), d.X, d.ts, d.prices(), d.names, d.spec_hash, tmp_path / "t")


def test_bad_config_and_inputs_rejected(klines, tmp_path, small_config):
    with pytest.raises(ValueError):
        small_config(dropout=1.5)
    d = klines.tail(3000)
    with pytest.raises(ValueError, match="spec_hash"):
        train(small_config(), d.X, d.ts, d.prices(), d.names, "", tmp_path / "x")


def test_tune_with_optuna_returns_a_config_from_the_search_space(klines, small_config):
    pytest.importorskip("optuna")
    from predictor.train import tune

    d = klines.tail(3000)
    best, info = tune(small_config(max_epochs=1, n_folds=2), d.X, d.ts, d.prices(), d.names, n_trials=2)
    assert info["n_trials"] == 2 and np.isfinite(info["best_value"])
    assert best.hidden in (16, 32, 64) and best.seq_len in (15, 30, 60) and best.tune_trials == 0
