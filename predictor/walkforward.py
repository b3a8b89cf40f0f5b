"""Chronological walk-forward evaluation, with optional *nested* hyperparameter tuning.

:func:`walk_forward` scores one model per fold and the baselines on exactly the same out-of-sample
test samples. With ``cfg.tune_trials > 0`` the hyperparameters of each outer fold are chosen by
:func:`tune` on that fold's **training window only** (inner walk-forward folds carved out of
``[train_start, train_end)``; the rows are sliced before the search sees them), and the fold is
then fitted on its training window and reported on its test block. The outer test rows therefore
never take part in selection, so the reported metrics stay out-of-sample.

Labels that leave a class almost empty are refused (:class:`predictor.labels.ImbalancedLabels`)
unless ``cfg.allow_imbalanced``; then a loud warning is logged and the caller records it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from predictor.dataset import (
    DatasetError,
    Fold,
    check_feature_leakage,
    check_folds,
    make_windows,
    contiguous_mask,
    sample_mask,
    validate_inputs,
    walk_forward_folds,
)
from predictor.evaluate import FoldResult, baseline_predictions, classification_metrics
from predictor.fitting import ProgressEvent, ProgressFn, TrainConfig, fit_model, predict_proba
from predictor.labels import ImbalancedLabels, Prices, check_label_balance, class_counts, make_labels

__all__ = ["TuningUnavailable", "Prepared", "prepare", "walk_forward", "tune", "slice_prices", "TUNED_PARAMS"]

log = logging.getLogger("depthpilot.predictor.train")

TUNED_PARAMS = ("hidden", "layers", "dropout", "lr", "seq_len")


class TuningUnavailable(ImportError):
    """``--tune`` needs optuna, which is not installed."""


@dataclass
class Prepared:
    X: np.ndarray
    ts: np.ndarray
    y: np.ndarray
    test_size: int
    train_size: int
    label_counts: dict[str, int]
    imbalanced: bool  # a class is below cfg.min_class_share and cfg.allow_imbalanced let it through
    row_ns: int = 0  # the row clock (0 = none): windows and labels never span missing rows
    horizon: int = 0

    def mask(self, seq_len: int) -> np.ndarray:
        mask = sample_mask(self.X, self.y, seq_len)
        if self.row_ns:
            mask &= contiguous_mask(self.ts, self.row_ns, seq_len, self.horizon)
        return mask


def prepare(cfg: TrainConfig, X, ts, prices: Prices, names: Sequence[str]) -> Prepared:
    """Validate inputs, build labels, refuse an almost-empty class and leaked features."""
    X, ts = validate_inputs(X, ts, names, len(prices))
    y = make_labels(cfg.label, prices)
    imbalanced = False
    try:
        counts = check_label_balance(cfg.label, y, cfg.min_class_share)
    except ImbalancedLabels as exc:
        if not cfg.allow_imbalanced:
            raise
        counts, imbalanced = class_counts(y, cfg.label.classes), True
        log.warning("IMBALANCED LABELS ALLOWED: %s", exc)
    check_feature_leakage(X, prices.close, y, list(names), cfg.label.horizon, max_abs_corr=cfg.max_abs_feature_corr)
    T = len(X)
    test_size = cfg.test_size or T // (cfg.n_folds + 2)
    train_size = cfg.train_size or 2 * test_size
    return Prepared(
        X,
        ts,
        y,
        test_size,
        train_size,
        counts,
        imbalanced,
        row_ns=int(round(cfg.row_interval_s * 1e9)),
        horizon=cfg.label.horizon,
    )


def _folds(cfg: TrainConfig, T: int, test_size: int, train_size: int) -> list[Fold]:
    folds = walk_forward_folds(
        T,
        cfg.n_folds,
        test_size,
        cfg.label.horizon,
        embargo=cfg.embargo,
        mode=cfg.fold_mode,
        train_size=train_size,
        min_train=cfg.seq_len + 10,
    )
    check_folds(folds, cfg.label.horizon, T)
    return folds


def slice_prices(prices: Prices, sl: slice) -> Prices:
    return Prices(
        close=prices.close[sl],
        high=None if prices.high is None else prices.high[sl],
        low=None if prices.low is None else prices.low[sl],
    )


def tune_window(
    cfg: TrainConfig, X, ts, prices: Prices, names, start: int, end: int, progress: ProgressFn | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """:func:`tune` on rows ``[start, end)`` only (sliced here, so nothing outside is visible)."""
    sl = slice(start, end)
    best, info = tune(
        cfg, X[sl], ts[sl], slice_prices(prices, sl), names, cfg.tune_trials, cfg.tune_timeout_s, progress
    )
    info["rows"] = [int(start), int(end)]
    return best, info


def walk_forward(
    cfg: TrainConfig,
    X,
    ts,
    prices: Prices,
    names,
    progress: ProgressFn | None = None,
    *,
    _step0: int = 0,
    _steps_total: int | None = None,
) -> list[FoldResult]:
    """Out-of-sample evaluation over chronological folds: model and baselines on the same tests.
    ``cfg.tune_trials > 0``: nested tuning (see the module docstring)."""
    prep = prepare(cfg, X, ts, prices, names)
    X, ts, y = prep.X, prep.ts, prep.y
    folds = _folds(cfg, len(X), prep.test_size, prep.train_size)
    steps_total = _steps_total or (len(folds) + 1) * cfg.max_epochs
    step = _step0
    results = []
    classes = cfg.label.classes
    for f in folds:
        base = step
        fcfg, tuning = cfg, None
        if cfg.tune_trials > 0:

            def on_tune(ev, _f=f, _base=base):
                if progress:
                    progress(replace(ev, fold=_f.index, n_folds=len(folds), step=_base, steps_total=steps_total))

            fcfg, tuning = tune_window(cfg, X, ts, prices, names, f.train_start, f.train_end, on_tune)
        mask = prep.mask(fcfg.seq_len)
        tr, te = f.train_idx(mask), f.test_idx(mask)
        if len(tr) < 20 or len(te) < 1:
            raise DatasetError(f"fold {f.index}: {len(tr)} train / {len(te)} test samples: too few")

        def on_epoch(ep, trl, vl, _f=f, _base=base):
            if progress:
                progress(
                    ProgressEvent("fold", _f.index, len(folds), ep, cfg.max_epochs, _base + ep, steps_total, trl, vl)
                )

        fr = fit_model(fcfg, X, y, tr, seed=cfg.seed + 1000 * (f.index + 1), on_epoch=on_epoch)
        step = base + cfg.max_epochs
        Xs = fr.scaler.transform(X[: int(te[-1]) + 1]).astype(np.float32)
        probs = predict_proba(fr.model, make_windows(Xs, te, fcfg.seq_len))
        metrics = {"model": classification_metrics(y[te], probs, classes)}
        for name, (bp, bpred) in baseline_predictions(
            y, tr, te, len(classes), cfg.label.horizon, seed=cfg.seed + f.index
        ).items():
            metrics[name] = classification_metrics(y[te], bp, classes, pred=bpred)
        results.append(
            FoldResult(
                index=f.index,
                train_range=(int(ts[tr[0]]), int(ts[tr[-1]])),
                test_range=(int(ts[te[0]]), int(ts[te[-1]])),
                n_train=len(tr),
                n_test=len(te),
                metrics=metrics,
                history=fr.history,
                best_epoch=fr.best_epoch,
                y_test=y[te],
                probs_test=probs,
                tuning=tuning,
                fit=fr,
                seq_len=fcfg.seq_len,
            )
        )
    return results


def tune(
    cfg: TrainConfig,
    X,
    ts,
    prices: Prices,
    names,
    n_trials: int,
    timeout_s: float | None = None,
    progress: ProgressFn | None = None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """Optuna search over hidden/layers/dropout/lr/seq_len minimising the mean log-loss of an inner
    walk-forward (``cfg.tune_inner_folds`` folds) over **the rows given** -- pass a training window,
    never data that is reported on. Returns (``cfg`` with the best parameters, summary).
    Raises TuningUnavailable without optuna."""
    try:
        import optuna
    except ImportError as exc:
        raise TuningUnavailable(
            "--tune needs the 'train' extra (no module 'optuna'): pip install 'depthpilot[train]'"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = replace(
        cfg, n_folds=cfg.tune_inner_folds, test_size=None, train_size=None, tune_trials=0, allow_imbalanced=True
    )  # the balance verdict belongs to the whole data set

    def objective(trial):
        c = replace(
            inner,
            hidden=trial.suggest_categorical("hidden", [16, 32, 64]),
            layers=trial.suggest_int("layers", 1, 2),
            dropout=trial.suggest_float("dropout", 0.0, 0.3),
            lr=trial.suggest_float("lr", 5e-4, 1e-2, log=True),
            seq_len=trial.suggest_categorical("seq_len", [15, 30, 60]),
        )
        res = walk_forward(c, X, ts, prices, names)
        if progress:
            progress(
                ProgressEvent(
                    "tune",
                    -1,
                    0,
                    trial.number + 1,
                    n_trials,
                    trial.number + 1,
                    n_trials,
                    message=f"trial {trial.number}",
                )
            )
        return float(np.mean([r.metrics["model"]["log_loss"] for r in res]))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
    best = replace(cfg, **study.best_params, tune_trials=0)
    return best, {
        "best_params": study.best_params,
        "best_value": study.best_value,
        "n_trials": len(study.trials),
        "n_rows": int(len(X)),
        "values": [t.value for t in study.trials],
    }
