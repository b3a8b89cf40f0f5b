"""Walk-forward training of the LSTM classifier and artifact writing.

Entry point: :func:`train` (plain function; ``depthpilot train`` wraps it). Pipeline:

1. validate inputs, build labels from prices (:mod:`predictor.labels`),
2. leakage checks: no feature column tracks a forward return / the label
   (:func:`predictor.dataset.check_feature_leakage`), folds respect the purge gap
   (:func:`predictor.dataset.check_folds`),
3. for each chronological walk-forward fold: scaler fitted on that fold's training rows only,
   class-weighted cross-entropy, early stopping on a purged validation tail of train; the fold's
   model and the baselines are scored on the same test samples,
4. a final model on the most recent ``train_size`` rows (same recipe) is saved as the artifact,
   with the walk-forward metrics, and ``report.md`` + plots are written next to it.

Reproducible: every fit is seeded (``torch.manual_seed``, a seeded shuffling generator); on CPU
the same config + data give bit-identical weights.
"""
from __future__ import annotations

import copy
import datetime as dt
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from predictor.artifact import ArtifactPath, Manifest, git_commit, save_artifact
from predictor.dataset import (
    DatasetError,
    Fold,
    Scaler,
    check_feature_leakage,
    check_folds,
    make_windows,
    sample_mask,
    split_validation_tail,
    validate_inputs,
    walk_forward_folds,
)
from predictor.evaluate import FoldResult, baseline_predictions, classification_metrics, write_report
from predictor.labels import LabelSpec, Prices, make_labels
from predictor.model import LSTMClassifier, ModelConfig, pick_device
from predictor.smoothing import SmoothingConfig

__all__ = ["TrainConfig", "ProgressEvent", "FitResult", "train", "fit_model", "predict_proba",
           "walk_forward", "tune", "TuningUnavailable"]


class TuningUnavailable(ImportError):
    """``--tune`` needs optuna, which is not installed."""


@dataclass(frozen=True)
class TrainConfig:
    label: LabelSpec = field(default_factory=LabelSpec)
    seq_len: int = 30
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 6
    patience: int = 2
    val_frac: float = 0.15  # chronological validation tail of each training block
    n_folds: int = 4
    test_size: int | None = None  # rows per test block; default T // (n_folds + 2)
    train_size: int | None = None  # rows per (rolling) training block; default 2 * test_size
    fold_mode: Literal["rolling", "expanding"] = "rolling"
    embargo: int = 0  # extra purge rows; the gap is max(horizon, embargo)
    train_stride: int = 1  # use every k-th training window (overlapping windows are redundant)
    class_weights: bool = True
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    num_threads: int | None = None  # torch intra-op threads during training (None = leave as is)
    max_abs_feature_corr: float = 0.9  # leakage check threshold
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    signal_ttl_s: float = 120.0  # served signals expire this long after their feature ts
    tune_trials: int = 0  # > 0: optuna search before training (needs optuna)
    tune_timeout_s: float | None = None
    model_name: str = "lstm"

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("seq_len, hidden and layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.train_stride < 1:
            raise ValueError("max_epochs, batch_size and train_stride must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label.to_dict()
        d["smoothing"] = self.smoothing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if isinstance(d.get("label"), dict):
            d["label"] = LabelSpec.from_dict(d["label"])
        if isinstance(d.get("smoothing"), dict):
            d["smoothing"] = SmoothingConfig.from_dict(d["smoothing"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class ProgressEvent:
    """Passed to the ``progress`` callback after every epoch and at stage changes.
    ``step``/``steps_total`` count epochs over all fits (early stopping jumps ``step`` ahead),
    so a progress bar can do ``update(task, completed=ev.step, total=ev.steps_total)``."""

    stage: str  # "fold" | "final" | "tune" | "done"
    fold: int  # fold index, -1 for the final model
    n_folds: int
    epoch: int
    max_epochs: int
    step: int
    steps_total: int
    train_loss: float = float("nan")
    val_loss: float = float("nan")
    message: str = ""


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class FitResult:
    model: LSTMClassifier  # best-validation weights, eval mode, on CPU
    scaler: Scaler
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float


# --------------------------------------------------------------------------- fitting


def _class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    cnt = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = len(y) / (n_classes * np.maximum(cnt, 1.0))
    return w / w.mean()


@torch.inference_mode()
def predict_proba(model: LSTMClassifier, windows: np.ndarray, batch: int = 4096,
                  device: torch.device | None = None) -> np.ndarray:
    """Softmax probabilities (N, C) float64 for scaled windows (N, seq, F); batched eager forward."""
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for i in range(0, len(windows), batch):
        xb = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch], dtype=np.float32)).to(device)
        out.append(model.predict_proba(xb).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.n_classes))


