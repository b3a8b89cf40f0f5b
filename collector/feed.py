"""What the collector does with each normalised book/trade, whatever the source (pure).

:class:`FeedProcessor` takes BookSnapshots and Trades (from replay, ccxt, pybit or the
Binance builder) and decides, per (exchange, symbol):

* which snapshots to publish (at most ``rate_hz`` per second by receive time; validity
  changes always go out at once so downstream stops trading on a bad book immediately),
* which to sample into the store (one per ``store_interval_s``),
* book-health RiskEvents on validity transitions (gap/resync, crossed, stale, recovered),
* deterministic message ids (``exchange:symbol:b:seq:ts_recv``), so a restarted collector
  that re-emits a snapshot produces the same id and nothing is stored or handled twice,
* per-feed health counters (:class:`collector.health.HealthRegistry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from collector.health import HealthRegistry
from depthpilot import messages as m

_NS = 1_000_000_000
Severity = Literal["info", "warning", "critical"]  # of a RiskEvent


@dataclass
class FeedOutput:
    publish: list[m.Message] = field(default_factory=list)
    store_snapshots: list[m.BookSnapshot] = field(default_factory=list)
    store_trades: list[m.Trade] = field(default_factory=list)
    events: list[m.RiskEvent] = field(default_factory=list)

    def extend(self, other: "FeedOutput") -> None:
        self.publish += other.publish
        self.store_snapshots += other.store_snapshots
        self.store_trades += other.store_trades
        self.events += other.events


def snapshot_id(s: m.BookSnapshot) -> str:
    return f"{s.exchange}:{s.symbol}:b:{s.seq}:{s.ts_recv}"


def trade_id(t: m.Trade) -> str:
    """The exchange's own trade id when there is one: the same trade seen again (a restarted
    feed, an overlapping REST page) gets the same message id and is stored/handled once."""
    if t.trade_id:
        return f"{t.exchange}:{t.symbol}:t:{t.trade_id}"
    return f"{t.exchange}:{t.symbol}:t:{t.ts_exchange}:{t.ts_recv}:{t.price}:{t.size}"


def _kind_of(reason: str) -> str:
    r = reason.lower()
    if "cross" in r:
        return "book_crossed"
    if "stale" in r:
        return "feed_stale"
    if "checksum" in r:
        return "book_checksum"
    if "gap" in r or "resync" in r or "snapshot" in r or "seq" in r:
        return "book_gap"
    return "book_invalid"


class FeedProcessor:
    def __init__(
        self,
        *,
        rate_hz: float = 10.0,
        store_interval_s: float = 1.0,
        max_staleness_s: float = 5.0,
        source: str = "collector",
        measure_latency: bool = True,
    ) -> None:
        if rate_hz <= 0 or store_interval_s <= 0 or max_staleness_s <= 0:
            raise ValueError("rate_hz, store_interval_s and max_staleness_s must be > 0")
        self.min_gap_ns = int(_NS / rate_hz)
        self.store_gap_ns = int(store_interval_s * _NS)
        self.max_staleness_s = max_staleness_s
        self.source = source
        self.health = HealthRegistry()
        self._last_pub: dict[tuple[str, str], int] = {}
        self._last_store: dict[tuple[str, str], int] = {}
        self._valid: dict[tuple[str, str], bool] = {}
        self._latest: dict[tuple[str, str], m.BookSnapshot] = {}
        self._pending: dict[tuple[str, str], m.BookSnapshot] = {}
        self._stale: set[tuple[str, str]] = set()
        self.measure_latency = measure_latency
        self.published = 0
        self.throttled = 0
        self.stale_events = 0

    # ------------------------------------------------------------------ books
    def on_snapshot(self, s: m.BookSnapshot) -> FeedOutput:
        out = FeedOutput()
        key = (s.exchange, s.symbol)
        s.id = snapshot_id(s)
        feed = self.health.feed(*key)
        feed.on_update(s.ts_recv, s.ts_exchange if self.measure_latency else 0)
        self._latest[key] = s
        self._stale.discard(key)
        was_valid = self._valid.get(key)
        if was_valid is None or was_valid != s.valid:
            self._valid[key] = s.valid
            if not s.valid:
                kind = _kind_of(s.reason)
                if kind == "book_crossed":
                    feed.on_crossed()
                elif kind in ("book_gap", "book_checksum"):
                    feed.on_gap()
                out.events.append(self._event(kind, "warning", s, f"book invalid: {s.reason}"))
            elif was_valid is False:
                feed.on_resync()
                out.events.append(self._event("book_recovered", "info", s, "book valid again"))
            self._publish(key, s, out)  # validity changes go out at once
            return out
        last = self._last_pub.get(key)
        if last is None or s.ts_recv - last >= self.min_gap_ns:
            self._publish(key, s, out)
        else:
            self._pending[key] = s  # newest state kept; flushed by tick() or the next snapshot
            self.throttled += 1
        return out

    def _publish(self, key: tuple[str, str], s: m.BookSnapshot, out: FeedOutput) -> None:
        self._pending.pop(key, None)
        self._last_pub[key] = s.ts_recv
        out.publish.append(s)
        self.published += 1
        last_store = self._last_store.get(key)
        if last_store is None or s.ts_recv - last_store >= self.store_gap_ns:
            self._last_store[key] = s.ts_recv
            out.store_snapshots.append(s)

    def tick(self, now_ns: int, *, check_stale: bool = True) -> FeedOutput:
        """Flush throttled snapshots whose slot has come; flag stale feeds (live sources:
        ``now_ns`` is wall-clock; replay passes its event time and ``check_stale=False``)."""
        out = FeedOutput()
        for key, s in list(self._pending.items()):
            if now_ns - self._last_pub.get(key, 0) >= self.min_gap_ns:
                self._publish(key, s, out)
        if check_stale:
            for key in self.health.stale_feeds(now_ns, self.max_staleness_s):
                last = self._latest.get(key)
                if key in self._stale or last is None:
                    continue
                self._stale.add(key)
                self.stale_events += 1
                age = (now_ns - last.ts_recv) / _NS
                stale = m.BookSnapshot(
                    exchange=last.exchange,
                    symbol=last.symbol,
                    ts_exchange=last.ts_exchange,
                    ts_recv=now_ns,
                    seq=last.seq,
                    bids=last.bids,
                    asks=last.asks,
                    depth=last.depth,
                    valid=False,
                    reason=f"stale: no update for {age:.1f}s",
                )
                stale.id = snapshot_id(stale)
                self._valid[key] = False
                out.events.append(self._event("feed_stale", "warning", stale, stale.reason))
                self._publish(key, stale, out)
        return out

    # ------------------------------------------------------------------ trades
    def on_trade(self, t: m.Trade) -> FeedOutput:
        t.id = trade_id(t)
        return FeedOutput(publish=[t], store_trades=[t])

    # ------------------------------------------------------------------ events
    def reconnect(self, exchange: str, symbol: str, why: str) -> m.RiskEvent:
        self.health.feed(exchange, symbol).on_reconnect()
        return m.RiskEvent(
            kind="feed_reconnect", severity="warning", source=self.source, exchange=exchange, symbol=symbol, message=why
        )

    def _event(self, kind: str, severity: Severity, s: m.BookSnapshot, message: str) -> m.RiskEvent:
        return m.RiskEvent(
            kind=kind,
            severity=severity,
            source=self.source,
            exchange=s.exchange,
            symbol=s.symbol,
            message=message,
            data={"seq": s.seq, "ts_recv": s.ts_recv},
            ts=s.ts_recv,
        )
