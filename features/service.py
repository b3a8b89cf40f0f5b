"""features service wiring: book snapshots and trades in, feature vectors (and anomaly
RiskEvents) out, vectors sampled into the store in batches. All numbers come from the pure
:mod:`features.pipeline`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from depthpilot import messages as m
from depthpilot.bus import Delivery
from depthpilot.paths import models_dir
from depthpilot.service import Service
from features.freshness import InputClock, InputGate, clock_mode
from features.pipeline import SymbolPipeline
from features.spec import FeatureSpec

log = logging.getLogger("depthpilot.features")


def load_spec(path: str | None) -> FeatureSpec:
    """A FeatureSpec JSON file, or a model's ``manifest.json`` (the spec travels with the model)."""
    if not path:
        return FeatureSpec()
    try:
        d = json.loads(Path(path).read_text())
        if "spec_hash" in d and "features" in d:  # a model manifest
            spec = FeatureSpec.from_dict(d["features"]["spec"])
            if spec.hash != d["spec_hash"]:
                raise ValueError(f"manifest spec hashes to {spec.hash}, not its recorded {d['spec_hash']}")
            return spec
        return FeatureSpec.from_dict(d)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"FEATURES_SPEC_FILE={path}: {exc}") from exc


def default_spec_file(model: str) -> str | None:
    """Without FEATURES_SPEC_FILE, compute what the configured predictor model eats."""
    for cand in (Path(model) / "manifest.json", models_dir() / model / "manifest.json"):
        if cand.is_file():
            return str(cand)
    return None