def _loss_on(model, crit, Xw: torch.Tensor, yw: torch.Tensor, batch: int) -> float:
    model.eval()
    tot, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(Xw), batch):
            logits = model(Xw[i:i + batch])
            tot += float(crit(logits, yw[i:i + batch])) * len(logits)
            n += len(logits)
    return tot / max(n, 1)


def fit_model(
    cfg: TrainConfig,
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    *,
    seed: int,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> FitResult:
    """Fit scaler + LSTM on samples ``train_idx`` (sorted end indices), early-stopping on a purged
    chronological validation tail. The scaler sees only rows up to the last training sample."""
    n_classes = cfg.label.n_classes
    h = cfg.label.horizon
    fit_idx, val_idx = split_validation_tail(train_idx, cfg.val_frac, h)
    fit_idx = fit_idx[::cfg.train_stride]
    lo = max(0, int(fit_idx[0]) - cfg.seq_len + 1)
    scaler = Scaler.fit(X[lo:int(fit_idx[-1]) + 1])  # rows seen by the fitted samples only
    hi = int(val_idx[-1]) + 1
    Xs = scaler.transform(X[:hi]).astype(np.float32)
    device = pick_device(cfg.device)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LSTMClassifier(ModelConfig(X.shape[1], n_classes, cfg.hidden, cfg.layers, cfg.dropout)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    w = _class_weights(y[fit_idx], n_classes) if cfg.class_weights else np.ones(n_classes)
    crit = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32, device=device))

    Xf = torch.from_numpy(make_windows(Xs, fit_idx, cfg.seq_len)).to(device)
    yf = torch.from_numpy(y[fit_idx]).to(device)
    Xv = torch.from_numpy(make_windows(Xs, val_idx, cfg.seq_len)).to(device)
    yv = torch.from_numpy(y[val_idx]).to(device)

    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    bad = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        perm = torch.randperm(len(Xf), generator=gen).to(device)
        tot = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(Xf[b]), yf[b])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss.detach()) * len(b)
        tr_loss = tot / len(perm)
        val_loss = _loss_on(model, crit, Xv, yv, 4096)
        history.append({"epoch": epoch, "train_loss": tr_loss, "val_loss": val_loss})
        if on_epoch:
            on_epoch(epoch, tr_loss, val_loss)
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
            bad = 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best[2])
    model = model.cpu().eval()
    return FitResult(model=model, scaler=scaler, history=history, best_epoch=best[1], best_val_loss=best[0])


# --------------------------------------------------------------------------- walk-forward


def _prepare(cfg: TrainConfig, X, ts, prices: Prices, names):
    X, ts = validate_inputs(X, ts, names, len(prices))
    y = make_labels(cfg.label, prices)
    check_feature_leakage(X, prices.close, y, list(names), cfg.label.horizon,
                          max_abs_corr=cfg.max_abs_feature_corr)
    mask = sample_mask(X, y, cfg.seq_len)
    T = len(X)
    test_size = cfg.test_size or T // (cfg.n_folds + 2)
    train_size = cfg.train_size or 2 * test_size
    return X, ts, y, mask, test_size, train_size


