"""collector service wiring: sources (replay or live) -> FeedProcessor -> bus and store.

* ``COLLECTOR_SOURCE=replay``: recordings (``REPLAY_PATHS``; default the Binance spot
  recording under the data directory) through the same book builders as live data, at
  ``REPLAY_SPEED`` x real time (0 = as fast as possible), optionally looping. Progress is
  checkpointed in the store, so a restarted collector continues where it stopped and ids are
  deterministic, so nothing is stored or handled twice.
* ``COLLECTOR_SOURCE=live``: the feeds of every exchange in ``DEPTHPILOT_EXCHANGES`` come
  from the venue registry (:mod:`collector.venues`: native Binance spot / USD-M / COIN-M,
  Bybit through pybit with our own book, ccxt for the rest); an unknown name fails start-up.
  Every feed runs under ONE supervised loop (:meth:`CollectorService._supervise`): a source
  that fails is closed, reported as a ``feed_reconnect`` RiskEvent and rebuilt with back-off.
  Dead tasks and feeds down past ``COLLECTOR_FEED_DOWN_LIMIT_S`` are :meth:`problems` that
  turn the heartbeat "degraded" (:mod:`collector.supervision`). ``COLLECTOR_TRADES`` (default
  on) adds the trades of every live source.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from typing import Any, Iterable, Iterator

from collector.feed import FeedOutput, FeedProcessor
from collector.supervision import FeedSupervision
from collector.replay import ReplayMessage, SystemClock, merge_by_recv, pace
from collector.replay_formats import replay_sources
from depthpilot import messages as m
from depthpilot.paths import data_dir
from depthpilot.sample_catalogue import BINANCE_L2DIFF
from depthpilot.service import Service

log = logging.getLogger("depthpilot.collector")

DEFAULT_RECORDING = f"{BINANCE_L2DIFF['spot']}/raw"  # the spot L2 recording (sample catalogue)
_NS = 1_000_000_000


class _StopClock(SystemClock):
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class CollectorService(Service):
    name = "collector"

    def setup(self) -> None:
        s = self.settings
        self.processor = FeedProcessor(
            rate_hz=s.snapshot_rate_hz,
            store_interval_s=s.snapshot_store_interval_s,
            max_staleness_s=s.book_max_staleness_s,
            source=self.name,
            # a replay cannot measure exchange latency: the recorder's clock is not ours
            measure_latency=s.collector_source == "live",
        )
        self._lock = threading.Lock()
        self.recorders: Any = None  # collector.recorder.RecorderPool when COLLECTOR_RECORD_DIR is set
        self.snap_writer = self.trade_writer = None
        if self.store is not None:
            from depthpilot.store import BatchWriter

            self.snap_writer = BatchWriter(self.store, "snapshots", max_size=200, max_age_s=1.0)
            self.trade_writer = BatchWriter(self.store, "trades", max_size=1000, max_age_s=1.0)
        self.last_ts = 0
        self.report_errors = 0
        self.checkpoint_waits = 0
        self.replayed = 0
        self.finished = threading.Event()
        self.supervision = FeedSupervision(down_limit_s=s.collector_feed_down_limit_s)
        self.live = s.collector_source == "live"
        if self.live:
            self.feeds = self._feeds()  # fails start-up with one line on an unknown exchange
            self.spawn(self._run_live, "live")
        else:
            paths = s.replay_paths or [str(data_dir() / DEFAULT_RECORDING)]
            self.replay_key = "collector.replay." + hashlib.sha1("|".join(sorted(paths)).encode()).hexdigest()[:12]
            self.sources = replay_sources(paths, s.book_depth, s.snapshot_rate_hz)  # fails start-up on a bad file
            self.spawn(self._run_replay, "replay")
        self.spawn(self._tick_loop, "tick")

    # ------------------------------------------------------------------ health
    def problems(self) -> list[str]:
        """Why the collector is unhealthy (one line each; empty = healthy): dead or long-down
        feeds, a replay that failed on bad input. Turns the heartbeat status "degraded"."""
        return self.supervision.problems(time.time_ns())

    def _update_status(self) -> None:
        # until the core Service evaluates problems() itself, the collector sets its own status
        if self.status in ("ok", "degraded"):
            self.status = "degraded" if self.problems() else "ok"

    # ------------------------------------------------------------------ output
    def _emit(self, out: FeedOutput) -> None:
        for msg in out.publish:
            self.bus.publish(msg)
        for ev in out.events:
            self.bus.publish(ev)
        if self.snap_writer is not None and self.trade_writer is not None:  # both, with a store
            for snap in out.store_snapshots:
                self.snap_writer.add(snap)
            for t in out.store_trades:
                self.trade_writer.add(t)

    def on_message(self, msg: m.Message) -> None:
        msg.stamp("collected")  # when the collector had it (a replay creates messages ahead of pacing)
        with self._lock:
            if isinstance(msg, m.BookSnapshot):
                out = self.processor.on_snapshot(msg)
            elif isinstance(msg, m.Trade):
                out = self.processor.on_trade(msg)
            else:
                raise TypeError(f"collector source produced {msg.type_name}")
            self.last_ts = max(self.last_ts, msg.ts_recv)
        self._emit(out)

    def _tick_loop(self) -> None:
        n = 0
        while not self.stopping.wait(0.1):
            n += 1
            try:
                with self._lock:
                    now = time.time_ns() if self.live else self.last_ts
                    out = self.processor.tick(now, check_stale=self.live)
                self._emit(out)
            except Exception as exc:  # noqa: BLE001 - e.g. bus backpressure: reported, retried next tick
                self.report_errors += 1
                log.warning("collector tick failed: %s", exc)
            self._flush_store(checkpoint=not self.live and n % 10 == 0)
            self._update_status()

    def _flush_store(self, checkpoint: bool, force: bool = False) -> None:
        """Write due store batches. A replay checkpoint (``checkpoint``) advances to the last
        message handed over BEFORE the writers were fully flushed and the bus confirmed
        everything published so far; if either fails it stays where it was."""
        store, snaps, trades = self.store, self.snap_writer, self.trade_writer
        if store is None or snaps is None or trades is None:  # no store: no writers
            return
        try:
            last = self.last_ts
            for w in (snaps, trades):
                w.flush() if (force or checkpoint) else w.maybe_flush()
            if checkpoint and last:
                if not self.bus.flush(5):
                    self.checkpoint_waits += 1
                    log.warning("replay checkpoint held at the previous position: the bus did not confirm in 5 s")
                    return
                store.set_state(self.replay_key, {"ts_recv": last})
        except Exception:  # noqa: BLE001 - kept in the writers' buffers; retried next tick
            self.report_errors += 1
            log.exception("storing collector data failed; will retry")

    # ------------------------------------------------------------------ replay
    @staticmethod
    def _shifted(loop: int, span: int, msgs: Iterable[ReplayMessage]) -> Iterator[ReplayMessage]:
        """Loop ``loop`` of a looped replay: times moved on by ``loop * span`` and every trade
        id made loop-specific, so each loop's messages have their own ids (snapshot ids carry
        the shifted receive time) and nothing real is dropped as a duplicate."""
        offset = loop * span
        for msg in msgs:
            if offset:
                msg.ts_recv += offset
                if msg.ts_exchange:
                    msg.ts_exchange += offset
                if isinstance(msg, m.Trade) and msg.trade_id:
                    msg.trade_id = f"{msg.trade_id}~{loop}"
            yield msg

    def _run_replay(self) -> None:
        try:
            self._replay()
        except Exception as exc:  # noqa: BLE001 - bad input mid-file: one line, service unhealthy
            reason = f"replay failed: {' '.join(str(exc).split()) or type(exc).__name__}"
            log.error("%s", reason)
            log.debug("replay traceback", exc_info=True)
            self.supervision.fail(reason)
            self._update_status()
        finally:
            self.finished.set()

    def _replay(self) -> None:
        s = self.settings
        state = self.store.get_state(self.replay_key) if self.store is not None else None
        resume = int(state["ts_recv"]) if state else 0
        if resume:
            log.info("replay resumes after ts_recv=%d", resume)
        speed = s.replay_speed or None
        loop = 0
        span = 0
        bounds = [0, 0]  # first / last receive time of the current loop (skipped messages included)

        def seen(msgs: Iterable[ReplayMessage]) -> Iterator[ReplayMessage]:
            for msg in msgs:
                bounds[0] = bounds[0] or msg.ts_recv
                bounds[1] = msg.ts_recv
                if msg.ts_recv > resume:
                    yield msg

        while not self.stopping.is_set():
            bounds[:] = [0, 0]
            sources = (
                self.sources
                if loop == 0
                else replay_sources(
                    s.replay_paths or [str(data_dir() / DEFAULT_RECORDING)], s.book_depth, s.snapshot_rate_hz
                )
            )
            for msg in pace(seen(self._shifted(loop, span, merge_by_recv(*sources))), speed, _StopClock(self.stopping)):
                if self.stopping.is_set():
                    return
                self.replayed += 1
                self.on_message(msg)
            if loop == 0 and not (bounds[0] or resume):
                raise ValueError(f"REPLAY_PATHS {s.replay_paths or [DEFAULT_RECORDING]}: no message to replay")
            if not s.replay_loop:
                break
            if loop == 0:
                span = (bounds[1] - bounds[0] + _NS) if bounds[0] else _NS
            loop += 1
        with self._lock:
            self._emit(self.processor.tick(self.last_ts + 10 * _NS, check_stale=False))
        self._flush_store(checkpoint=True, force=True)
        log.info("replay finished")

    # ------------------------------------------------------------------ live
    def _feeds(self) -> list[Any]:
        """Every live feed of every configured exchange, from the venue registry (fails start-up
        with one line on an unknown exchange)."""
        from collector.venues import FeedContext, venue

        s = self.settings
        if s.collector_record_dir and self.recorders is None:
            from collector.recorder import RecorderPool, rotate_bytes_of

            self.recorders = RecorderPool(
                s.collector_record_dir,
                flush_interval_s=s.collector_record_flush_s,
                rotate_bytes=rotate_bytes_of(s.collector_record_rotate_mb),
            )
        ctx = FeedContext(
            self.settings,
            self._on_retry,
            self._on_reconnect,
            self.recorders.for_exchange if self.recorders is not None else None,
        )
        venues = [venue(ex) for ex in self.settings.exchanges]  # all names checked before anything starts
        return [
            f for v, ex in zip(venues, self.settings.exchanges) for f in v.feeds(ctx, list(self.settings.symbols), ex)
        ]

    def _run_live(self) -> None:
        try:
            asyncio.run(self._live_main())
        except Exception as exc:  # noqa: BLE001 - the whole live loop died: unhealthy, one line
            log.exception("live feeds stopped")
            self.supervision.fail(f"live feeds stopped: {type(exc).__name__}: {exc}")

    async def _live_main(self) -> None:
        tasks = {asyncio.create_task(self._supervise(f), name=f.name): f for f in self.feeds}
        while not self.stopping.is_set():
            await asyncio.sleep(0.2)
            for t, f in list(tasks.items()):
                if t.done():  # a supervisor never returns while running: a dead task is a problem
                    del tasks[t]
                    exc = t.exception() if not t.cancelled() else None
                    self.supervision.died(f.name, f"{type(exc).__name__}: {exc}" if exc else "task ended")
                    log.error("feed %s died: %s", f.name, exc)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_retry(self, ev: Any) -> None:
        self._report(
            m.RiskEvent(
                kind="exchange_retry",
                severity="info",
                source=self.name,
                exchange=ev.exchange,
                symbol=ev.symbol,
                message=f"{ev.operation} {ev.error}: retry in {ev.sleep_s:.1f}s",
            )
        )

    def _on_reconnect(self, ev: Any) -> None:  # a source reconnecting by itself: counted and reported
        for sym in ev.symbols:
            self._report(self.processor.reconnect(ev.exchange, sym, f"{ev.connection}: {ev.reason}"[:300]))

    def _report(self, ev: m.RiskEvent) -> None:
        """Publish a RiskEvent; a failure to publish is logged and counted, never fatal."""
        try:
            self.bus.publish(ev)
        except Exception as exc:  # noqa: BLE001 - reporting must not kill the feed loop
            self.report_errors += 1
            log.warning("could not publish %s event: %s", ev.kind, exc)

    async def _supervise(self, feed: Any) -> None:
        """Run ``feed.make()``'s stream into :meth:`on_message`. A source that fails after its own
        retries is closed, reported (``feed_reconnect`` per symbol) and rebuilt with back-off; the
        back-off starts afresh once the feed delivers again. Health: see collector.supervision."""
        sup = self.supervision
        sup.started(feed.name, time.time_ns())
        attempt = 0
        while not self.stopping.is_set():
            src = None
            try:
                src = feed.make()
                async with contextlib.aclosing(src.stream()) as msgs:
                    async for msg in msgs:
                        if isinstance(msg, m.Trade) or getattr(msg, "valid", False):
                            attempt = 0
                            sup.ok(feed.name, time.time_ns())
                        self.on_message(msg)
                        if self.stopping.is_set():
                            return
                raise ConnectionError("stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - restart the feed with back-off, reported
                delay = min(60.0, self.settings.collector_reconnect_initial_s * 2.0**attempt)
                attempt += 1
                why = f"{feed.what}: {type(exc).__name__}: {exc}"[:300]
                sup.failed(feed.name, why)
                log.warning("%s feed failed (%s); restarting in %.1fs", feed.name, why, delay)
                for symbol in feed.symbols:
                    self._report(self.processor.reconnect(feed.exchange, symbol, why))
                await asyncio.sleep(delay)
            finally:
                if src is not None:
                    try:
                        await src.close()
                    except Exception as exc:  # noqa: BLE001 - closing a broken source may fail too
                        log.warning("%s: closing the source failed: %s", feed.name, exc)

    # ------------------------------------------------------------------ lifecycle
    def teardown(self) -> None:
        self._flush_store(checkpoint=not self.live, force=True)
        if self.recorders is not None:
            self.recorders.close()  # complete gzip streams, .part files renamed

    def _now(self) -> int | None:
        """The collector's clock: wall time live, the replay's event time in a replay."""
        return None if self.live else (self.last_ts or None)

    def stats(self) -> dict[str, float]:
        p = self.processor
        out = {
            "published": float(p.published),
            "throttled": float(p.throttled),
            "stale_events": float(p.stale_events),
            "report_errors": float(self.report_errors),
            "checkpoint_waits": float(self.checkpoint_waits),
            "problems": float(len(self.problems())),
            **self.supervision.stats(),
        }
        for w in (self.snap_writer, self.trade_writer):
            if w is not None:
                out[f"store.{w.collection}.dropped"] = float(w.dropped)
                out[f"store.{w.collection}.duplicates"] = float(w.duplicates)
        if not self.live:
            out["old_snapshots"] = float(
                sum(
                    b.old_snapshots
                    for src in self.sources
                    for b in getattr(src, "builders", {}).values()
                    if hasattr(b, "old_snapshots")
                )
            )
        rec = getattr(self, "recorders", None)
        if rec is not None:  # COLLECTOR_RECORD_DIR: what the recording holds so far
            out.update({f"record.{k}": float(v) for k, v in rec.stats().items() if k != "gaps"})
        for feed in p.health.snapshot(self._now()):
            key = f"{feed['exchange']}.{feed['symbol']}"
            for k in ("updates_per_s", "gaps", "resyncs", "reconnects", "crossed", "staleness_s", "last_latency_ms"):
                v = feed.get(k)
                if isinstance(v, (int, float)):
                    out[f"{key}.{k}"] = float(v)
        return out

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command in ("status", "health"):
            return {
                "source": self.settings.collector_source,
                "problems": self.problems(),
                "feeds": self.processor.health.snapshot(self._now()),
            }
        return None


SERVICE = CollectorService
