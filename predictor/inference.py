"""Serving a trained artifact: per-symbol streaming windows and batched window inference.

``Predictor.push(symbol, ts, vector)`` feeds one feature vector and returns the class
probabilities of the window of the last ``seq_len`` vectors (or ``None`` with a counted reason).
``Predictor.predict_windows(windows)`` is the offline / multi-symbol batch path. Both give the same
probabilities for the same window (|diff| <= 1e-5; in practice ~1e-7, float32 summation order).

Why the streaming path is fast -- *pipelined windows* (chosen after measuring, see
bench/inference.py): the window model restarts the LSTM from a zero state at every window start,
so carrying one (h, c) per symbol across windows would NOT reproduce the window outputs. Instead
each symbol keeps ``seq_len`` windows in flight -- the windows starting at each of the last
``seq_len`` vectors, each with its own (h, c) per layer. A new vector advances *all* of them by one
step in a single batched matmul per layer (shape (seq_len, H) x (H, 4H)), starts a fresh window
(zero state) and completes the oldest one, whose top hidden state goes through the head. Every
window is still computed exactly from its own ``seq_len`` vectors starting at zero state -- the same
arithmetic as the offline model -- but a push costs one batched step instead of ``seq_len``
sequential GEMV steps, and the step runs as a TorchScript function under ``inference_mode``.
Measured with bench/inference.py on the 2-core box (batch 1, p50, same run): default model
(hidden 32 / 1 layer / seq 30 / 22 features): push ~40 us vs ~120 us eager ``model(x)`` (3.0x);
hidden 128 / 2 layers / seq 60: ~340 us vs ~900-1100 us (2.7-3.2x); max |diff| ~1e-7. Alternatives
measured and rejected: jit.trace+freeze of the whole window (1.3x on the large model), a numpy
LSTM (slower than oneDNN), inference_mode / set_num_threads(1) alone (1.1-1.8x).

Invalid input policy: a vector with NaN/inf or the wrong length **resets** that symbol's window
(the next ``seq_len`` valid vectors re-warm it), because an LSTM state that has seen a NaN is
poisoned for the rest of every window containing it. A vector whose ``ts`` is not after the
symbol's last ``ts`` is **dropped** (window untouched). With ``max_gap_ns`` set, a larger time gap
also resets the window (windows never span a feed outage). With ``row_ns`` set (the model's row
clock, :mod:`predictor.clock`), a vector whose spacing from the last one is not a whole number of
rows is **refused** (``off_clock``, window untouched). ``push(..., reset=True)`` restarts the
window at this vector (the features service restarted its state: resync, invalid book, gap).
Each ``None`` is counted in ``stats`` under its reason: ``warmup``, ``invalid_vector``,
``stale_ts``, ``off_clock``; ``gap_reset`` and ``upstream_reset`` are counted too, and
``last_reset`` names the reset the latest push caused ("" for none) so the caller can restart
its smoothing too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from predictor.artifact import LoadedArtifact, load_artifact
from predictor.smoothing import score_from_probs

__all__ = ["Predictor", "PredictorError"]


class PredictorError(ValueError):
    """Bad input to the batch inference API (shape / dtype)."""


def _pipelined_step_py(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    wih: List[torch.Tensor],
    whh: List[torch.Tensor],
    b: List[torch.Tensor],
    head_w: torch.Tensor,
    head_b: torch.Tensor,
    start: int,
    done: int,
) -> torch.Tensor:
    """Advance all in-flight windows of one symbol by the scaled vector ``x`` (1, F).

    h, c: (L, S, H) state of the S in-flight windows (updated in place); slot ``start`` begins a
    new window (zeroed first); slot ``done`` holds the window that has now seen S vectors.
    Gate order (i, f, g, o) as in torch.nn.LSTM. Returns softmax probs (C,) of slot ``done``.
    """
    h[:, start] = 0.0
    c[:, start] = 0.0
    inp = x
    H = h.size(2)
    for layer in range(len(wih)):
        g = torch.addmm(torch.addmm(b[layer], inp, wih[layer]), h[layer], whh[layer])
        s = torch.sigmoid(g)  # one call for i, f, o (the g-gate slice is unused)
        c_new = torch.addcmul(s[:, H : 2 * H] * c[layer], s[:, :H], torch.tanh(g[:, 2 * H : 3 * H]))
        c[layer].copy_(c_new)
        torch.mul(s[:, 3 * H :], torch.tanh(c_new), out=h[layer])
        inp = h[layer]
    logits = torch.addmm(head_b.unsqueeze(0), h[h.size(0) - 1, done].unsqueeze(0), head_w)
    return torch.softmax(logits, dim=1)[0]


def _script(fn):
    """TorchScript the step (~15% less per-call overhead than the Python function on the default
    model: 33 vs 39 us); plain Python if this
    torch cannot script it (``torch.jit`` is deprecated upstream) -- same arithmetic either way."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception:  # noqa: BLE001 - any scripting failure: fall back to the eager function
        return fn


