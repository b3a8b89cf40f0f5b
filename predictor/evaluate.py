"""Out-of-sample metrics, baselines and the training report (report.md + PNG plots).

Every model fold is scored next to three baselines on exactly the same test samples:

* ``majority``    -- always the most frequent training class; probabilities = training priors.
* ``persistence`` -- the last label *known* at t, i.e. ``y[t-h]`` (it uses bars t-h+1..t, so it is
  observable at t); probabilities = the training transition table P(y[t] | y[t-h]) (so log-loss
  and calibration are meaningful, not infinite).
* ``random``      -- a class drawn from the training priors (seeded); probabilities = priors (so its
  log-loss/Brier equal ``majority``'s; it differs on accuracy/precision/recall).

The baselines are fitted once (:func:`fit_baselines` -> :class:`FittedBaselines`, stored in the
model manifest) and applied to any test rows (:func:`predict_baselines`), so scoring new data
(:func:`predictor.holdout.evaluate_on`) uses the training priors and transition table.

Metrics: accuracy, per-class precision/recall, log-loss, multi-class Brier score, reliability
bins of the top-class confidence and the expected calibration error (ECE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "classification_metrics",
    "reliability_bins",
    "baseline_predictions",
    "FittedBaselines",
    "fit_baselines",
    "predict_baselines",
    "FoldResult",
    "aggregate",
    "write_report",
    "BASELINES",
]

BASELINES = ("majority", "persistence", "random")
_EPS = 1e-12


def reliability_bins(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability of the top-class confidence: per bin mean confidence, accuracy and count; ECE."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(b, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    n = max(len(y), 1)
    ece = float(np.nansum(count / n * np.abs(acc - mean_conf)))
    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": [None if math.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if math.isnan(v) else float(v) for v in acc],
        "ece": ece,
    }


def classification_metrics(
    y: np.ndarray, probs: np.ndarray, classes: Sequence[str], pred: np.ndarray | None = None, n_bins: int = 10
) -> dict[str, Any]:
    """Metrics of probability forecasts ``probs`` (N, C) for true labels ``y`` (N,).
    ``pred`` overrides the hard prediction (default arg-max)."""
    from depthpilot.extras import require

    precision_recall_fscore_support = require(
        "sklearn.metrics", "train", "evaluating a model (training)"
    ).precision_recall_fscore_support

    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    C = len(classes)
    if probs.shape != (len(y), C):
        raise ValueError(f"probs shape {probs.shape} != ({len(y)}, {C})")
    if pred is None:
        pred = probs.argmax(axis=1)
    if len(y) == 0:
        return {"n": 0}
    prec, rec, _, support = precision_recall_fscore_support(y, pred, labels=list(range(C)), zero_division=0)
    p = np.clip(probs, _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    logloss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    onehot = np.eye(C)[y]
    brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(pred == y)),
        "precision": {c: float(prec[i]) for i, c in enumerate(classes)},
        "recall": {c: float(rec[i]) for i, c in enumerate(classes)},
        "support": {c: int(support[i]) for i, c in enumerate(classes)},
        "pred_share": {c: float(np.mean(pred == i)) for i, c in enumerate(classes)},
        "log_loss": logloss,
        "brier": brier,
        "reliability": reliability_bins(y, probs, n_bins),
    }


@dataclass(frozen=True)
class FittedBaselines:
    """The baselines' parameters, fitted on training labels only and stored in the model manifest
    so that new data is scored with the *training* priors and transition table (never its own)."""

    horizon: int
    priors: np.ndarray  # (C,) Laplace-smoothed training class frequencies
    transition: np.ndarray  # (C, C): row = y[t-h], column = P(y[t] | y[t-h]) on training pairs
    seed: int = 0  # default seed of the random baseline

    @property
    def majority(self) -> int:
        return int(np.argmax(self.priors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon": int(self.horizon),
            "priors": self.priors.tolist(),
            "transition": self.transition.tolist(),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FittedBaselines":
        return cls(
            horizon=int(d["horizon"]),
            priors=np.asarray(d["priors"], dtype=np.float64),
            transition=np.asarray(d["transition"], dtype=np.float64),
            seed=int(d.get("seed", 0)),
        )


def fit_baselines(
    y_all: np.ndarray, train_idx: np.ndarray, n_classes: int, horizon: int, seed: int = 0
) -> FittedBaselines:
    """Priors and the persistence transition table from the labels at ``train_idx`` only
    (a transition pair counts when both ``t-h`` and ``t`` are training samples)."""
    y_all = np.asarray(y_all, dtype=np.int64)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    ytr = y_all[train_idx]
    prior = np.bincount(ytr, minlength=n_classes).astype(np.float64) + 1.0  # Laplace
    prior /= prior.sum()
    trans = np.ones((n_classes, n_classes))
    tr_set = np.zeros(len(y_all), dtype=bool)
    tr_set[train_idx] = True
    prev_tr = train_idx - horizon
    ok = prev_tr >= 0
    ok[ok] &= tr_set[prev_tr[ok]]
    np.add.at(trans, (y_all[prev_tr[ok]], ytr[ok]), 1.0)
    trans /= trans.sum(axis=1, keepdims=True)
    return FittedBaselines(horizon=int(horizon), priors=prior, transition=trans, seed=int(seed))


def predict_baselines(
    fb: FittedBaselines, y_all: np.ndarray, test_idx: np.ndarray, seed: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (probs (N, C), pred (N,))} on ``test_idx`` from fitted baselines. Persistence reads
    ``y_all[t-h]`` (the last label known at t); where that is unknown it falls back to majority.
    ``seed`` (default ``fb.seed``) seeds the random baseline."""
    y_all = np.asarray(y_all, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    prior, C, h = fb.priors, len(fb.priors), fb.horizon
    n = len(test_idx)
    maj = fb.majority
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "majority": (np.tile(prior, (n, 1)), np.full(n, maj, dtype=np.int64))
    }
    prev = test_idx - h
    last = np.where(prev >= 0, y_all[np.maximum(prev, 0)], -1)
    known = last >= 0
    pers_pred = np.where(known, last, maj).astype(np.int64)
    pers_probs = np.where(known[:, None], fb.transition[np.maximum(last, 0)], prior)
    out["persistence"] = (pers_probs, pers_pred)
    rng = np.random.default_rng(fb.seed if seed is None else seed)
    out["random"] = (np.tile(prior, (n, 1)), rng.choice(C, size=n, p=prior).astype(np.int64))
    return out


