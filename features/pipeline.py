"""Per-symbol feature pipeline (pure: messages in, messages out, no I/O).

One :class:`SymbolPipeline` per (exchange, symbol) holds the streaming state:

* snapshot features  (``FeatureVector.interval == ""``, names ``feature_names(spec)``)
* time blocks        (``interval == "<n>s"``, names ``aggregate_names(spec)``)
* candle indicators  (``interval == "candle<n>s"``, names ``candle_names(spec)``) from trades,
  or from the mid price when the source has no trades
* anomaly events     (volume spike on candles, book-distribution on blocks) as RiskEvents

The service only moves these messages between bus and store.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from depthpilot import messages as m
from features.aggregate import StreamingAggregator
from features.anomaly import AnomalyEvent, StreamingAnomalyDetector
from features.candles import CandleBuilder, CandleInputError, StreamingCandleFeatures
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


class SymbolPipeline:
    def __init__(self, spec: FeatureSpec, exchange: str, symbol: str, emit: tuple[str, ...] = ("block", "candle"),
                 candles_from: str = "trades", source: str = "features") -> None:
        unknown = set(emit) - set(EMIT_KINDS)
        if unknown:
            raise ValueError(f"unknown feature kinds {sorted(unknown)}; choose from {EMIT_KINDS}")
        if candles_from not in ("trades", "mid"):
            raise ValueError("candles_from must be 'trades' or 'mid'")
        self.spec, self.exchange, self.symbol, self.emit = spec, exchange, symbol, tuple(emit)
        self.candles_from = candles_from
        self.source = source
        self.snap = StreamingFeatures(spec)
        self.agg = StreamingAggregator(spec)
        self.candles = CandleBuilder(spec.interval_ns)
        self.candle_feats = StreamingCandleFeatures(spec)
        agg_names = aggregate_names(spec)
        self._book_cols = [agg_names.index(c) for c in BOOK_ANOMALY_COLUMNS if c in agg_names]
        self.book_anomaly = StreamingAnomalyDetector(spec, [agg_names[i] for i in self._book_cols], "book_distribution")
        self._vol_z = candle_names(spec).index(next(n for n in candle_names(spec) if n.startswith("vol_z_")))
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self.last_ts = 0  # event time of the latest snapshot (ns)
        self._labels = {k: interval_label(spec, k) for k in EMIT_KINDS}
        self._names = {k: names_for(spec, k) for k in EMIT_KINDS}

    # ------------------------------------------------------------------ inputs
    def on_snapshot(self, snap: m.BookSnapshot) -> PipelineOutput:
        out = PipelineOutput()
        x = self.snap.update_snapshot(snap)
        ts = snap.ts_exchange or snap.ts_recv
        self.last_ts = max(self.last_ts, ts)
        if x is None:
            self.rejected[self.snap.reason or "invalid"] += 1
        else:
            self.accepted += 1
            if "snapshot" in self.emit:
                out.vectors.append(self._vector("snapshot", ts, x))
            if self.candles_from == "mid":
                self._candle_ticks(self.candles.update(ts, 0.5 * (snap.bids[0, 0] + snap.asks[0, 0]), 0.0), out)
        for bts, row in self.agg.update(ts, x):
            self._block(bts, row, out)
        return out

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
        for bts, row in self.agg.advance(now_ns):
            self._block(bts, row, out)
        return out

    def reset(self) -> None:
        """After a book resync: OFI must not span the gap."""
        self.snap.reset()

    # ------------------------------------------------------------------ internals
    def _vector(self, kind: str, ts: int, values: np.ndarray) -> m.FeatureVector:
        return m.FeatureVector(exchange=self.exchange, symbol=self.symbol, ts=int(ts), spec_hash=self.spec.hash,
                               values=np.asarray(values, dtype=np.float64), names=self._names[kind],
                               interval=self._labels[kind], valid=bool(np.isfinite(values).all()))

    def _block(self, bts: int, row: np.ndarray, out: PipelineOutput) -> None:
        if "block" in self.emit:
            out.vectors.append(self._vector("block", bts, row))
        if self._book_cols:
            _z, events = self.book_anomaly.update(bts, row[self._book_cols])
            out.events.extend(self._risk(e) for e in events)

    def _candle_ticks(self, closed: list[dict[str, float]], out: PipelineOutput) -> None:
        for c in closed:
            row = self.candle_feats.update(c["open"], c["high"], c["low"], c["close"], c["volume"])
            if "candle" in self.emit:
                out.vectors.append(self._vector("candle", int(c["ts"]), row))
            z = row[self._vol_z]
            if np.isfinite(z) and abs(z) >= self.spec.anomaly_threshold:
                ev = AnomalyEvent(kind="volume_spike", ts=int(c["ts"]), feature=self._names["candle"][self._vol_z],
                                  value=float(c["volume"]), score=float(z), threshold=self.spec.anomaly_threshold,
                                  spec_hash=self.spec.hash)
                out.events.append(self._risk(ev))

    def _risk(self, ev: AnomalyEvent) -> m.RiskEvent:
        return m.RiskEvent(kind=f"anomaly_{ev.kind}", severity=ev.severity, source=self.source,  # type: ignore[arg-type]
                           exchange=self.exchange, symbol=self.symbol,
                           message=f"{ev.feature} z={ev.score:+.1f} (threshold {ev.threshold:g})",
                           data=ev.as_dict(), ts=int(ev.ts))
