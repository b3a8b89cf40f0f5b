"""Signals over a whole recording: features -> model (batched) and the persistence baseline.

:func:`model_probs` is the batched form of feeding every book to
:class:`features.engine.StreamingFeatures` and :meth:`predictor.inference.Predictor.push` one
at a time: the same feature kernels (:func:`features.engine.batch_features`), the same window
rules (an invalid vector resets the window, a timestamp not after the last one is dropped,
``seq_len`` consecutive valid vectors before the first output) and one batched forward pass over
all windows. ``tests/backtest`` checks both give the same probabilities.

Probabilities of row ``i`` only use books ``<= i``: a signal at a book's time, no lookahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backtest.data import Books
from depthpilot.messages import Signal


@dataclass
class SignalStream:
    """Class probabilities per book row (NaN rows = no signal at that book)."""

    name: str
    classes: list[str]
    probs: np.ndarray  # (T, C)
    ttl_ns: int
    model_id: str = ""
    ts: np.ndarray | None = None  # (T,) row times when rows are sampled ticks, not books (None = per book)

    @property
    def has(self) -> np.ndarray:
        return np.isfinite(self.probs).all(axis=1)

    def signals(self, books: Books) -> list[Signal | None]:
        """A :class:`Signal` per row (None where there is none); rows are books (``ts`` None)."""
        if self.ts is not None:
            raise ValueError(f"{self.name}: rows are sampled ticks; use events()")
        return self._make(books, books.ts)

    def events(self, books: Books) -> list[list[Signal]]:
        """The signals to hand to the engine after each book: a per-book stream's own row; a
        sampled stream's tick ``t`` after the last book at or before ``t`` (where the features
        service emits it: once a later book has shown that the tick has passed)."""
        out: list[list[Signal]] = [[] for _ in range(len(books))]
        if self.ts is None:
            for i, s in enumerate(self._make(books, books.ts)):
                if s is not None:
                    out[i].append(s)
            return out
        row = np.searchsorted(books.ts, self.ts, side="right") - 1
        for j, s in enumerate(self._make(books, self.ts)):
            if s is not None and row[j] >= 0:
                out[int(row[j])].append(s)
        return out

    def _make(self, books: Books, row_ts: np.ndarray) -> list[Signal | None]:
        from predictor.smoothing import score_from_probs

        out: list[Signal | None] = [None] * len(row_ts)
        has = self.has
        idx = np.flatnonzero(has)
        if idx.size:
            scores = np.asarray(score_from_probs(self.probs[idx], self.classes), dtype=np.float64).tolist()
            probs = self.probs[idx].tolist()  # one conversion (the same Python floats as per row)
            times = np.asarray(row_ts)[idx].tolist()
            ex, sym, mid, cls, ttl, name = (
                books.exchange,
                books.symbol,
                self.model_id or self.name,
                self.classes,
                self.ttl_ns,
                self.name,
            )
            for j, i in enumerate(idx.tolist()):
                t = int(times[j])
                out[i] = Signal(
                    exchange=ex,
                    symbol=sym,
                    ts=t,
                    model_id=mid,
                    classes=cls,
                    probs=probs[j],
                    score=scores[j],
                    expires_at=t + ttl,
                    id=f"{name}-{i}",
                    trace={},
                )  # no uuid/clock per row
        return out


def load_model(path: Any | None = None):
    """A :class:`~predictor.inference.Predictor` for an artifact dir (default: the bundled book model)."""
    from pathlib import Path

    from predictor.inference import Predictor

    p = Path(path) if path else Path(__file__).resolve().parent.parent / "predictor" / "models" / "book-default"
    return Predictor.from_artifact(p)


def model_spec(pred: Any):
    from features.spec import FeatureSpec

    feats = pred.artifact.manifest.features or {}
    spec = feats.get("spec") if isinstance(feats, dict) else None
    if spec is None:
        raise ValueError(f"model {pred.model_id}: manifest has no features.spec")
    kind = feats.get("kind", "snapshot")
    if kind != "snapshot":
        raise ValueError(f"model {pred.model_id}: eats {kind!r} features; the backtest serves per-snapshot models")
    return FeatureSpec.from_dict(spec)


def feature_matrix(pred: Any, books: Books) -> np.ndarray:
    """The model's input columns for every row (all-NaN on invalid books)."""
    from features.engine import batch_features
    from features.spec import feature_names

    spec = model_spec(pred)
    bids, asks = books.bids, books.asks
    valid = books.valid
    if not valid.all():  # rows the replay flagged invalid are refused like the streaming engine does
        bids = np.where(valid[:, None, None], bids, np.nan)
        asks = np.where(valid[:, None, None], asks, np.nan)
    X = batch_features(spec, books.ts, (bids, asks))
    names = feature_names(spec)
    missing = [n for n in pred.feature_names if n not in names]
    if missing:
        raise ValueError(f"model {pred.model_id}: features {missing[:5]} are not produced by its spec")
    cols = [names.index(n) for n in pred.feature_names]
    return X[:, cols]


