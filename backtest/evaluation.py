"""How good a model's forecasts are on a new recording, and where the skill comes from. Pure.

* Classification metrics (:func:`predictor.evaluate.classification_metrics`) of the model and of
  the persistence baseline ("the next move's class is the last move's class", with
  P(next | last) counted ONLINE from the pairs already known at each row: no lookahead) on the
  same rows, labelled with the model's own label spec on the mid price.
* Direction, separately from "moves vs flat": AUC of the score P(up) - P(down) on the rows whose
  label is up or down; Spearman rank correlation of the score with the forward return; AUC of
  1 - P(flat) for "the price moves beyond the threshold".
* Drift: per feature, the share of rows outside the training 1 %-99 % quantiles when the manifest
  carries them (``feature_quantiles``) or training books are given; otherwise the share outside
  mean +- 3 sd of the training scaler, and the report says that the quantiles are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.99)


def labels_on_rows(mid: np.ndarray, label: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(labels per row, forward return per row), -1 / NaN where undefined; computed on the
    sequence of valid rows like training (``predictor.sources.from_books``)."""
    from predictor.labels import LabelSpec, Prices, forward_return, make_labels

    spec = LabelSpec.from_dict(label)
    y = np.full(mid.shape[0], -1, dtype=np.int64)
    fr = np.full(mid.shape[0], np.nan)
    ok = np.flatnonzero(np.isfinite(mid) & (mid > 0))
    if ok.size:
        y[ok] = make_labels(spec, Prices(close=mid[ok]))
        fr[ok] = forward_return(mid[ok], spec.horizon)
    return y, fr


def online_persistence(y_seq: np.ndarray, horizon: int, n_classes: int) -> np.ndarray:
    """Persistence probabilities on a sequence of labels (valid rows, in order): row t predicts
    from y[t-h] (known at t) with P(y | y[t-h]) counted over the pairs (y[s-h], y[s]) whose label
    y[s] is known by t (s + h <= t), Laplace-smoothed. NaN where y[t-h] is unknown."""
    n = y_seq.shape[0]
    out = np.full((n, n_classes), np.nan)
    counts = np.ones((n_classes, n_classes))
    for t in range(n):
        s = t - horizon  # the newest label that became known at t is y[s]
        if s - horizon >= 0 and y_seq[s] >= 0 and y_seq[s - horizon] >= 0:
            counts[y_seq[s - horizon], y_seq[s]] += 1.0
        if t - horizon >= 0 and y_seq[t - horizon] >= 0:
            row = counts[y_seq[t - horizon]]
            out[t] = row / row.sum()
    return out


