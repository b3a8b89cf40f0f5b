"""Fitting one LSTM classifier: the training configuration, progress events and :func:`fit_model`.

Pure computation on arrays (no I/O). :func:`fit_model` fits the scaler on the training rows only,
uses class-weighted cross-entropy and early-stops on a purged chronological validation tail.
Every fit is seeded (``torch.manual_seed``, a seeded shuffling generator); on CPU the same config +
data give bit-identical weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from predictor.dataset import Scaler, make_windows, split_validation_tail
from predictor.labels import LabelSpec
from predictor.model import LSTMClassifier, ModelConfig, pick_device
from predictor.smoothing import SmoothingConfig

__all__ = ["TrainConfig", "ProgressEvent", "ProgressFn", "FitResult", "fit_model", "predict_proba"]


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
    tune_trials: int = 0  # > 0: nested optuna search inside each training window (needs optuna)
    tune_timeout_s: float | None = None  # per search (one per outer fold + one for the final model)
    tune_inner_folds: int = 2  # inner walk-forward folds carved out of each outer training window
    min_class_share: float = 0.05  # refuse labels that leave a class below this share of the rows ...
    allow_imbalanced: bool = False  # ... unless explicitly allowed (then warned and recorded)
    model_name: str = "lstm"
    # seconds between rows (the features' fixed clock; 0 = take it from ``features``): samples
    # whose window or label spans missing rows are left out (predictor.dataset.contiguous_mask)
    row_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("seq_len, hidden and layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.train_stride < 1:
            raise ValueError("max_epochs, batch_size and train_stride must be >= 1")
        if self.tune_inner_folds < 1:
            raise ValueError(f"tune_inner_folds must be >= 1, got {self.tune_inner_folds}")
        if not 0.0 <= self.min_class_share < 1.0:
            raise ValueError(f"min_class_share must be in [0, 1), got {self.min_class_share}")

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
def predict_proba(
    model: LSTMClassifier, windows: np.ndarray, batch: int = 4096, device: torch.device | None = None
) -> np.ndarray:
    """Softmax probabilities (N, C) float64 for scaled windows (N, seq, F); batched eager forward."""
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for i in range(0, len(windows), batch):
        xb = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch], dtype=np.float32)).to(device)
        out.append(model.predict_proba(xb).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.n_classes))


def _loss_on(model, crit, Xw: torch.Tensor, yw: torch.Tensor, batch: int) -> float:
    model.eval()
    tot, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(Xw), batch):
            logits = model(Xw[i : i + batch])
            tot += float(crit(logits, yw[i : i + batch])) * len(logits)
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
    fit_idx = fit_idx[:: cfg.train_stride]
    lo = max(0, int(fit_idx[0]) - cfg.seq_len + 1)
    scaler = Scaler.fit(X[lo : int(fit_idx[-1]) + 1])  # rows seen by the fitted samples only
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
            b = perm[i : i + cfg.batch_size]
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