def window_ends(ts: np.ndarray, X: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows where ``Predictor.push`` would output, and the accepted rows in push order.

    Returns (ends, accepted): ``ends`` are row indices whose window (the last ``seq_len``
    accepted rows since the last reset) is complete; ``accepted`` the accepted row indices."""
    finite = np.isfinite(X).all(axis=1).tolist()
    tsl = ts.tolist()
    last = None
    run = 0
    ends: list[int] = []
    acc: list[int] = []
    for i, t in enumerate(tsl):
        if last is not None and t <= last:
            continue  # stale_ts: dropped, window untouched
        last = t
        if not finite[i]:
            run = 0  # invalid_vector: window reset
            continue
        run += 1
        acc.append(i)
        if run >= seq_len:
            ends.append(i)
    return np.asarray(ends, dtype=np.int64), np.asarray(acc, dtype=np.int64)


def model_probs(pred: Any, books: Books, X: np.ndarray | None = None, batch: int = 4096) -> SignalStream:
    """Batched model probabilities per book row (see the module doc). The services feed a model
    on a sampled clock one row per tick instead: :func:`sampled_probs`."""
    if X is None:
        X = feature_matrix(pred, books)
    S = pred.seq_len
    ends, acc = window_ends(books.ts, X, S)
    probs = np.full((len(books), len(pred.classes)), np.nan)
    if ends.size:
        pos = np.searchsorted(acc, ends)  # position of each end in the accepted sequence
        Xa = X[acc]
        win = np.lib.stride_tricks.sliding_window_view(Xa, (S, Xa.shape[1]))[:, 0]  # (n_acc - S + 1, S, F)
        probs[ends] = pred.predict_windows(win[pos - S + 1], batch=batch)
    ttl = int(float(pred.thresholds.get("signal_ttl_s", 120.0)) * 1e9)
    return SignalStream("model", list(pred.classes), probs, ttl, pred.model_id)


def sampled_probs(pred: Any, books: Books) -> SignalStream:
    """Probabilities on the model's sampled clock, row by row through ``Predictor.push`` with the
    features' reset flags: the predictor service's own arithmetic (the incremental LSTM step), so
    a backtest and the running services see the same numbers, not ones within 1e-5
    (:func:`backtest.model_rows.book_rows`, which also gives the rows' prices and inputs)."""
    from backtest.model_rows import book_rows

    return book_rows(pred, books).stream


def streaming_probs(pred: Any, books: Books) -> np.ndarray:
    """The reference: one book at a time through the streaming feature engine and ``push``."""
    from features.engine import StreamingFeatures

    spec = model_spec(pred)
    from features.spec import feature_names

    names = feature_names(spec)
    cols = [names.index(n) for n in pred.feature_names]
    sf = StreamingFeatures(spec)
    pred.reset(books.symbol)
    out = np.full((len(books), len(pred.classes)), np.nan)
    nanrow = np.full(len(pred.feature_names), np.nan)
    for i in range(len(books)):
        t = int(books.ts[i])
        x = sf.update(t, books.bids[i], books.asks[i]) if books.valid[i] else None
        p = pred.push(books.symbol, t, x[cols] if x is not None else nanrow)
        if p is not None:
            out[i] = p
    return out


def past_return_class(mid: np.ndarray, horizon: int, threshold: float, classes: Sequence[str]) -> np.ndarray:
    """Class of the move over the LAST ``horizon`` valid rows (known at the row): the
    persistence forecast "the next move repeats the last one". -1 where undefined."""
    out = np.full(mid.shape[0], -1, dtype=np.int64)
    ok = np.flatnonzero(np.isfinite(mid))
    if ok.size <= horizon:
        return out
    m = mid[ok]
    r = m[horizon:] / m[:-horizon] - 1.0
    up = classes.index("up") if "up" in classes else None
    down = classes.index("down") if "down" in classes else None
    flat = classes.index("flat") if "flat" in classes else None
    cls = np.full(r.shape[0], flat if flat is not None else -1, dtype=np.int64)
    if up is not None:
        cls[r > threshold] = up
    if down is not None:
        cls[r < -threshold] = down
    out[ok[horizon:]] = cls
    return out


def persistence_stream(
    books: Books,
    classes: Sequence[str],
    horizon: int,
    threshold: float,
    ttl_ns: int,
    confidence: float = 0.9,
    *,
    ts: np.ndarray | None = None,
    price: np.ndarray | None = None,
) -> SignalStream:
    """The persistence signal: probability ``confidence`` on the class of the last move over
    ``horizon`` rows. Rows are the books (``ts`` None) or the model's own rows (``ts``, ``price``:
    sampled ticks or candle closes), so the horizon counts the model's steps."""
    C = len(classes)
    if ts is not None and (price is None or price.shape != ts.shape):
        raise ValueError("persistence on the model's rows needs one price per row")
    mid = books.mid() if ts is None else np.asarray(price, dtype=np.float64)
    cls = past_return_class(mid, horizon, threshold, list(classes))
    probs = np.full((mid.shape[0], C), np.nan)
    ok = cls >= 0
    probs[ok] = (1.0 - confidence) / max(1, C - 1)
    probs[np.flatnonzero(ok), cls[ok]] = confidence
    return SignalStream("persistence", list(classes), probs, ttl_ns, "persistence", ts=ts)


def model_depth(pred: Any) -> int:
    """Book depth the model's features need (a candle model's books only carry the fills: 50)."""
    feats = pred.artifact.manifest.features or {}
    if isinstance(feats, dict) and feats.get("kind") == "candle":
        return 50
    return int(model_spec(pred).max_depth)
