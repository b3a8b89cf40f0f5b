"""Decision smoothing (the seed system's rules), pure: probability history in, decision out.

Given the last K probability vectors of one symbol (oldest first):

1. ``mean``   -- average them: ``p = mean(last K)``; the candidate is ``argmax(p)``.
2. ``prob_threshold`` -- the candidate's averaged probability must be >= this, else "flat".
3. ``require_agree`` -- every one of the last K arg-maxes must equal the candidate, else "flat".
4. ``score_threshold`` -- ``|P(up) - P(down)|`` of the averaged vector must be >= this, else
   "flat" (for a "flat" candidate this rule is not applied).

Decisions are class names ("up", "down", "flat"); ``""`` means "no decision yet" (fewer than K
vectors). A binary model (classes ["flat", "up"]) never yields "down".
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["SmoothingConfig", "Decision", "score_from_probs", "decide", "DecisionSmoother"]


@dataclass(frozen=True)
class SmoothingConfig:
    k: int = 3
    prob_threshold: float = 0.0
    score_threshold: float = 0.0
    require_agree: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.prob_threshold <= 1.0:
            raise ValueError(f"prob_threshold must be in [0, 1], got {self.prob_threshold}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SmoothingConfig":
        return cls(**{k: d[k] for k in ("k", "prob_threshold", "score_threshold", "require_agree") if k in d})


@dataclass(frozen=True)
class Decision:
    decision: str  # class name, or "" when not enough history
    probs: np.ndarray  # averaged probabilities
    score: float  # P(up) - P(down) of the averaged probabilities
    reason: str  # "ok", "warmup", "prob_threshold", "disagree", "score_threshold"


def score_from_probs(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray | float:
    """P(up) - P(down) (a missing class counts as 0), in [-1, 1]. Works on (C,) or (N, C)."""
    p = np.asarray(probs, dtype=np.float64)
    up = p[..., list(classes).index("up")] if "up" in classes else 0.0
    down = p[..., list(classes).index("down")] if "down" in classes else 0.0
    s = up - down
    return float(s) if np.ndim(s) == 0 else s


def decide(history: np.ndarray, classes: Sequence[str], cfg: SmoothingConfig) -> Decision:
    """Apply the rules to ``history`` (n, C), oldest first; only the last ``cfg.k`` rows count."""
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != len(classes):
        raise ValueError(f"history must be (n, {len(classes)}), got {h.shape}")
    if len(h) < cfg.k:
        mean = h.mean(axis=0) if len(h) else np.full(len(classes), np.nan)
        return Decision("", mean, float("nan") if not len(h) else float(score_from_probs(mean, classes)), "warmup")
    last = h[-cfg.k :]
    mean = last.mean(axis=0)
    score = float(score_from_probs(mean, classes))  # mean is (C,): one score
    cand = int(np.argmax(mean))
    flat = "flat" if "flat" in classes else classes[cand]
    name = classes[cand]
    if mean[cand] < cfg.prob_threshold:
        return Decision(flat, mean, score, "prob_threshold")
    if cfg.require_agree and not np.all(last.argmax(axis=1) == cand):
        return Decision(flat, mean, score, "disagree")
    if name != "flat" and abs(score) < cfg.score_threshold:
        return Decision(flat, mean, score, "score_threshold")
    return Decision(name, mean, score, "ok")


class DecisionSmoother:
    """Keeps the last K probability vectors per symbol and applies :func:`decide`.
    State only (no I/O); ``reset(symbol)`` when the symbol's stream breaks."""

    def __init__(self, classes: Sequence[str], cfg: SmoothingConfig):
        self.classes = list(classes)
        self.cfg = cfg
        self._hist: dict[str, deque] = {}

    def update(self, symbol: str, probs: np.ndarray) -> Decision:
        d = self._hist.setdefault(symbol, deque(maxlen=self.cfg.k))
        d.append(np.asarray(probs, dtype=np.float64))
        return decide(np.stack(d), self.classes, self.cfg)

    def reset(self, symbol: str | None = None) -> None:
        if symbol is None:
            self._hist.clear()
        else:
            self._hist.pop(symbol, None)
