"""The rows a model is served on, with their label prices: one definition for trading, forecast
metrics, optimisation and the persistence baseline.

* a per-snapshot model on the event clock: one row per book (``model_probs``), priced at the mid;
* a per-snapshot model on a sampled clock (``FeatureSpec.sample_interval_s``): one row per tick
  (``sampled_probs``, the predictor service's own step), priced at the tick's ``mid`` feature
  (the last book at or before the tick), exactly the rows ``predictor.sources.from_books`` trains
  and labels on;
* a candle model: one row per closed candle (``candle_rows``), priced at the candle's close, the
  rows ``predictor.sources.from_klines`` trains on.

Labels are counted in these rows, so a horizon of 20 on a 100 ms clock is 2 s whatever the book
rate. Row ``i``'s inputs use data up to its time only; its label uses later rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest.data import Books
from backtest.signals import SignalStream, feature_matrix, model_probs, model_spec, window_ends


@dataclass
class ModelRows:
    ts: np.ndarray  # (N,) row times, ns
    price: np.ndarray  # (N,) the price labels are computed on (NaN where the row has none)
    X: np.ndarray  # (N, F) the model's inputs (raw, unscaled), NaN rows where there is none
    stream: SignalStream  # probabilities on these rows (``stream.ts`` None = one row per book)
    clock: str  # "book" | "sampled 0.1 s" | "candle 60 s"


def feature_kind(pred: Any) -> str:
    feats = pred.artifact.manifest.features or {}
    return str(feats.get("kind", "snapshot")) if isinstance(feats, dict) else "snapshot"


def _ttl(pred: Any) -> int:
    return int(float(pred.thresholds.get("signal_ttl_s", 120.0)) * 1e9)


def book_rows(pred: Any, books: Books) -> ModelRows:
    """The rows of a per-snapshot model over ``books`` (module doc)."""
    spec = model_spec(pred)
    if not spec.sample_interval_s:
        X = feature_matrix(pred, books)
        return ModelRows(books.ts, books.mid(), X, model_probs(pred, books, X), "book")
    from features.engine import feature_rows
    from features.spec import feature_names

    bids, asks = books.bids, books.asks
    if not books.valid.all():  # refused like the streaming engine does
        bids = np.where(books.valid[:, None, None], bids, np.nan)
        asks = np.where(books.valid[:, None, None], asks, np.nan)
    tick, Xall, reset = feature_rows(spec, books.ts, (bids, asks))
    names = feature_names(spec)
    if "mid" not in names:
        raise ValueError(f"model {pred.model_id}: its feature spec has no 'mid' column to label on")
    X = Xall[:, [names.index(n) for n in pred.feature_names]]
    probs = push_rows(pred, tick, X, reset, f"{books.exchange}:{books.symbol}:backtest")
    stream = SignalStream("model", list(pred.classes), probs, _ttl(pred), pred.model_id, ts=tick)
    return ModelRows(tick, Xall[:, names.index("mid")], X, stream, f"sampled {spec.sample_interval_s:g} s")


def push_rows(pred: Any, ts: np.ndarray, X: np.ndarray, reset: np.ndarray | None, key: str) -> np.ndarray:
    """Row by row through ``Predictor.push`` (the service's incremental step); NaN where no output."""
    pred.reset(key)
    probs = np.full((len(ts), len(pred.classes)), np.nan)
    for i, t in enumerate(ts.tolist()):
        p = pred.push(key, t, X[i], reset=bool(reset[i]) if reset is not None else False)
        if p is not None:
            probs[i] = p
    pred.reset(key)
    return probs


def batched_probs(pred: Any, ts: np.ndarray, X: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The batched form of :func:`push_rows` without reset flags (``model_probs``' window rules)."""
    S = pred.seq_len
    ends, acc = window_ends(ts, X, S)
    probs = np.full((len(ts), len(pred.classes)), np.nan)
    if ends.size:
        pos = np.searchsorted(acc, ends)
        Xa = X[acc]
        win = np.lib.stride_tricks.sliding_window_view(Xa, (S, Xa.shape[1]))[:, 0]
        probs[ends] = pred.predict_windows(win[pos - S + 1], batch=batch)
    return probs


def candle_rows(pred: Any, candles: dict[str, np.ndarray]) -> ModelRows:
    """The rows of a candle model: one per closed candle (``candles``: ts = close time, open, high,
    low, close, volume, in time order), its indicators from :func:`features.candles.candle_features`
    (the live service's code), probabilities at each close."""
    from features.candles import candle_features

    spec = candle_spec(pred)
    ts = np.asarray(candles["ts"], dtype=np.int64)
    if ts.size > 1 and (np.diff(ts) <= 0).any():
        raise ValueError("candles: ts must increase")
    Xall, names = candle_features(spec, candles)
    missing = [n for n in pred.feature_names if n not in names]
    if missing:
        raise ValueError(f"model {pred.model_id}: features {missing[:5]} are not produced by its candle spec")
    X = Xall[:, [names.index(n) for n in pred.feature_names]]
    gaps = np.diff(ts) if ts.size > 1 else np.zeros(0, dtype=np.int64)
    if gaps.size and (gaps != spec.interval_ns).any():
        bad = int(np.flatnonzero(gaps != spec.interval_ns)[0])
        raise ValueError(
            f"candles: not on the model's {spec.interval_s:g} s clock at row {bad + 1} (gap {gaps[bad]} ns)"
        )
    probs = batched_probs(pred, ts, X)
    stream = SignalStream("model", list(pred.classes), probs, _ttl(pred), pred.model_id, ts=ts)
    return ModelRows(ts, np.asarray(candles["close"], dtype=np.float64), X, stream, f"candle {spec.interval_s:g} s")


def candle_spec(pred: Any):
    from features.spec import FeatureSpec

    feats = pred.artifact.manifest.features or {}
    if feature_kind(pred) != "candle" or "spec" not in feats:
        raise ValueError(f"model {pred.model_id}: not a candle model with a features.spec")
    return FeatureSpec.from_dict(feats["spec"])


def tick_prices(books: Books, ts: np.ndarray) -> np.ndarray:
    """The mid of the last valid book at or before each time (NaN before the first one)."""
    mid = books.mid()
    ok = np.flatnonzero(np.isfinite(mid))
    pos = np.searchsorted(books.ts[ok], ts, side="right") - 1
    out = np.full(ts.shape, np.nan)
    has = pos >= 0
    out[has] = mid[ok[pos[has]]]
    return out