def _folds(cfg: TrainConfig, T: int, test_size: int, train_size: int) -> list[Fold]:
    folds = walk_forward_folds(T, cfg.n_folds, test_size, cfg.label.horizon, embargo=cfg.embargo,
                               mode=cfg.fold_mode, train_size=train_size, min_train=cfg.seq_len + 10)
    check_folds(folds, cfg.label.horizon, T)
    return folds


def walk_forward(cfg: TrainConfig, X, ts, prices: Prices, names, progress: ProgressFn | None = None,
                 *, _step0: int = 0, _steps_total: int | None = None) -> list[FoldResult]:
    """Out-of-sample evaluation over chronological folds: model and baselines on the same tests."""
    X, ts, y, mask, test_size, train_size = _prepare(cfg, X, ts, prices, names)
    folds = _folds(cfg, len(X), test_size, train_size)
    steps_total = _steps_total or (len(folds) + 1) * cfg.max_epochs
    step = _step0
    results = []
    classes = cfg.label.classes
    for f in folds:
        tr, te = f.train_idx(mask), f.test_idx(mask)
        if len(tr) < 20 or len(te) < 1:
            raise DatasetError(f"fold {f.index}: {len(tr)} train / {len(te)} test samples: too few")
        base = step

        def on_epoch(ep, trl, vl, _f=f, _base=base):
            if progress:
                progress(ProgressEvent("fold", _f.index, len(folds), ep, cfg.max_epochs, _base + ep,
                                       steps_total, trl, vl))

        fr = fit_model(cfg, X, y, tr, seed=cfg.seed + 1000 * (f.index + 1), on_epoch=on_epoch)
        step = base + cfg.max_epochs
        Xs = fr.scaler.transform(X[: int(te[-1]) + 1]).astype(np.float32)
        probs = predict_proba(fr.model, make_windows(Xs, te, cfg.seq_len))
        metrics = {"model": classification_metrics(y[te], probs, classes)}
        for name, (bp, bpred) in baseline_predictions(y, tr, te, len(classes), cfg.label.horizon,
                                                      seed=cfg.seed + f.index).items():
            metrics[name] = classification_metrics(y[te], bp, classes, pred=bpred)
        results.append(FoldResult(
            index=f.index, train_range=(int(ts[tr[0]]), int(ts[tr[-1]])), test_range=(int(ts[te[0]]), int(ts[te[-1]])),
            n_train=len(tr), n_test=len(te), metrics=metrics, history=fr.history, best_epoch=fr.best_epoch,
            y_test=y[te], probs_test=probs))
    return results


# --------------------------------------------------------------------------- tuning


