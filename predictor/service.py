"""predictor service wiring: feature vectors in, smoothed signals out, stored in batches.

The model's manifest says which vectors it eats (feature kind/interval, spec hash, feature
names); vectors of another interval are ignored, a spec mismatch is refused loudly (counted
and logged, never silently fed to the model). ``reload_model`` over the control channel swaps
the model between two messages: nothing is dropped, and the new model is warmed on each symbol's
last vectors since the latest reset (replayed under the lock before the swap), so the very next
vector yields a signal of the new model -- the same one it would give had it been serving all along.

Time: the model is served on its own row clock (:mod:`predictor.clock`, seconds from the
manifest; a model without a fixed clock is refused at load). Windows and smoothing restart on
a gap longer than the clock's ``max_gap_s``, on an invalid vector and when the features service
flags a reset. A vector from the future (beyond ``INPUT_FUTURE_TOLERANCE_S`` of the wall clock
live, of the replay clock in replay) raises, so the bus dead-letters it with the reason, and
never touches state; one older than ``INPUT_MAX_AGE_S`` is dropped and counted. A symbol that
receives vectors but yields no signal for ``PREDICTOR_SILENCE_S`` degrades the status
(:meth:`PredictorService.problems`), as do vectors off the model's clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from depthpilot import messages as m
from depthpilot.bus import Delivery
from depthpilot.paths import models_dir
from depthpilot.service import Service
from features.freshness import FutureInput, InputClock, InputGate, clock_mode
from predictor.artifact import load_artifact
from predictor.clock import model_clock
from predictor.inference import Predictor
from predictor.smoothing import DecisionSmoother, SmoothingConfig

log = logging.getLogger("depthpilot.predictor")


def resolve_model(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    cand = models_dir() / name_or_path
    if cand.is_dir():
        return cand
    raise FileNotFoundError(f"PREDICTOR_MODEL={name_or_path}: no model directory there or under {models_dir()}")


class _Loaded:
    """One loaded model with its column mapping and smoother (swapped as a unit)."""

    def __init__(self, path: Path, threads: int) -> None:
        art = load_artifact(path)
        self.path = path
        man = art.manifest
        self.clock = model_clock(man)  # ClockError: a model without a fixed row clock is refused
        self.predictor = Predictor(art, num_threads=threads, max_gap_ns=self.clock.max_gap_ns, row_ns=self.clock.row_ns)
        self.model_id = man.model_id
        self.spec_hash = man.spec_hash
        self.names = list(man.feature_names)
        self.interval = (man.features or {}).get("interval", "")
        self.smoother = DecisionSmoother(
            art.classes,
            SmoothingConfig.from_dict(
                {k: v for k, v in man.thresholds.items() if k in SmoothingConfig.__dataclass_fields__}
            ),
        )
        self._idx: dict[tuple[str, ...], np.ndarray] = {}
        # vectors a successor needs to resume where this model stands: a full window + smoother history
        self.warm_rows = self.predictor.seq_len + self.smoother.cfg.k - 1

    def columns(self, names: list[str]) -> np.ndarray:
        key = tuple(names)
        idx = self._idx.get(key)
        if idx is None:
            missing = [n for n in self.names if n not in names]
            if missing:
                raise ValueError(f"feature vector lacks {len(missing)} model columns, e.g. {missing[:3]}")
            idx = self._idx[key] = np.array([names.index(n) for n in self.names])
        return idx


class PredictorService(Service):
    name = "predictor"

    def setup(self) -> None:
        self._lock = threading.Lock()
        self.model = _Loaded(resolve_model(self.settings.predictor_model), self.settings.predictor_threads)
        self.skipped: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()  # future, dropped_old, resets
        s = self.settings
        self.clock = InputClock(
            clock_mode(s.pipeline_clock, s.collector_source),
            int(s.input_future_tolerance_s * 1e9),
            int(s.input_max_age_s * 1e9),
        )
        self.gate = InputGate(
            self.clock, self.counts, log.warning, "%s %s: vector %.1f s old (> %g s) dropped, %d so far"
        )
        self.mono = time.monotonic  # injectable for tests
        self._last_vec: dict[str, float] = {}  # monotonic time of the last vector per symbol
        self._since: dict[str, float] = {}  # ... of the last signal (or the first vector without one)
        self._last_skip: dict[str, str] = {}  # why the latest vector gave no signal
        self._recent: dict[str, deque] = {}  # per symbol: last (ts, values, names, valid) accepted
        self.signals = 0
        self.latency_ns: deque[int] = deque(maxlen=2000)  # collector had the book -> signal made
        self.writer = None
        if self.store is not None:
            from depthpilot.store import BatchWriter

            self.writer = BatchWriter(self.store, "signals", max_size=500, max_age_s=1.0)
            self.flush_periodically(self.writer)
        c = self.model.clock
        log.info(
            "predictor: model %s (spec %s, %s vectors) on a %g s row clock (%s): window %g s, horizon %g s, "
            "max gap %g s; %s clock for input freshness",
            self.model.model_id,
            self.model.spec_hash,
            self.model.interval or "snapshot",
            c.row_interval_s,
            c.source,
            c.seq_len_s,
            c.horizon_s,
            c.max_gap_s,
            self.clock.mode,
        )
        self.bus.subscribe("predictor.features", self._on_features)

    def _skip(self, reason: str, fv: m.FeatureVector, detail: str = "") -> None:
        self.skipped[reason] += 1
        n = self.skipped[reason]
        if n == 1 or n % 1000 == 0:
            log.warning("%s %s: vector skipped (%s) %s [%d so far]", fv.exchange, fv.symbol, reason, detail, n)

    def _on_features(self, msg: m.Message, d: Delivery) -> None:
        if not isinstance(msg, m.FeatureVector):
            raise TypeError(f"predictor.features got {msg.type_name}")
        with self._lock:
            mdl = self.model
            if msg.interval != mdl.interval:
                self.skipped["other_interval"] += 1
                return
            key = f"{msg.exchange}:{msg.symbol}"
            now = self.mono()
            self._last_vec[key] = now
            self._since.setdefault(key, now)
            try:  # before anything else: a vector from the future must not touch any state
                fresh = self.gate.admit(
                    msg.ts,
                    f"{msg.exchange} {msg.symbol} feature vector",
                    stream=key,
                    log_args=(msg.exchange, msg.symbol),
                )
            except FutureInput:
                self._last_skip[key] = "from the future"
                raise  # -> predictor.features.dlq with the reason
            if not fresh:
                self._last_skip[key] = "too old"
                return
            if msg.spec_hash != mdl.spec_hash:
                self._skip("spec_mismatch", msg, f"vector spec {msg.spec_hash} != model spec {mdl.spec_hash}")
                self._last_skip[key] = "spec mismatch"
                return
            try:
                x = msg.values[mdl.columns(msg.names)]
            except ValueError as exc:
                self._skip("columns", msg, str(exc))
                self._last_skip[key] = "missing columns"
                return
            before = mdl.predictor.stats["off_clock"]
            probs = mdl.predictor.push(key, msg.ts, x if msg.valid else np.full_like(x, np.nan), reset=msg.reset)
            recent = self._recent.get(key)
            if recent is None:
                recent = self._recent[key] = deque(maxlen=mdl.warm_rows)
            if mdl.predictor.last_reset:
                mdl.smoother.reset(key)  # smoothing never mixes probabilities from both sides of a reset
                recent.clear()  # nor does a successor model warm up on rows from before it
                self.counts["resets"] += 1
                log.info("%s %s: window and smoothing reset (%s)", msg.exchange, msg.symbol, mdl.predictor.last_reset)
            off = mdl.predictor.stats["off_clock"] != before
            if not off and (not recent or msg.ts > recent[-1][0]):  # a redelivered/stale vector is not history
                recent.append((msg.ts, msg.values, msg.names, msg.valid, msg.reset))
            if probs is None:  # warm-up / invalid / stale / off-clock vector: counted in predictor.stats
                self._last_skip[key] = "off the model's clock" if off else "warm-up / invalid / stale vector"
                if off:
                    self._skip(
                        "off_clock", msg, f"ts {msg.ts} is not on the model's {mdl.clock.row_interval_s:g} s clock"
                    )
                return
            self._since[key] = now
            self._last_skip.pop(key, None)
            decision = mdl.smoother.update(key, probs)
            sig = mdl.predictor.make_signal(msg.exchange, msg.symbol, msg.ts, probs, decision.decision)
            sig.trace.update({k: v for k, v in msg.trace.items() if k not in sig.trace})
            born = sig.trace.get("book.collected") or sig.trace.get("book.created")
            if born:
                self.latency_ns.append(time.time_ns() - born)
        self.bus.publish(sig)
        self.signals += 1
        if self.writer is not None:
            self.writer.add(sig)

    def _warm(self, new: _Loaded) -> int:
        """Replay each symbol's last vectors into ``new`` (caller holds the lock). Vectors of
        another spec/interval would be refused by ``new``: then its windows warm up from scratch."""
        old = self.model
        if (new.spec_hash, new.interval) != (old.spec_hash, old.interval):
            self._recent.clear()
            return 0
        warmed = 0
        for key, recent in self._recent.items():
            for ts, values, names, valid, reset in recent:
                try:
                    x = values[new.columns(names)]
                except ValueError:
                    break  # the new model needs columns these vectors lack
                probs = new.predictor.push(key, ts, x if valid else np.full_like(x, np.nan), reset=reset)
                if new.predictor.last_reset:
                    new.smoother.reset(key)
                if probs is not None:
                    new.smoother.update(key, probs)
            warmed += new.predictor.ready(key)
            self._recent[key] = deque(recent, maxlen=new.warm_rows)
        return warmed

    def silence_s(self) -> float:
        return self.settings.predictor_silence_s or (self.model.clock.seq_len_s + 30.0)

    def problems(self) -> list[str]:
        """Reasons for a degraded status (empty: ok): symbols receiving vectors but yielding no
        signal for longer than ``silence_s()``."""
        now = self.mono()
        limit = self.silence_s()
        out = []
        for key, last in list(self._last_vec.items()):
            quiet = now - self._since.get(key, now)
            if now - last <= limit and quiet > limit:
                out.append(
                    f"{key.replace(':', ' ')}: receives feature vectors but no signal for {quiet:.0f} s "
                    f"(> {limit:g} s; last vector: {self._last_skip.get(key, 'no reason recorded')})"
                )
        return out

    def stats(self) -> dict[str, float]:
        ps = self.model.predictor.stats
        out = {
            "signals": float(self.signals),
            "future": float(self.counts["future"]),
            "dropped_old": float(self.counts["dropped_old"]),
            "resets": float(self.counts["resets"]),
            "late": float(ps["stale_ts"]),
            "off_clock": float(ps["off_clock"]),
            "problems": float(len(self.problems())),
        }
        if self.latency_ns:
            lat = np.fromiter(self.latency_ns, dtype=np.int64, count=len(self.latency_ns)) / 1e6
            out["latency_ms_p50"], out["latency_ms_p99"] = (float(x) for x in np.percentile(lat, [50, 99]))
        out.update({f"skipped.{k}": float(v) for k, v in self.skipped.items()})
        out.update({f"model.{k}": float(v) for k, v in self.model.predictor.stats.items()})
        return out

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command == "status":  # status and problems: filled in by Service from the heartbeat
            return {
                "model_id": self.model.model_id,
                "spec_hash": self.model.spec_hash,
                "interval": self.model.interval,
                "clock": self.model.clock.to_dict(),
                "input_clock": self.clock.mode,
            }
        if cmd.command == "reload_model":
            target = str(cmd.args.get("model") or self.settings.predictor_model)
            new = _Loaded(resolve_model(target), self.settings.predictor_threads)  # load outside the lock
            with self._lock:
                warmed = self._warm(new)
                old, self.model = self.model, new
            log.info("model reloaded: %s -> %s (%d symbols warm)", old.model_id, new.model_id, warmed)
            return {
                "old_model_id": old.model_id,
                "model_id": new.model_id,
                "spec_hash": new.spec_hash,
                "warm_symbols": warmed,
            }
        return None


SERVICE = PredictorService