def baseline_predictions(
    y_all: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, n_classes: int, horizon: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (probs (N, C), pred (N,))} for the baselines on ``test_idx``; fitted on ``train_idx``
    labels only. ``y_all`` is the full label array (persistence reads ``y[t-h]``, known at t)."""
    return predict_baselines(fit_baselines(y_all, train_idx, n_classes, horizon, seed), y_all, test_idx)


@dataclass
class FoldResult:
    index: int
    train_range: tuple[int, int]  # ns timestamps of first/last training sample
    test_range: tuple[int, int]
    n_train: int
    n_test: int
    metrics: dict[str, dict[str, Any]]  # "model" and each baseline -> classification_metrics
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch train/val loss
    best_epoch: int = 0
    y_test: np.ndarray | None = None
    probs_test: np.ndarray | None = None
    tuning: dict[str, Any] | None = None  # nested tuning of this fold: rows searched, best params
    fit: Any = field(default=None, repr=False, compare=False)  # the fold's fitted model (saved under folds/)
    seq_len: int = 0  # the fold model's window (its tuned value with --tune)

    def summary(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train_range": list(self.train_range),
            "test_range": list(self.test_range),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "best_epoch": self.best_epoch,
            "metrics": {
                k: {m: v for m, v in d.items() if m != "reliability"} | {"ece": d["reliability"]["ece"]}
                for k, d in self.metrics.items()
            },
        } | ({"tuning": self.tuning} if self.tuning else {})


def aggregate(results: Sequence[FoldResult], classes: Sequence[str]) -> dict[str, Any]:
    """Pooled out-of-sample metrics over all folds (model and baselines on the same samples),
    plus the per-fold mean accuracy / log-loss."""
    out: dict[str, Any] = {}
    for who in ("model",) + BASELINES:
        out[who] = {
            "mean_fold_accuracy": float(np.mean([r.metrics[who]["accuracy"] for r in results])),
            "mean_fold_log_loss": float(np.mean([r.metrics[who]["log_loss"] for r in results])),
            "mean_fold_brier": float(np.mean([r.metrics[who]["brier"] for r in results])),
            "mean_fold_ece": float(np.mean([r.metrics[who]["reliability"]["ece"] for r in results])),
        }
    if all(r.y_test is not None and r.probs_test is not None for r in results):
        y = np.concatenate([r.y_test for r in results])
        p = np.concatenate([r.probs_test for r in results])
        pooled = classification_metrics(y, p, classes)
        out["model"]["pooled"] = {k: v for k, v in pooled.items() if k != "reliability"} | {
            "ece": pooled["reliability"]["ece"]
        }
    return out


# --------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _ts(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def write_report(
    out_dir: Path | str, results: Sequence[FoldResult], classes: Sequence[str], header: dict[str, Any]
) -> dict[str, Any]:
    """Write ``report.md`` and PNG plots (if matplotlib is importable) into ``out_dir``.
    Returns {"report": path, "plots": [paths], "aggregate": aggregate(...)}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results, classes)
    who_all = ("model",) + BASELINES
    lines = ["# Training report", ""]
    for k, v in header.items():
        lines.append(f"- **{k}**: {v}")
    lines += [
        "",
        "All numbers are out-of-sample: each fold's model and the baselines are scored on the",
        "same test samples, with a purge gap >= horizon between train and test.",
        "",
        "## Summary (mean over folds)",
        "",
        "| predictor | accuracy | log-loss | Brier | ECE |",
        "|---|---:|---:|---:|---:|",
    ]
    for who in who_all:
        a = agg[who]
        lines.append(
            f"| {who} | {a['mean_fold_accuracy']:.4f} | {a['mean_fold_log_loss']:.4f} | "
            f"{a['mean_fold_brier']:.4f} | {a['mean_fold_ece']:.4f} |"
        )
    lines += ["", "## Per fold", ""]
    for r in results:
        lines += [
            f"### Fold {r.index}: train {_ts(r.train_range[0])} .. {_ts(r.train_range[1])} "
            f"({r.n_train} samples), test {_ts(r.test_range[0])} .. {_ts(r.test_range[1])} "
            f"({r.n_test} samples), best epoch {r.best_epoch}",
            "",
        ]
        cols = ["accuracy", "log_loss", "brier", "ece"] + [f"P({c})" for c in classes] + [f"R({c})" for c in classes]
        lines.append("| predictor | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for who in who_all:
            m = r.metrics[who]
            vals = [m["accuracy"], m["log_loss"], m["brier"], m["reliability"]["ece"]]
            vals += [m["precision"][c] for c in classes] + [m["recall"][c] for c in classes]
            lines.append(f"| {who} | " + " | ".join(_fmt(v) for v in vals) + " |")
        sup = r.metrics["model"]["support"]
        lines += ["", "test class support: " + ", ".join(f"{c}={sup[c]}" for c in classes), ""]
    if any(r.tuning for r in results):
        lines += [
            "## Nested tuning",
            "",
            "Each fold's hyperparameters were selected on inner folds inside its training rows only;",
            "the fold's test block above never took part in the selection.",
            "",
            "| fold | rows searched | trials | inner log-loss | chosen |",
            "|---|---|---:|---:|---|",
        ]
        for r in results:
            t = r.tuning or {}
            if t:
                lines.append(
                    f"| {r.index} | {t['rows'][0]}..{t['rows'][1] - 1} | {t['n_trials']} | "
                    f"{t['best_value']:.4f} | "
                    + ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["best_params"].items()
                    )
                    + " |"
                )
        lines.append("")
    rel = results[-1].metrics["model"]["reliability"] if results else None
    if rel:
        lines += [
            "## Reliability (model, last fold, top-class confidence)",
            "",
            "| bin | count | mean confidence | accuracy |",
            "|---|---:|---:|---:|",
        ]
        for i, cnt in enumerate(rel["count"]):
            if cnt:
                lines.append(
                    f"| {rel['edges'][i]:.1f}-{rel['edges'][i + 1]:.1f} | {cnt} | "
                    f"{rel['confidence'][i]:.4f} | {rel['accuracy'][i]:.4f} |"
                )
    plots = _plots(out, results, classes)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    else:
        lines += ["", "_matplotlib not installed (`pip install 'depthpilot[train]'`): no plots._"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return {"report": report, "plots": plots, "aggregate": agg}


def _plots(out: Path, results: Sequence[FoldResult], classes: Sequence[str]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    who_all = ("model",) + BASELINES
    # 1. per-fold accuracy and log-loss, model vs baselines
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    x = np.arange(len(results))
    w = 0.8 / len(who_all)
    for i, who in enumerate(who_all):
        axes[0].bar(x + i * w, [r.metrics[who]["accuracy"] for r in results], w, label=who)
        axes[1].bar(x + i * w, [r.metrics[who]["log_loss"] for r in results], w, label=who)
    for ax, t in zip(axes, ("accuracy", "log-loss")):
        ax.set_xticks(x + 0.4 - w / 2, [f"fold {r.index}" for r in results])
        ax.set_title(t)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    p = out / "folds.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    paths.append(p)
    # 2. reliability diagram, pooled over folds
    if all(r.y_test is not None for r in results) and results:
        y = np.concatenate([r.y_test for r in results])
        pr = np.concatenate([r.probs_test for r in results])
        rel = reliability_bins(y, pr)
        fig, ax = plt.subplots(figsize=(4, 4))
        conf = np.array([np.nan if v is None else v for v in rel["confidence"]])
        acc = np.array([np.nan if v is None else v for v in rel["accuracy"]])
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.plot(conf, acc, "o-", label=f"model (ECE {rel['ece']:.3f})")
        ax.set_xlabel("top-class confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("reliability (pooled folds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / "reliability.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    # 3. learning curves
    if any(r.history for r in results):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for r in results:
            if r.history:
                ax.plot([h["val_loss"] for h in r.history], label=f"fold {r.index} val")
                ax.plot([h["train_loss"] for h in r.history], ":", label=f"fold {r.index} train")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted CE loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / "learning_curves.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths
