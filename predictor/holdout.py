"""Score a saved model on new data next to the baselines it was trained with.

:func:`evaluate_on` is what ``depthpilot evaluate`` calls: the model and the baselines are scored
on the same samples of the new data, and the baselines are the ones **fitted on the training data**
and stored in the manifest (class priors, persistence transition table). Nothing is re-fitted on
the data being scored, so no baseline peeks at its labels; persistence still reads ``y[t-h]``, the
last label known at t in the new series.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from predictor.artifact import ArtifactError, LoadedArtifact
from predictor.dataset import DatasetError, make_windows, sample_mask
from predictor.evaluate import BASELINES, FittedBaselines, classification_metrics, predict_baselines
from predictor.fitting import predict_proba

__all__ = ["evaluate_on", "stored_baselines"]


def stored_baselines(artifact: LoadedArtifact) -> FittedBaselines:
    raw = artifact.manifest.baselines
    if not raw:
        raise ArtifactError(
            f"{artifact.path}: manifest has no fitted baselines (trained by an older "
            "version); retrain the model to evaluate it on new data"
        )
    try:
        fb = FittedBaselines.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{artifact.path}: bad 'baselines' in manifest ({exc})") from exc
    C = len(artifact.classes)
    if fb.priors.shape != (C,) or fb.transition.shape != (C, C):
        raise ArtifactError(f"{artifact.path}: 'baselines' shapes do not match {C} classes")
    return fb


def evaluate_on(artifact: LoadedArtifact, X: np.ndarray, y: np.ndarray, *, seed: int | None = None) -> dict[str, Any]:
    """Metrics of the model and of the stored baselines on new data.

    ``X`` (T, F): raw (unscaled) features in the manifest's ``feature_names`` order, row t using
    data <= t. ``y`` (T,): labels of the same rows from ``make_labels(artifact.label, prices)``
    (-1 where unknown). A sample is every t with a full finite window and a known label.
    Returns {"n": samples, "model": metrics, "majority"|"persistence"|"random": metrics}.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    F = len(artifact.manifest.feature_names)
    if X.ndim != 2 or X.shape[1] != F:
        raise DatasetError(f"X must be (T, {F}) in the model's feature order, got {X.shape}")
    if y.shape != (X.shape[0],):
        raise DatasetError(f"y shape {y.shape} does not match X rows {X.shape[0]}")
    fb = stored_baselines(artifact)
    idx = np.flatnonzero(sample_mask(X, y, artifact.seq_len))
    if len(idx) == 0:
        raise DatasetError(f"no sample with a full window of {artifact.seq_len} finite rows and a known label")
    Xs = artifact.scaler.transform(X[: int(idx[-1]) + 1]).astype(np.float32)
    probs = predict_proba(artifact.model, make_windows(Xs, idx, artifact.seq_len))
    classes = artifact.classes
    out: dict[str, Any] = {"n": int(len(idx)), "model": classification_metrics(y[idx], probs, classes)}
    base = predict_baselines(fb, y, idx, seed=seed)
    for name in BASELINES:
        bp, bpred = base[name]
        out[name] = classification_metrics(y[idx], bp, classes, pred=bpred)
    return out