def tune(cfg: TrainConfig, X, ts, prices: Prices, names, n_trials: int, timeout_s: float | None = None,
         progress: ProgressFn | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Optuna search over hidden/layers/dropout/lr/seq_len minimising the mean walk-forward
    log-loss. Returns (best config, summary). Raises TuningUnavailable without optuna."""
    try:
        import optuna
    except ImportError as exc:
        raise TuningUnavailable("--tune needs the 'train' extra (no module 'optuna'): "
                                "pip install 'depthpilot[train]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        c = replace(cfg, hidden=trial.suggest_categorical("hidden", [16, 32, 64]),
                    layers=trial.suggest_int("layers", 1, 2),
                    dropout=trial.suggest_float("dropout", 0.0, 0.3),
                    lr=trial.suggest_float("lr", 5e-4, 1e-2, log=True),
                    seq_len=trial.suggest_categorical("seq_len", [15, 30, 60]), tune_trials=0)
        res = walk_forward(c, X, ts, prices, names)
        if progress:
            progress(ProgressEvent("tune", -1, 0, trial.number + 1, n_trials, trial.number + 1, n_trials,
                                   message=f"trial {trial.number}"))
        return float(np.mean([r.metrics["model"]["log_loss"] for r in res]))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
    best = replace(cfg, **study.best_params, tune_trials=0)
    return best, {"best_params": study.best_params, "best_value": study.best_value,
                  "n_trials": len(study.trials)}


# --------------------------------------------------------------------------- entry point


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
) -> ArtifactPath:
    """Walk-forward evaluate, fit the final model on the most recent data, write the artifact
    (``model.pt`` + ``manifest.json``) and ``report.md`` + plots into ``out_dir``."""
    t0 = time.perf_counter()
    if not spec_hash:
        raise ValueError("spec_hash is required (the artifact is bound to its feature spec)")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    tuning = None
    if config.tune_trials > 0:
        config, tuning = tune(config, X, ts, prices, names, config.tune_trials, config.tune_timeout_s, progress)
    names = list(names)
    X, ts, y, mask, test_size, train_size = _prepare(config, X, ts, prices, names)
    steps_total = (config.n_folds + 1) * config.max_epochs
    results = walk_forward(config, X, ts, prices, names, progress, _steps_total=steps_total)

    # final model: the most recent train_size rows (all data is in the past now)
    T = len(X)
    final_idx = np.flatnonzero(mask[max(0, T - train_size):]) + max(0, T - train_size)
    base = config.n_folds * config.max_epochs

    def on_epoch(ep, trl, vl):
        if progress:
            progress(ProgressEvent("final", -1, config.n_folds, ep, config.max_epochs, base + ep, steps_total, trl, vl))

    fr = fit_model(config, X, y, final_idx, seed=config.seed, on_epoch=on_epoch)

    # fingerprint: final-model probabilities on the last few training samples, so a reload can be
    # checked to reproduce predictions exactly (tests, and after copying an artifact around)
    fp_idx = final_idx[-8:]
    Xs = fr.scaler.transform(X[: int(fp_idx[-1]) + 1]).astype(np.float32)
    fp_probs = predict_proba(fr.model, make_windows(Xs, fp_idx, config.seq_len))

    classes = config.label.classes
    out = Path(out_dir)
    rep = write_report(out, results, classes, header={
        "label": config.label.describe(),
        "classes": ", ".join(classes),
        "model": f"LSTM hidden={config.hidden} layers={config.layers} dropout={config.dropout} seq_len={config.seq_len}",
        "folds": f"{config.n_folds} x {config.fold_mode}, test {test_size} rows, train {train_size} rows, "
                 f"gap {max(config.label.horizon, config.embargo)} rows",
        "features": f"{len(names)} ({spec_hash})",
        "data": f"{T} rows",
    })
    agg = rep["aggregate"]
    label_counts = np.bincount(y[y >= 0], minlength=len(classes))
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
        metrics={"walk_forward": agg, "folds": [r.summary() for r in results],
                 "final_fit": {"best_epoch": fr.best_epoch, "best_val_loss": fr.best_val_loss,
                               "history": fr.history},
                 "fingerprint": {"end_ts": [int(t) for t in ts[fp_idx]], "probs": fp_probs.tolist()}},
        data_range={"start_ts": int(ts[0]), "end_ts": int(ts[-1]), "n_rows": T,
                    "final_train_start_ts": int(ts[final_idx[0]]), "final_train_end_ts": int(ts[final_idx[-1]]),
                    "label_counts": {c: int(label_counts[i]) for i, c in enumerate(classes)}},
        features=dict(features or {}),
        train_config=config.to_dict() | ({"tuning": tuning} if tuning else {}),
        git_commit=git_commit(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    path = save_artifact(out, fr.model, man)
    if progress:
        progress(ProgressEvent("done", -1, config.n_folds, 0, config.max_epochs, steps_total, steps_total,
                               message=f"{time.perf_counter() - t0:.1f}s"))
    return path