def direction_metrics(y: np.ndarray, probs: np.ndarray, fwd: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from predictor.smoothing import score_from_probs

    cl = list(classes)
    score = np.asarray(score_from_probs(probs, cl), dtype=np.float64)
    out: dict[str, Any] = {}
    if "up" in cl and "down" in cl:
        up, down = cl.index("up"), cl.index("down")
        m = (y == up) | (y == down)
        out["direction_rows"] = int(m.sum())
        out["direction_auc"] = (
            float(roc_auc_score(y[m] == up, score[m])) if len(set((y[m] == up).tolist())) == 2 else float("nan")
        )
    if "flat" in cl:
        flat = cl.index("flat")
        mv = y != flat
        out["move_auc"] = float(roc_auc_score(mv, 1.0 - probs[:, flat])) if 0 < mv.sum() < len(y) else float("nan")
    f = np.isfinite(fwd)
    if f.sum() > 2:
        rho = spearmanr(score[f], fwd[f])
        out["score_return_spearman"] = float(rho.statistic)
        out["score_return_spearman_p"] = float(rho.pvalue)
    return out


def drift(X: np.ndarray, names: Sequence[str], manifest: Any, train_X: np.ndarray | None = None) -> dict[str, Any]:
    """Per-feature share of valid rows outside the training range (see the module doc)."""
    rows = X[np.isfinite(X).all(axis=1)]
    q = (
        manifest.__dict__.get("feature_quantiles") or (manifest.metrics or {}).get("feature_quantiles")
        if manifest is not None
        else None
    )
    if train_X is not None:
        tr = train_X[np.isfinite(train_X).all(axis=1)]
        lo, hi = np.quantile(tr, QUANTILES[0], axis=0), np.quantile(tr, QUANTILES[1], axis=0)
        how = f"training books given: outside their {QUANTILES[0]:.0%}-{QUANTILES[1]:.0%} quantiles"
        missing = ""
    elif q:
        lo = np.array([q[n][0] for n in names])
        hi = np.array([q[n][1] for n in names])
        how = "outside the manifest's training quantiles"
        missing = ""
    else:
        mean = np.asarray(manifest.scaler["mean"], dtype=np.float64)
        sd = np.asarray(manifest.scaler["scale"], dtype=np.float64)
        lo, hi = mean - 3 * sd, mean + 3 * sd
        how = "outside mean +- 3 sd of the training scaler (a proxy)"
        missing = (
            "the manifest has no training quantiles (feature_quantiles); pass --train-books with the "
            "training recording for the exact check"
        )
    if rows.shape[0] == 0:
        return {"method": how, "missing": missing, "rows": 0, "features": {}}
    # a constant training feature (lo == hi) only counts rows that differ from it
    outside = ((rows < lo - 1e-12) | (rows > hi + 1e-12)).mean(axis=0)
    per = {n: float(v) for n, v in zip(names, outside)}
    ranked = dict(sorted(per.items(), key=lambda kv: -kv[1]))
    return {
        "method": how,
        "missing": missing,
        "rows": int(rows.shape[0]),
        "mean_share_outside": float(outside.mean()),
        "features_mostly_outside": int((outside > 0.5).sum()),
        "features": ranked,
    }


def evaluate_forecasts(
    mid: np.ndarray,
    probs: np.ndarray,
    label: dict[str, Any],
    classes: Sequence[str],
    *,
    mask: np.ndarray | None = None,
    stored: Any | None = None,
    clock: str = "",
) -> dict[str, Any]:
    """Model vs persistence classification metrics + direction metrics on the same rows.

    Rows are the model's own rows (one per book, per sampled tick or per candle close: see
    :mod:`backtest.model_rows`), so the label horizon counts the model's steps. ``mask`` keeps
    only some rows for scoring (labels and persistence still read the rows around them);
    ``stored`` (:class:`predictor.evaluate.FittedBaselines`, the manifest's baselines fitted on the
    training labels) adds those baselines on the same rows."""
    from predictor.evaluate import BASELINES, classification_metrics, predict_baselines

    y, fwd = labels_on_rows(mid, label)
    C = len(classes)
    ok_rows = np.flatnonzero(np.isfinite(mid) & (mid > 0))
    pers_seq = online_persistence(y[ok_rows], int(label["horizon"]), C)
    pers = np.full((mid.shape[0], C), np.nan)
    pers[ok_rows] = pers_seq
    use = (y >= 0) & np.isfinite(probs).all(axis=1) & np.isfinite(pers).all(axis=1)
    if mask is not None:
        use &= mask
    if not use.any():
        return {"rows": 0, "note": "no row has a label, a model output and a persistence forecast"}
    yy = y[use]
    res = {
        "rows": int(use.sum()),
        "clock": clock,
        "label": label.get("description", ""),
        "label_share": {c: float(np.mean(yy == i)) for i, c in enumerate(classes)},
        "model": classification_metrics(yy, probs[use], classes),
        "persistence": classification_metrics(yy, pers[use], classes),
    }
    res["model"].update(direction_metrics(yy, probs[use], fwd[use], classes))
    res["persistence"].update(direction_metrics(yy, pers[use], fwd[use], classes))
    for k in ("model", "persistence"):
        res[k].pop("reliability", None)
    if stored is not None:  # on the sequence of priced rows, as the training labels were
        idx = np.flatnonzero(use[ok_rows])
        base = predict_baselines(stored, y[ok_rows], idx)
        res["stored_baselines"] = {}
        for name in BASELINES:
            bp, bpred = base[name]
            m = classification_metrics(yy, bp, classes, pred=bpred)
            m.pop("reliability", None)
            res["stored_baselines"][name] = m
    return res
