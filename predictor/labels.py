"""Training labels from prices: pure functions, no I/O.

Two label kinds (``LabelSpec.kind``):

* ``"binary_high"`` -- 1 ("up") if ``max(high[t+1 .. t+h]) >= close[t] * (1 + threshold)``, else 0
  ("flat"): "does price touch +X% within the next h bars". Classes ``["flat", "up"]``.
* ``"updown"`` -- 3-class on the forward return ``r = close[t+h] / close[t] - 1``:
  "down" if ``r < -threshold``, "up" if ``r > threshold``, else "flat".
  Classes ``["down", "flat", "up"]``.

Time convention: the label at ``t`` uses bars ``t+1 .. t+h`` only; features at ``t`` must use bars
``<= t``. The last ``h`` rows have no label (``-1``). A label at ``t`` becomes *known* at ``t+h``,
which is why train/test folds need a purge gap of at least ``h`` (see :mod:`predictor.dataset`).

Class names are chosen so a model's arg-max maps directly onto ``Signal.decision``
("up" / "down" / "flat"); a binary model simply has no "down" class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "LabelError",
    "ImbalancedLabels",
    "LabelSpec",
    "Prices",
    "make_labels",
    "forward_return",
    "class_counts",
    "check_label_balance",
    "UNLABELLED",
]

UNLABELLED = -1


class LabelError(ValueError):
    """Bad label definition or price input."""


class ImbalancedLabels(LabelError):
    """The label parameters leave a class (almost) empty: a model would learn one class."""

    def __init__(self, counts: dict[str, int], min_share: float, spec: "LabelSpec"):
        self.counts = counts
        self.min_share = min_share
        n = max(sum(counts.values()), 1)
        rare = [c for c, k in counts.items() if k < min_share * n]
        desc = ", ".join(f"{c}={k}" for c, k in counts.items())
        super().__init__(
            f"labels (horizon={spec.horizon}, threshold={spec.threshold:g}) leave class(es) {', '.join(rare)} "
            f"below {min_share:.0%} of {n} labelled rows ({desc}): lower --threshold or raise --horizon "
            f"(or pass --allow-imbalanced)"
        )


@dataclass(frozen=True)
class Prices:
    """Price arrays aligned with the feature rows (one row per bar / feature vector).

    ``close`` is required (use the mid price for book data). ``high``/``low`` are needed only by
    ``binary_high``; when absent the close (mid) path is used for the touch test.
    """

    close: np.ndarray
    high: np.ndarray | None = None
    low: np.ndarray | None = None

    def __post_init__(self) -> None:
        close = np.asarray(self.close, dtype=np.float64)
        if close.ndim != 1:
            raise LabelError(f"close must be 1-D, got shape {close.shape}")
        object.__setattr__(self, "close", close)
        for name in ("high", "low"):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float64)
                if arr.shape != close.shape:
                    raise LabelError(f"{name} shape {arr.shape} != close shape {close.shape}")
                object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.close)


@dataclass(frozen=True)
class LabelSpec:
    kind: Literal["binary_high", "updown"] = "updown"
    horizon: int = 5
    threshold: float = 0.0005

    def __post_init__(self) -> None:
        if self.kind not in ("binary_high", "updown"):
            raise LabelError(f"unknown label kind {self.kind!r} (expected 'binary_high' or 'updown')")
        if int(self.horizon) != self.horizon or self.horizon < 1:
            raise LabelError(f"horizon must be a positive integer, got {self.horizon!r}")
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise LabelError(f"threshold must be finite and >= 0, got {self.threshold!r}")

    @property
    def classes(self) -> list[str]:
        return ["flat", "up"] if self.kind == "binary_high" else ["down", "flat", "up"]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        if self.kind == "binary_high":
            return f"max(high[t+1..t+{self.horizon}]) >= close[t]*(1+{self.threshold:g}) -> up, else flat"
        return (
            f"r=close[t+{self.horizon}]/close[t]-1: up if r>{self.threshold:g}, "
            f"down if r<-{self.threshold:g}, else flat"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"classes": self.classes, "description": self.describe()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpec":
        try:
            return cls(kind=d["kind"], horizon=int(d["horizon"]), threshold=float(d["threshold"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelError(f"bad label definition {d!r}: {exc}") from exc


def forward_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """``close[t+h]/close[t] - 1``; NaN for the last ``h`` rows."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    if len(close) > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def _forward_max(x: np.ndarray, horizon: int) -> np.ndarray:
    """max(x[t+1 .. t+h]); NaN where the window runs past the end."""
    out = np.full(x.shape, np.nan)
    n = len(x)
    if n > horizon:
        win = np.lib.stride_tricks.sliding_window_view(x[1:], horizon)  # win[t] = x[t+1..t+h]
        out[: n - horizon] = win.max(axis=1)[: n - horizon]
    return out


def make_labels(spec: LabelSpec, prices: Prices) -> np.ndarray:
    """int64 labels (class indices into ``spec.classes``); ``UNLABELLED`` (-1) where the future is
    not (yet) known -- the last ``horizon`` rows -- or a price is not finite/positive."""
    close = prices.close
    if len(close) == 0:
        raise LabelError("empty price series")
    h = spec.horizon
    y = np.full(len(close), UNLABELLED, dtype=np.int64)
    if spec.kind == "binary_high":
        hi = prices.high if prices.high is not None else close
        fmax = _forward_max(hi, h)
        ok = np.isfinite(fmax) & np.isfinite(close) & (close > 0)
        y[ok] = (fmax[ok] >= close[ok] * (1.0 + spec.threshold)).astype(np.int64)
    else:
        r = forward_return(close, h)
        ok = np.isfinite(r) & (close > 0)
        lab = np.ones(len(close), dtype=np.int64)  # flat
        lab[r > spec.threshold] = 2
        lab[r < -spec.threshold] = 0
        y[ok] = lab[ok]
    return y


def class_counts(y: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Labelled rows per class name (unlabelled rows not counted)."""
    c = np.bincount(y[y != UNLABELLED], minlength=len(classes))
    return {name: int(c[i]) for i, name in enumerate(classes)}


def check_label_balance(spec: LabelSpec, y: np.ndarray, min_share: float) -> dict[str, int]:
    """Class counts of ``y``; raise :class:`ImbalancedLabels` if any class holds fewer than
    ``min_share`` of the labelled rows (e.g. a threshold far above the typical move over the
    horizon labels nearly everything "flat")."""
    counts = class_counts(y, spec.classes)
    n = sum(counts.values())
    if n == 0 or min(counts.values()) < min_share * n:
        raise ImbalancedLabels(counts, min_share, spec)
    return counts
