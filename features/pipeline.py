"""Per-symbol feature pipeline (pure: messages in, messages out, no I/O).

One :class:`SymbolPipeline` per (exchange, symbol) holds the streaming state:

* snapshot features  (``FeatureVector.interval == ""``, names ``feature_names(spec)``)
* time blocks        (``interval == "<n>s"``, names ``aggregate_names(spec)``)
* candle indicators  (``interval == "candle<n>s"``, names ``candle_names(spec)``) from trades,
  or from the mid price when the source has no trades
* anomaly events     (volume spike on candles, book-distribution on blocks) as RiskEvents

State across gaps: a resync or any invalid book (``BookSnapshot.valid == False`` or failing
the engine's checks) and a feed gap (no snapshot for more than ``spec.max_gap_s``) restart the
per-symbol state -- order-flow imbalance and the block change baseline -- and are counted in
``resets`` (and returned in ``PipelineOutput.resets`` for the service to log). Late snapshots
(timestamp before an earlier one, or for a block or tick already emitted) are dropped and
counted, never folded into emitted rows.

Clock: with ``spec.sample_interval_s > 0`` books are sampled on the fixed clock
(:mod:`features.clock`) before the snapshot features and blocks (mid candles keep every valid
book) -- the same rows the offline builders produce
(:func:`features.engine.feature_rows`). A feed that cannot provide the clock (most ticks
without a new book) is reported in ``clock_problem``.

The service only moves these messages between bus and store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from depthpilot import messages as m
from features.aggregate import StreamingAggregator
from features.clock import StreamingSampler, Tick
from features.orderbook import REASONS
from features.anomaly import AnomalyEvent, StreamingAnomalyDetector
from features.candles import CandleBuilder, CandleInputError, StreamingCandleFeatures
from features.seam import CandleSeam, SeamGap
from features.engine import StreamingFeatures
from features.spec import FeatureSpec, aggregate_names, candle_names, feature_names

EMIT_KINDS = ("snapshot", "block", "candle")
BOOK_ANOMALY_COLUMNS = ("last_vol_ratio_10", "mean_imb_dw")


def interval_label(spec: FeatureSpec, kind: str) -> str:
    """The ``FeatureVector.interval`` tag of each kind (a model records which one it eats)."""
    iv = f"{spec.interval_s:g}s"
    return {"snapshot": "", "block": iv, "candle": f"candle{iv}"}[kind]


def names_for(spec: FeatureSpec, kind: str) -> list[str]:
    return {"snapshot": feature_names, "block": aggregate_names, "candle": candle_names}[kind](spec)


@dataclass
class PipelineOutput:
    vectors: list[m.FeatureVector] = field(default_factory=list)
    events: list[m.RiskEvent] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)  # "<reason>: <detail>" per state reset


SLOW_FEED_WINDOW = 200  # ticks per check of the sampled clock's fill rate
SLOW_FEED_MIN_FRESH = 0.5  # below this share of ticks with a new book the feed is too slow


class SymbolPipeline:
    def __init__(
        self,
        spec: FeatureSpec,
        exchange: str,
        symbol: str,
        emit: tuple[str, ...] = ("block", "candle"),
        candles_from: str = "trades",
        source: str = "features",
    ) -> None:
        unknown = set(emit) - set(EMIT_KINDS)
        if unknown:
            raise ValueError(f"unknown feature kinds {sorted(unknown)}; choose from {EMIT_KINDS}")
        if candles_from not in ("trades", "mid"):
            raise ValueError("candles_from must be 'trades' or 'mid'")
        self.spec, self.exchange, self.symbol, self.emit = spec, exchange, symbol, tuple(emit)
        self.candles_from = candles_from
        self.source = source
        self.sampled = bool(spec.sample_interval_s)
        self.snap = StreamingFeatures(spec, gap_resets=not self.sampled)
        self.check = StreamingFeatures(spec)  # validity / order check of sampled-clock input
        self.sampler = StreamingSampler(spec.sample_interval_ns, spec.max_gap_ns) if self.sampled else None
        self.agg = StreamingAggregator(spec)
        self.candles = CandleBuilder(spec.interval_ns)
        self.candle_feats = StreamingCandleFeatures(spec)
        self.seam = CandleSeam(spec.interval_ns)  # history/live candle continuity
        agg_names = aggregate_names(spec)
        self._book_cols = [agg_names.index(c) for c in BOOK_ANOMALY_COLUMNS if c in agg_names]
        self.book_anomaly = StreamingAnomalyDetector(spec, [agg_names[i] for i in self._book_cols], "book_distribution")
        self._vol_z = candle_names(spec).index(next(n for n in candle_names(spec) if n.startswith("vol_z_")))
        self.rejected: Counter[str] = Counter()
        self.resets: Counter[str] = Counter()
        self.accepted = 0
        self.last_ts = 0  # event time of the latest snapshot (ns)
        self._book_ts: int | None = None  # event time of the latest book that was not late
        self._broken = False  # inside a run of invalid books (one reset per run)
        self._win = (0, 0)  # sampler (ticks, fresh) at the start of the fill-rate window
        self.clock_problem = ""
        self._labels = {k: interval_label(spec, k) for k in EMIT_KINDS}
        self._names = {k: names_for(spec, k) for k in EMIT_KINDS}

    # ------------------------------------------------------------------ inputs
    def on_snapshot(self, snap: m.BookSnapshot) -> PipelineOutput:
        out = PipelineOutput()
        ts = snap.ts_exchange or snap.ts_recv
        self.last_ts = max(self.last_ts, ts)
        sampler = self.sampler  # not None exactly when self.sampled
        if sampler is not None:
            code = self.check.check(ts, snap.bids, snap.asks) if snap.valid else -1
            ok = code == 0
            if code == 6:
                self.rejected[REASONS[6]] += 1
                return out
            ticks = sampler.update(ts, snap, ok)
            if ticks is None:  # its tick was already decided (advance): late, counted by the sampler
                return out
            why = "" if ok else (snap.reason or "invalid_upstream") if code == -1 else REASONS[code]
            self._note_break(ts, ok, snap, out, why)
            for tick in ticks:
                self._tick(tick, out)
            if not ok:
                self.rejected[why] += 1
            else:
                self.accepted += 1
                self._mid_candle(ts, snap, out)
            self._check_clock(sampler)
            return out
        x = self.snap.update_snapshot(snap)
        if x is None:
            self.rejected[self.snap.reason or "invalid"] += 1
            if self.snap.reason != REASONS[6]:
                self._note_break(ts, False, snap, out)
        else:
            self._note_break(ts, True, snap, out)
            self.accepted += 1
            if "snapshot" in self.emit:
                out.vectors.append(self._vector("snapshot", ts, x, self.snap.last_reset))
            self._mid_candle(ts, snap, out)
        for bts, row in self.agg.update(ts, x, self.snap.last_reset if x is not None else False):
            self._block(bts, row, out)
        return out

    def _mid_candle(self, ts: int, snap: m.BookSnapshot, out: PipelineOutput) -> None:
        if self.candles_from == "mid":
            self._candle_ticks(self.candles.update(ts, 0.5 * (snap.bids[0, 0] + snap.asks[0, 0]), 0.0), out)

    def _note_break(self, ts: int, ok: bool, snap: m.BookSnapshot, out: PipelineOutput, why: str = "") -> None:
        """Count a state reset: a feed gap, or the first invalid book of a run (resync...)."""
        if self._book_ts is not None and ts - self._book_ts > self.spec.max_gap_ns:
            self.resets["gap"] += 1
            out.resets.append(f"gap: no snapshot for {(ts - self._book_ts) / 1e9:.1f} s (> {self.spec.max_gap_s:g} s)")
        if not ok and not self._broken and self._book_ts is not None:
            why = why or snap.reason or self.snap.reason or "invalid book"
            kind = "resync" if "resync" in why.lower() else "invalid"
            self.resets[kind] += 1
            out.resets.append(f"{kind}: {why}")
        self._broken = not ok
        self._book_ts = ts if self._book_ts is None else max(self._book_ts, ts)

    def _tick(self, tick: Tick, out: PipelineOutput) -> None:
        if tick.reset:
            self.snap.reset()
        book = tick.book
        x = self.snap.update(tick.ts, book.bids, book.asks)
        if x is None:  # cannot happen: the sampler only holds books that passed the same checks
            self.rejected[self.snap.reason or "invalid"] += 1
            return
        if "snapshot" in self.emit:
            out.vectors.append(self._vector("snapshot", tick.ts, x, tick.reset))
        for bts, row in self.agg.update(tick.ts, x, tick.reset):
            self._block(bts, row, out)

    def _check_clock(self, s: StreamingSampler) -> None:
        t0, f0 = self._win
        n = s.ticks - t0
        if n < SLOW_FEED_WINDOW:
            return
        share = (s.fresh - f0) / n
        self._win = (s.ticks, s.fresh)
        if share < SLOW_FEED_MIN_FRESH:
            self.clock_problem = (
                f"feed too slow for the {self.spec.sample_interval_s:g} s sample clock: "
                f"only {share:.0%} of the last {n} ticks had a new book"
            )
        else:
            self.clock_problem = ""

    @property
    def late(self) -> int:
        """Snapshots dropped as late (before an earlier one, or for a tick/block already emitted)."""
        return self.rejected.get(REASONS[6], 0) + self.agg.late + (self.sampler.late if self.sampler else 0)

    def on_trade(self, trade: m.Trade) -> PipelineOutput:
        out = PipelineOutput()
        if self.candles_from != "trades":
            return out
        try:
            closed = self.candles.update(trade.ts_exchange or trade.ts_recv, trade.price, trade.size)
        except CandleInputError as exc:
            self.rejected[f"trade: {exc}"[:60]] += 1
            return out
        self._candle_ticks(closed, out)
        return out

    def advance(self, now_ns: int) -> PipelineOutput:
        """Close the open time block when wall-clock time passed its end (quiet market)."""
        out = PipelineOutput()
        if self.sampler is not None:
            for tick in self.sampler.advance(now_ns):
                self._tick(tick, out)
        for bts, row in self.agg.advance(now_ns):
            self._block(bts, row, out)
        return out

    def flush(self) -> PipelineOutput:
        """End of a recording: decide the remaining ticks and close the open block."""
        out = PipelineOutput()
        if self.sampler is not None:
            for tick in self.sampler.flush():
                self._tick(tick, out)
        for bts, row in self.agg.flush():
            self._block(bts, row, out)
        return out

    def reset(self, reason: str = "reset") -> None:
        """Restart the per-symbol state by hand (OFI must not span a gap); the block change
        baseline restarts with the next row."""
        self.snap.reset()
        self.resets[reason] += 1
        if self.sampler is not None:
            self.sampler._event = True

    # ------------------------------------------------------------------ internals
    def _vector(self, kind: str, ts: int, values: np.ndarray, reset: bool = False) -> m.FeatureVector:
        return m.FeatureVector(
            exchange=self.exchange,
            symbol=self.symbol,
            ts=int(ts),
            spec_hash=self.spec.hash,
            values=np.asarray(values, dtype=np.float64),
            names=self._names[kind],
            interval=self._labels[kind],
            valid=bool(np.isfinite(values).all()),
            reset=bool(reset),
        )

    def _block(self, bts: int, row: np.ndarray, out: PipelineOutput) -> None:
        if "block" in self.emit:
            out.vectors.append(self._vector("block", bts, row, self.agg.last_broken))
        if self._book_cols:
            _z, events = self.book_anomaly.update(bts, row[self._book_cols])
            out.events.extend(self._risk(e) for e in events)

    def seed_candles(self, candles: list[dict[str, float]]) -> PipelineOutput:
        """Warm the candle state from history (closed candles, ``ts`` = close time in ns, oldest
        first): each becomes a candle vector (no anomaly events: they are past). Candles for the
        interval the live builder is filling, or later, are left to the live candle; overlaps
        and holes are counted in :attr:`seam` and reported as a ``candle_gap`` RiskEvent."""
        out = PipelineOutput()
        live_b = self.candles._b
        keep = [c for c in candles if live_b is None or int(c["ts"]) // self.spec.interval_ns < live_b]
        self._candle_ticks(keep, out, history=True)
        return out

    def _seam_gap(self, gap: SeamGap, out: PipelineOutput) -> None:
        out.events.append(
            m.RiskEvent(
                kind="candle_gap",
                severity="warning",
                source=self.source,
                exchange=self.exchange,
                symbol=self.symbol,
                message=f"{gap.missing} candle(s) missing ({gap.where}) before {gap.first_ts}",
                data={"after_ts": gap.after_ts, "first_ts": gap.first_ts, "missing": gap.missing, "where": gap.where},
                ts=gap.first_ts,
            )
        )

    def _candle_ticks(self, closed: list[dict[str, float]], out: PipelineOutput, history: bool = False) -> None:
        for c in closed:
            seam = self.seam.admit(int(c["ts"]), history=history)
            if seam is False:
                continue  # this interval was already seen (history and live overlap)
            if seam is not None:
                self._seam_gap(seam, out)
            row = self.candle_feats.update(c["open"], c["high"], c["low"], c["close"], c["volume"])
            if "candle" in self.emit:
                out.vectors.append(self._vector("candle", int(c["ts"]), row))
            if history:
                continue
            z = row[self._vol_z]
            if np.isfinite(z) and abs(z) >= self.spec.anomaly_threshold:
                ev = AnomalyEvent(
                    kind="volume_spike",
                    ts=int(c["ts"]),
                    feature=self._names["candle"][self._vol_z],
                    value=float(c["volume"]),
                    score=float(z),
                    threshold=self.spec.anomaly_threshold,
                    spec_hash=self.spec.hash,
                )
                out.events.append(self._risk(ev))

    def _risk(self, ev: AnomalyEvent) -> m.RiskEvent:
        return m.RiskEvent(
            kind=f"anomaly_{ev.kind}",
            severity=ev.severity,
            source=self.source,
            exchange=self.exchange,
            symbol=self.symbol,
            message=f"{ev.feature} z={ev.score:+.1f} (threshold {ev.threshold:g})",
            data=ev.as_dict(),
            ts=int(ev.ts),
        )
