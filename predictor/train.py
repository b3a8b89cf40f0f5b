"""Training entry point: walk-forward evaluation, the final model and the artifact.

:func:`train` (plain function; ``depthpilot train`` wraps it):

1. validate inputs, build labels from prices (:mod:`predictor.labels`); labels that leave a class
   almost empty are refused unless ``allow_imbalanced`` (then warned about and recorded),
2. leakage checks: no feature column tracks a forward return / the label
   (:func:`predictor.dataset.check_feature_leakage`), folds respect the purge gap
   (:func:`predictor.dataset.check_folds`),
3. chronological walk-forward (:mod:`predictor.walkforward`): per fold, the scaler and the model
   are fitted on that fold's training rows only (with ``--tune``: hyperparameters selected by an
   inner walk-forward inside that training window only), and the fold's model and the baselines
   are scored on the same test samples,
4. a final model on the most recent ``train_size`` rows (same recipe) is saved as the artifact,
   with the walk-forward metrics and the baselines fitted on the same final training rows
   (class priors, persistence transition table: :func:`predictor.holdout.evaluate_on` scores new
   data with them), and ``report.md`` + plots are written next to it.

Reproducible: every fit is seeded; on CPU the same config + data give bit-identical weights.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from predictor.artifact import ArtifactPath, Manifest, git_commit, save_artifact
from predictor.clock import row_interval_from_features, training_clock
from predictor.dataset import make_windows
from predictor.evaluate import fit_baselines, write_report
from predictor.fitting import FitResult, ProgressEvent, ProgressFn, TrainConfig, fit_model, predict_proba
from predictor.labels import ImbalancedLabels, Prices
from predictor.walkforward import TuningUnavailable, prepare, tune, tune_window, walk_forward

__all__ = [
    "TrainConfig",
    "ProgressEvent",
    "FitResult",
    "train",
    "fit_model",
    "predict_proba",
    "walk_forward",
    "tune",
    "TuningUnavailable",
    "ImbalancedLabels",
]

log = logging.getLogger("depthpilot.predictor.train")


def train(
    config: TrainConfig,
    X: np.ndarray,
    ts: np.ndarray,
    prices: Prices,
    names: Sequence[str],
    spec_hash: str,
    out_dir: Path | str,
    progress: ProgressFn | None = None,
    features: dict[str, Any] | None = None,
    save_folds: bool = False,
) -> ArtifactPath:
    """Walk-forward evaluate, fit the final model on the most recent data, write the artifact
    (``model.pt`` + ``manifest.json``) and ``report.md`` + plots into ``out_dir``; with
    ``save_folds`` also each walk-forward fold's model under ``out_dir/folds/fold-<k>``."""
    t0 = time.perf_counter()
    if not spec_hash:
        raise ValueError("spec_hash is required (the artifact is bound to its feature spec)")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    names = list(names)
    if not config.row_interval_s and (row_interval_s := row_interval_from_features(features)):
        config = replace(config, row_interval_s=row_interval_s)
    # refuse bad labels / leaked features before any fitting (also before any tuning)
    prep = prepare(config, X, ts, prices, names)
    X, ts, y = prep.X, prep.ts, prep.y
    test_size, train_size = prep.test_size, prep.train_size
    steps_total = (config.n_folds + 1) * config.max_epochs
    results = walk_forward(config, X, ts, prices, names, progress, _steps_total=steps_total)

    # final model: the most recent train_size rows (all data is in the past now); with tuning, the
    # hyperparameters are selected inside that window only, like every outer fold's
    T = len(X)
    start = max(0, T - train_size)
    tuning = None
    if config.tune_trials > 0:
        config, final_tuning = tune_window(config, X, ts, prices, names, start, T, progress)
        tuning = {"final": final_tuning, "folds": [r.tuning for r in results]}
    final_idx = np.flatnonzero(prep.mask(config.seq_len)[start:]) + start
    base = config.n_folds * config.max_epochs

    def on_epoch(ep, trl, vl):
        if progress:
            progress(ProgressEvent("final", -1, config.n_folds, ep, config.max_epochs, base + ep, steps_total, trl, vl))

    fr = fit_model(config, X, y, final_idx, seed=config.seed, on_epoch=on_epoch)
    # the baselines new data is scored against: fitted on the final model's training labels only
    baselines = fit_baselines(y, final_idx, config.label.n_classes, config.label.horizon, seed=config.seed)

    # fingerprint: final-model probabilities on the last few training samples, so a reload can be
    # checked to reproduce predictions exactly (tests, and after copying an artifact around)
    fp_idx = final_idx[-8:]
    Xs = fr.scaler.transform(X[: int(fp_idx[-1]) + 1]).astype(np.float32)
    fp_probs = predict_proba(fr.model, make_windows(Xs, fp_idx, config.seq_len))

    classes = config.label.classes
    out = Path(out_dir)
    rep = write_report(
        out,
        results,
        classes,
        header={
            "label": config.label.describe(),
            "classes": ", ".join(classes),
            "model": f"LSTM hidden={config.hidden} layers={config.layers} dropout={config.dropout} seq_len={config.seq_len}",
            "folds": f"{config.n_folds} x {config.fold_mode}, test {test_size} rows, train {train_size} rows, "
            f"gap {max(config.label.horizon, config.embargo)} rows",
            "features": f"{len(names)} ({spec_hash})",
            "data": f"{T} rows",
            "label counts": ", ".join(f"{c}={k}" for c, k in prep.label_counts.items())
            + (" **IMBALANCED (allowed by --allow-imbalanced)**" if prep.imbalanced else ""),
        },
    )
    agg = rep["aggregate"]
    warnings = _warnings(agg, prep)
    for w in warnings:
        log.warning("%s: %s", out, w)
    if warnings:
        with open(rep["report"], "a") as fh:
            fh.write("\n## Warnings\n\n" + "".join(f"- **{w}**\n" for w in warnings))
    man = Manifest(
        model_id=f"{config.model_name}-{spec_hash[:8]}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}",
        spec_hash=spec_hash,
        feature_names=names,
        label=config.label.to_dict(),
        classes=classes,
        seq_len=config.seq_len,
        model=fr.model.cfg.to_dict(),
        scaler=fr.scaler.to_dict(),
        thresholds=config.smoothing.to_dict() | {"signal_ttl_s": config.signal_ttl_s},
        metrics={
            "walk_forward": agg,
            "folds": [r.summary() for r in results],
            "final_fit": {"best_epoch": fr.best_epoch, "best_val_loss": fr.best_val_loss, "history": fr.history},
            "fingerprint": {"end_ts": [int(t) for t in ts[fp_idx]], "probs": fp_probs.tolist()},
            "warnings": warnings,
        },
        baselines=baselines.to_dict(),
        data_range={
            "start_ts": int(ts[0]),
            "end_ts": int(ts[-1]),
            "n_rows": T,
            "final_train_start_ts": int(ts[final_idx[0]]),
            "final_train_end_ts": int(ts[final_idx[-1]]),
            "label_counts": prep.label_counts,
            "imbalanced_labels_allowed": prep.imbalanced,
        },
        features=dict(features or {}),
        train_config=config.to_dict() | ({"tuning": tuning} if tuning else {}),
        clock=training_clock(features, config.seq_len, config.label.horizon),
        git_commit=git_commit(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    path = save_artifact(out, fr.model, man)
    if save_folds:
        _save_fold_models(out, man, results)
    if progress:
        progress(
            ProgressEvent(
                "done",
                -1,
                config.n_folds,
                0,
                config.max_epochs,
                steps_total,
                steps_total,
                message=f"{time.perf_counter() - t0:.1f}s",
            )
        )
    return path


def _save_fold_models(out: Path, man: Manifest, results) -> None:
    """Each walk-forward fold's model under ``folds/fold-<k>``, so its out-of-sample test range can
    be traded later (``depthpilot train --source books``); the manifest's ``data_range`` says
    which rows it trained and was tested on."""
    for r in results:
        if r.fit is None:
            continue
        fm = replace(
            man,
            model_id=f"{man.model_id}-fold{r.index}",
            model=r.fit.model.cfg.to_dict(),
            scaler=r.fit.scaler.to_dict(),
            seq_len=r.seq_len or man.seq_len,
            metrics={"fold": r.summary()},
            data_range=man.data_range
            | {
                "final_train_start_ts": r.train_range[0],
                "final_train_end_ts": r.train_range[1],
                "test_start_ts": r.test_range[0],
                "test_end_ts": r.test_range[1],
            },
        )
        save_artifact(out / "folds" / f"fold-{r.index}", r.fit.model, fm)


def _warnings(agg: dict[str, Any], prep) -> list[str]:
    """What the user must not miss: allowed imbalance, a model that loses to a baseline."""
    out = []
    if prep.imbalanced:
        out.append(
            "labels are imbalanced ("
            + ", ".join(f"{c}={k}" for c, k in prep.label_counts.items())
            + "): allowed by --allow-imbalanced"
        )
    m = agg["model"]
    for who in ("majority", "persistence"):
        b = agg[who]
        if m["mean_fold_accuracy"] < b["mean_fold_accuracy"]:
            out.append(
                f"model accuracy {m['mean_fold_accuracy']:.4f} is below the {who} baseline's "
                f"{b['mean_fold_accuracy']:.4f} (out of sample)"
            )
        if m["mean_fold_log_loss"] > b["mean_fold_log_loss"]:
            out.append(
                f"model log-loss {m['mean_fold_log_loss']:.4f} is worse than the {who} baseline's "
                f"{b['mean_fold_log_loss']:.4f} (out of sample)"
            )
    return out