class FeaturesService(Service):
    name = "features"

    def setup(self) -> None:
        s = self.settings
        self.spec = load_spec(s.features_spec_file or default_spec_file(s.predictor_model))
        self.emit = tuple(s.features_emit)
        self.pipelines: dict[tuple[str, str], tuple[threading.Lock, SymbolPipeline]] = {}
        self._pl_lock = threading.Lock()
        self.published = 0
        self.events = 0
        self.counts: Counter[str] = Counter()  # future, dropped_old
        self.clock = InputClock(
            clock_mode(s.pipeline_clock, s.collector_source),
            int(s.input_future_tolerance_s * 1e9),
            int(s.input_max_age_s * 1e9),
        )
        self.gate = InputGate(self.clock, self.counts, log.warning, "%s is %.1f s old (> %g s): dropped, %d so far")
        self._clock_logged: set[tuple[str, str]] = set()
        self.writer = None
        if self.store is not None and s.features_store:
            from depthpilot.store import BatchWriter

            self.writer = BatchWriter(self.store, "features", max_size=500, max_age_s=s.snapshot_store_interval_s)
            self.flush_periodically(self.writer)
        log.info(
            "features: spec %s, emitting %s, %s, %s clock for input freshness",
            self.spec.hash,
            ",".join(self.emit),
            f"books sampled every {self.spec.sample_interval_s:g} s"
            if self.spec.sample_interval_s
            else "one row per book",
            self.clock.mode,
        )
        self._wall: dict[tuple[str, str], int] = {}  # wall clock (monotonic ns) at each pipeline's last snapshot
        self.bus.subscribe("features.book", self._on_book)
        self.bus.subscribe("features.trades", self._on_trade)
        self.spawn(self._advance_loop, "blocks")
        self.backfill: dict[str, Any] = {}  # "<exchange> <symbol>" -> candles seeded / error
        if s.features_backfill != "off" and "candle" in self.emit and s.features_candles_from == "trades":
            self.spawn(self._backfill, "backfill")

    def _pipeline(self, exchange: str, symbol: str) -> tuple[threading.Lock, SymbolPipeline]:
        key = (exchange, symbol)
        with self._pl_lock:
            entry = self.pipelines.get(key)
            if entry is None:
                entry = self.pipelines[key] = (
                    threading.Lock(),
                    SymbolPipeline(
                        self.spec, exchange, symbol, self.emit, self.settings.features_candles_from, source=self.name
                    ),
                )
            return entry

    def _fresh(self, ts: int, what: str) -> bool:
        """Raise FutureInput (-> dead-letter with the reason) for an input from the future;
        False (counted) for one older than the maximum age. Neither touches any state."""
        return self.gate.admit(ts, what, stream=what, log_args=(what,))

    def _on_book(self, msg: m.Message, d: Delivery) -> None:
        if not isinstance(msg, m.BookSnapshot):
            raise TypeError(f"features.book got {msg.type_name}")
        if not self._fresh(msg.ts_exchange or msg.ts_recv, f"{msg.exchange} {msg.symbol} book"):
            return
        lock, pl = self._pipeline(msg.exchange, msg.symbol)
        with lock:
            before = sum(pl.rejected.values())
            out = pl.on_snapshot(msg)
            for r in out.resets:
                log.info("%s %s: feature state reset (%s)", msg.exchange, msg.symbol, r)
            if pl.clock_problem and (msg.exchange, msg.symbol) not in self._clock_logged:
                self._clock_logged.add((msg.exchange, msg.symbol))
                log.error("%s %s: %s", msg.exchange, msg.symbol, pl.clock_problem)
            elif not pl.clock_problem:
                self._clock_logged.discard((msg.exchange, msg.symbol))
            # carry the book's trace so latency can be measured from the exchange to the signal
            book_trace = {f"book.{k}": v for k, v in msg.trace.items()}
            for v in out.vectors:
                v.trace.update(book_trace)
            self._wall[(msg.exchange, msg.symbol)] = time.monotonic_ns()
            if sum(pl.rejected.values()) != before:
                reason = pl.snap.reason or msg.reason or "invalid"
                n = pl.rejected[reason]
                if n == 1 or n % 1000 == 0:
                    log.warning(
                        "%s %s: snapshot %s rejected (%s), %d so far", msg.exchange, msg.symbol, msg.seq, reason, n
                    )
        self._emit(out)

    def _backfill(self) -> None:
        """Seed each configured symbol's candle state from REST history or the stored trades
        (once, at start)."""
        from features.backfill import candles_from_store, fetch_candles

        s = self.settings
        for ex in s.exchanges:
            for sym in s.symbols:
                key = f"{ex} {sym}"
                try:
                    if s.features_backfill == "store":
                        if self.store is None:
                            raise RuntimeError("FEATURES_BACKFILL=store but the service has no store")
                        candles = candles_from_store(
                            self.store, ex, sym, self.spec.interval_s, s.features_backfill_candles
                        )
                    else:
                        candles = fetch_candles(
                            ex, sym, self.spec.interval_s, s.features_backfill_candles, api_base_url=s.ccxt_api_base_url
                        )
                except Exception as exc:  # noqa: BLE001 - retried inside; reported, the live candles go on
                    self.backfill[key] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                    log.warning("candle back-fill of %s failed: %s", key, self.backfill[key])
                    self.bus.publish(
                        m.RiskEvent(
                            kind="backfill_failed",
                            severity="warning",
                            source=self.name,
                            exchange=ex,
                            symbol=sym,
                            message=self.backfill[key],
                        )
                    )
                    continue
                if self.stopping.is_set():
                    return
                lock, pl = self._pipeline(ex, sym)
                with lock:
                    out = pl.seed_candles(candles)
                self.backfill[key] = len(candles)
                log.info(
                    "candle back-fill of %s: %d candles, up to %s",
                    key,
                    len(candles),
                    candles[-1]["ts"] if candles else None,
                )
                self._emit(out)

    def _advance_loop(self) -> None:
        """Close a time block when the market goes quiet: estimate event time as the last
        snapshot's time plus the wall time since it arrived (never ahead of real event time
        for a live feed or a replay at >= 1x), minus a grace for latency jitter."""
        grace = max(self.spec.interval_ns // 2, 500_000_000)
        while not self.stopping.wait(0.25):
            now = time.monotonic_ns()
            for key, (lock, pl) in list(self.pipelines.items()):
                with lock:
                    wall = self._wall.get(key)
                    if wall is None or not pl.last_ts:
                        continue
                    out = pl.advance(pl.last_ts + (now - wall) - grace)
                self._emit(out)

    def _on_trade(self, msg: m.Message, d: Delivery) -> None:
        if not isinstance(msg, m.Trade):
            raise TypeError(f"features.trades got {msg.type_name}")
        if not self._fresh(msg.ts_exchange or msg.ts_recv, f"{msg.exchange} {msg.symbol} trade"):
            return
        lock, pl = self._pipeline(msg.exchange, msg.symbol)
        with lock:
            out = pl.on_trade(msg)
        self._emit(out)

    def _emit(self, out: Any) -> None:
        for v in out.vectors:
            self.bus.publish(v)
            self.published += 1
            if self.writer is not None:
                self.writer.add(v)
        for ev in out.events:
            self.bus.publish(ev)
            self.events += 1

    def problems(self) -> list[str]:
        """Reasons for a degraded status (empty: ok): feeds that cannot provide the clock."""
        return [
            f"{ex} {sym}: {pl.clock_problem}"
            for (ex, sym), (_l, pl) in list(self.pipelines.items())
            if pl.clock_problem
        ]

    def stats(self) -> dict[str, float]:
        rejected: Counter[str] = Counter()
        resets: Counter[str] = Counter()
        late = 0
        for _lock, pl in list(self.pipelines.values()):
            rejected.update(pl.rejected)
            resets.update(pl.resets)
            late += pl.late
        out = {
            "vectors_published": float(self.published),
            "anomaly_events": float(self.events),
            "symbols": float(len(self.pipelines)),
            "late": float(late),
            "future": float(self.counts["future"]),
            "dropped_old": float(self.counts["dropped_old"]),
            "stale": float(sum(v for k, v in rejected.items() if "stale" in k.lower())),
            "resets": float(sum(resets.values())),
            "problems": float(len(self.problems())),
        }
        pls = [pl for _lock, pl in list(self.pipelines.values())]
        out["candle_seam_duplicates"] = float(sum(pl.seam.duplicates for pl in pls))
        out["candle_seam_missing"] = float(sum(pl.seam.missing for pl in pls))
        out.update({f"rejected.{k}": float(v) for k, v in rejected.items()})
        out.update({f"resets.{k}": float(v) for k, v in resets.items()})
        return out

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command == "status":  # status and problems: filled in by Service from the heartbeat
            res: dict[str, Any] = {
                "spec_hash": self.spec.hash,
                "emit": list(self.emit),
                "sample_interval_s": self.spec.sample_interval_s,
                "max_gap_s": self.spec.max_gap_s,
                "clock": self.clock.mode,
            }
            if getattr(self, "backfill", None):
                res["backfill"] = dict(self.backfill)  # candles seeded per symbol, or why it failed
            return res
        return None


SERVICE = FeaturesService