_pipelined_step = _script(_pipelined_step_py)


@dataclass
class _SymbolState:
    buf: np.ndarray  # (2*S, F) raw vectors, each written twice so buf[p+1 : p+1+S] is the window
    h: torch.Tensor  # (L, S, H)
    c: torch.Tensor
    n: int = 0  # valid vectors since the last reset
    last_ts: int | None = None


class Predictor:
    """Loaded model + per-symbol streaming state. Not thread-safe (one per consumer thread)."""

    def __init__(
        self,
        artifact: LoadedArtifact,
        *,
        num_threads: int | None = None,
        max_gap_ns: int | None = None,
        row_ns: int | None = None,
    ):
        if num_threads:
            torch.set_num_threads(num_threads)  # process-wide; 1 is best for batch-1 serving
        self.artifact = artifact
        man = artifact.manifest
        self.model = artifact.model.eval()
        self.model_id = man.model_id
        self.spec_hash = man.spec_hash
        self.classes = list(man.classes)
        self.feature_names = list(man.feature_names)
        self.seq_len = int(man.seq_len)
        self.n_features = len(self.feature_names)
        self.thresholds = dict(man.thresholds)
        self.max_gap_ns = max_gap_ns
        self.row_ns = row_ns
        self.last_reset = ""
        self._mean = artifact.scaler.mean.astype(np.float64)
        self._scale = artifact.scaler.scale.astype(np.float64)
        lstm = self.model.lstm
        L = lstm.num_layers
        self._L, self._H = L, lstm.hidden_size
        with torch.no_grad():
            self._wih = [getattr(lstm, f"weight_ih_l{k}").detach().t().contiguous() for k in range(L)]
            self._whh = [getattr(lstm, f"weight_hh_l{k}").detach().t().contiguous() for k in range(L)]
            self._b = [
                (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach().contiguous()
                for k in range(L)
            ]
            self._head_w = self.model.head.weight.detach().t().contiguous()
            self._head_b = self.model.head.bias.detach().contiguous()
        self._xbuf64 = np.zeros(self.n_features)
        self._xbuf = np.zeros((1, self.n_features), dtype=np.float32)
        self._xt = torch.from_numpy(self._xbuf)  # shares memory with self._xbuf
        self._state: dict[str, _SymbolState] = {}
        self.stats: Counter[str] = Counter()

    @classmethod
    def from_artifact(cls, path: Path | str, expected_spec_hash: str | None = None, **kw) -> "Predictor":
        return cls(load_artifact(path, expected_spec_hash), **kw)

    # ------------------------------------------------------------------ streaming
    def _new_state(self) -> _SymbolState:
        S = self.seq_len
        return _SymbolState(
            buf=np.zeros((2 * S, self.n_features)),
            h=torch.zeros(self._L, S, self._H),
            c=torch.zeros(self._L, S, self._H),
        )

    def reset(self, symbol: str | None = None) -> None:
        if symbol is None:
            self._state.clear()
        else:
            self._state.pop(symbol, None)

    def push(self, symbol: str, ts: int, vector: np.ndarray, reset: bool = False) -> np.ndarray | None:
        """Feed one raw (unscaled) feature vector; probabilities (C,) float64 once ``seq_len``
        consecutive valid vectors were seen, else None (reason counted in ``stats``)."""
        self.last_reset = ""
        st = self._state.get(symbol)
        if st is None:
            st = self._state[symbol] = self._new_state()
        if st.last_ts is not None and ts <= st.last_ts:
            self.stats["stale_ts"] += 1
            return None
        if self.row_ns and st.last_ts is not None and (ts - st.last_ts) % self.row_ns:
            self.stats["off_clock"] += 1
            return None
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.n_features,) or not np.isfinite(v).all():
            if st.n:
                self.last_reset = "invalid vector (NaN/inf or wrong length)"
            self._state[symbol] = st = self._new_state()
            st.last_ts = ts
            self.stats["invalid_vector"] += 1
            return None
        if self.max_gap_ns is not None and st.last_ts is not None and ts - st.last_ts > self.max_gap_ns:
            self.last_reset = f"gap of {(ts - st.last_ts) / 1e9:g} s > {self.max_gap_ns / 1e9:g} s"
            self._state[symbol] = st = self._new_state()
            self.stats["gap_reset"] += 1
        elif reset and st.n:
            self._state[symbol] = st = self._new_state()
            self.stats["upstream_reset"] += 1
            self.last_reset = "features restarted (resync, invalid book or feed gap)"
        st.last_ts = ts
        S = self.seq_len
        p = st.n % S
        st.buf[p] = v
        st.buf[p + S] = v
        np.divide(v - self._mean, self._scale, out=self._xbuf64)  # same arithmetic as predict_windows
        self._xbuf[0] = self._xbuf64  # float32 cast into the buffer shared with self._xt
        with torch.inference_mode():  # ~4 us cheaper ops than grad mode, ~2 us to enter
            probs = _pipelined_step(
                self._xt, st.h, st.c, self._wih, self._whh, self._b, self._head_w, self._head_b, p, (p + 1) % S
            )
        st.n += 1
        if st.n < S:
            self.stats["warmup"] += 1
            return None
        self.stats["ok"] += 1
        return probs.numpy().astype(np.float64)

    def window(self, symbol: str) -> np.ndarray | None:
        """Raw (unscaled) window (seq_len, F) of the symbol's last vectors (oldest first), or None."""
        st = self._state.get(symbol)
        if st is None or st.n < self.seq_len:
            return None
        p = (st.n - 1) % self.seq_len
        return st.buf[p + 1 : p + 1 + self.seq_len].copy()

    def ready(self, symbol: str) -> bool:
        st = self._state.get(symbol)
        return st is not None and st.n >= self.seq_len

    # ------------------------------------------------------------------ batch
    def predict_windows(self, windows: np.ndarray, *, scaled: bool = False, batch: int = 4096) -> np.ndarray:
        """Probabilities (B, C) float64 for raw windows (B, seq_len, F) (``scaled=True``: already
        scaled). One batched forward pass per ``batch`` windows (many symbols at once)."""
        w = np.asarray(windows)
        if w.ndim != 3 or w.shape[1:] != (self.seq_len, self.n_features):
            raise PredictorError(f"windows must be (B, {self.seq_len}, {self.n_features}), got {w.shape}")
        if not scaled:
            w = (w.astype(np.float64) - self._mean) / self._scale
        w = np.ascontiguousarray(w, dtype=np.float32)
        if not np.isfinite(w).all():
            raise PredictorError("windows contain NaN/inf")
        out = []
        with torch.inference_mode():
            for i in range(0, len(w), batch):
                out.append(torch.softmax(self.model(torch.from_numpy(w[i : i + batch])), dim=-1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict_symbols(self, symbols: Sequence[str]) -> dict[str, np.ndarray]:
        """One batched forward over the current windows of the ready ``symbols``."""
        windows = {s: w for s in symbols if (w := self.window(s)) is not None}  # the ready ones
        if not windows:
            return {}
        probs = self.predict_windows(np.stack(list(windows.values())))
        return dict(zip(windows, probs))

    # ------------------------------------------------------------------ outputs
    def score(self, probs: np.ndarray) -> np.ndarray | float:
        """P(up) - P(down) in [-1, 1]. Binary models (classes ["flat", "up"]) have no "down" class,
        so their score is P(up) in [0, 1] (they never signal a short)."""
        return score_from_probs(probs, self.classes)

    def make_signal(
        self, exchange: str, symbol: str, ts: int, probs: np.ndarray, decision: str = "", ttl_ns: int | None = None
    ):
        """A :class:`depthpilot.messages.Signal` for these probabilities (expiry = ts + TTL;
        the TTL defaults to the artifact's ``signal_ttl_s``)."""
        from depthpilot.messages import Signal

        if ttl_ns is None:
            ttl_ns = int(float(self.thresholds.get("signal_ttl_s", 120.0)) * 1e9)
        return Signal(
            exchange=exchange,
            symbol=symbol,
            ts=int(ts),
            model_id=self.model_id,
            classes=list(self.classes),
            probs=[float(x) for x in probs],
            score=float(self.score(probs)),
            expires_at=int(ts) + int(ttl_ns),
            decision=decision,
        )
