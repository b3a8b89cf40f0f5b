"""collector service wiring: sources (replay or live) -> FeedProcessor -> bus and store.

* ``COLLECTOR_SOURCE=replay``: recordings (``REPLAY_PATHS``; default the Binance spot
  recording under the data directory) through the same book builders as live data, at
  ``REPLAY_SPEED`` x real time (0 = as fast as possible), optionally looping. Progress is
  checkpointed in the store, so a restarted collector continues where it stopped and ids are
  deterministic, so nothing is stored or handled twice.
* ``COLLECTOR_SOURCE=live``: Binance spot (``binance``) and USD-M (``binanceusdm``) through
  the native diff-depth source (:mod:`collector.binance_ws`, one per market with all symbols,
  URLs overridable with ``BINANCE_[USDM_]WS_URL`` / ``BINANCE_[USDM_]REST_URL``); per
  (exchange, symbol), Bybit through pybit's websocket with our own book and every other
  exchange through ccxt (websocket where ccxt.pro has it, else REST polling). A source that
  fails after its retries is restarted with back-off and reported as a ``feed_reconnect``
  RiskEvent (as is every websocket reconnect of the native Binance source). With
  ``COLLECTOR_TRADES`` (default on) every live source also publishes trades: the native
  Binance trade stream, pybit's ``publicTrade`` topic, and a ccxt trade feed per (exchange,
  symbol) next to its book feed (``watch_trades`` or ``fetch_trades`` polling; a restarted
  trade feed resumes after the last trade it published). ``CCXT_API_BASE_URL`` points the
  ccxt sources at a mirror / proxy / local fake.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from collector.feed import FeedOutput, FeedProcessor
from collector.replay import (
    BinanceRecordingReplay, SystemClock, TardisBookSnapshotReplay, TardisTradesReplay, merge_by_recv, pace,
)
from depthpilot import messages as m
from depthpilot.paths import data_dir
from depthpilot.service import Service

log = logging.getLogger("depthpilot.collector")

DEFAULT_RECORDING = "binance-spot-btcusdt-2024-08-08-l2diff/raw"
BINANCE_NATIVE = {"binance": "spot", "binanceusdm": "usdm"}  # exchange -> BinanceDiffSource market
_NS = 1_000_000_000


def replay_sources(paths: Iterable[str | Path], depth: int, rate_hz: float | None) -> list[Iterable[m.Message]]:
    """One source per path: a raw Binance recording (file or directory of ``*.gz``), a
    cryptofeed websocket capture (``OKX.ws.*``, ``KRAKEN_FUTURES.ws.*``, ``BITMEX.ws.*``,
    ``BYBIT.ws.*``), a Bybit v5 archive (``*.data.zip``), or a Tardis-style CSV (``*trades*``
    -> trades, otherwise book snapshots). All go through the exchange's own book builder."""
    from collector.clip_replay import bybit_archive_replay, clip_replay, is_bybit_archive, is_clip

    sources: list[Iterable[m.Message]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"REPLAY_PATHS: {p} does not exist")
        name = p.name.lower()
        if is_clip(p):
            sources.append(clip_replay(p, depth))
        elif is_bybit_archive(p):
            sources.append(bybit_archive_replay(p, depth))
        elif p.is_dir() or (name.endswith(".gz") and not name.endswith(".csv.gz")):
            sources.append(BinanceRecordingReplay(p, depth=depth, max_rate_hz=rate_hz))
        elif "trade" in name:
            sources.append(TardisTradesReplay(p))
        elif name.endswith((".csv", ".csv.gz")):
            sources.append(TardisBookSnapshotReplay(p))
        else:
            raise ValueError(f"REPLAY_PATHS: cannot tell the format of {p}")
    return sources


class _StopClock(SystemClock):
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)


class CollectorService(Service):
    name = "collector"

    def setup(self) -> None:
        s = self.settings
        self.processor = FeedProcessor(rate_hz=s.snapshot_rate_hz, store_interval_s=s.snapshot_store_interval_s,
                                       max_staleness_s=s.book_max_staleness_s, source=self.name)
        self._lock = threading.Lock()
        self.snap_writer = self.trade_writer = None
        if self.store is not None:
            from depthpilot.store import BatchWriter

            self.snap_writer = BatchWriter(self.store, "snapshots", max_size=200, max_age_s=1.0)
            self.trade_writer = BatchWriter(self.store, "trades", max_size=1000, max_age_s=1.0)
        self.last_ts = 0
        self.finished = threading.Event()
        self.live = s.collector_source == "live"
        if self.live:
            self.spawn(self._run_live, "live")
        else:
            paths = s.replay_paths or [str(data_dir() / DEFAULT_RECORDING)]
            self.replay_key = "collector.replay." + hashlib.sha1("|".join(sorted(paths)).encode()).hexdigest()[:12]
            self.sources = replay_sources(paths, s.book_depth, s.snapshot_rate_hz)  # fails start-up on a bad path
            self.spawn(self._run_replay, "replay")
        self.spawn(self._tick_loop, "tick")

    # ------------------------------------------------------------------ output
    def _emit(self, out: FeedOutput) -> None:
        for msg in out.publish:
            self.bus.publish(msg)
        for ev in out.events:
            self.bus.publish(ev)
        if self.snap_writer is not None:
            for snap in out.store_snapshots:
                self.snap_writer.add(snap)
            for t in out.store_trades:
                self.trade_writer.add(t)  # type: ignore[union-attr]

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
        while not self.stopping.wait(0.1):
            with self._lock:
                now = time.time_ns() if self.live else self.last_ts
                out = self.processor.tick(now, check_stale=self.live)
            self._emit(out)
            self._flush_store(checkpoint=not self.live)

    def _flush_store(self, checkpoint: bool, force: bool = False) -> None:
        if self.snap_writer is None:
            return
        try:
            last = self.last_ts
            for w in (self.snap_writer, self.trade_writer):
                w.flush() if force else w.maybe_flush()  # type: ignore[union-attr]
            if checkpoint and last and (force or len(self.snap_writer) == 0):
                self.bus.flush(5)
                self.store.set_state(self.replay_key, {"ts_recv": last})  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - kept in the writers' buffers; retried next tick
            log.exception("storing collector data failed; will retry")

    # ------------------------------------------------------------------ replay
    def _shifted(self, loop: int, span: int, msgs: Iterable[m.Message]) -> Iterator[m.Message]:
        offset = loop * span
        for msg in msgs:
            if offset:
                msg.ts_recv += offset
                if msg.ts_exchange:
                    msg.ts_exchange += offset
            yield msg

    def _run_replay(self) -> None:
        s = self.settings
        state = self.store.get_state(self.replay_key) if self.store is not None else None
        resume = int(state["ts_recv"]) if state else 0
        if resume:
            log.info("replay resumes after ts_recv=%d", resume)
        speed = s.replay_speed or None
        loop = 0
        span = 0
        while not self.stopping.is_set():
            first = last = 0
            sources = self.sources if loop == 0 else replay_sources(
                s.replay_paths or [str(data_dir() / DEFAULT_RECORDING)], s.book_depth, s.snapshot_rate_hz)
            stream = self._shifted(loop, span, merge_by_recv(*sources))
            skipping = (msg for msg in stream if msg.ts_recv > resume)
            for msg in pace(skipping, speed, _StopClock(self.stopping)):
                if self.stopping.is_set():
                    return
                first = first or msg.ts_recv
                last = msg.ts_recv
                self.on_message(msg)
            if not s.replay_loop:
                break
            if loop == 0:
                span = max(span, last - first + _NS) if first else _NS
            loop += 1
        with self._lock:
            self._emit(self.processor.tick(self.last_ts + 10 * _NS, check_stale=False))
        self._flush_store(checkpoint=True, force=True)
        log.info("replay finished")
        self.finished.set()

    # ------------------------------------------------------------------ live
    def _run_live(self) -> None:
        asyncio.run(self._live_main())

    async def _live_main(self) -> None:
        tasks = []
        for exchange in self.settings.exchanges:
            if exchange in BINANCE_NATIVE:  # one native diff-depth source per market, all symbols
                tasks.append(asyncio.create_task(self._run_binance(exchange)))
                continue
            for symbol in self.settings.symbols:
                if exchange == "bybit":
                    self.spawn(lambda sym=symbol: self._run_bybit(sym), f"bybit-{symbol}")
                else:
                    tasks.append(asyncio.create_task(self._run_ccxt(exchange, symbol)))
                    if self.settings.collector_trades:
                        tasks.append(asyncio.create_task(self._run_ccxt_trades(exchange, symbol)))
        while not self.stopping.is_set():
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ccxt_retry(self, ev: Any) -> None:
        self.bus.publish(m.RiskEvent(kind="exchange_retry", severity="info", source=self.name, exchange=ev.exchange,
                                     symbol=ev.symbol, message=f"{ev.operation} {ev.error}: retry in {ev.sleep_s:.1f}s"))

    async def _run_ccxt(self, exchange: str, symbol: str) -> None:
        """ccxt order-book feed for one (exchange, symbol)."""
        from collector.ccxt_source import CcxtBookSource

        await self._supervise(exchange, [symbol], "book", lambda: CcxtBookSource(
            exchange, symbol, depth=self.settings.book_depth, mode=self.settings.collector_ccxt_mode,  # type: ignore[arg-type]
            on_retry=self._ccxt_retry, api_base_url=self.settings.ccxt_api_base_url))

    async def _run_ccxt_trades(self, exchange: str, symbol: str) -> None:
        """ccxt trade feed for one (exchange, symbol); a replacement source resumes after the
        last trade the failed one published (REST: its ``since`` watermark and recent ids)."""
        from collector.ccxt_source import CcxtTradeSource

        last: list[CcxtTradeSource] = []

        def make() -> CcxtTradeSource:
            prev = last.pop() if last else None
            src = CcxtTradeSource(exchange, symbol, mode=self.settings.collector_ccxt_mode,  # type: ignore[arg-type]
                                  on_retry=self._ccxt_retry, api_base_url=self.settings.ccxt_api_base_url,
                                  since_ms=prev.since_ms if prev is not None else None,
                                  seen_ids=prev.seen_ids() if prev is not None else ())
            last.append(src)
            return src

        await self._supervise(exchange, [symbol], "trades", make)

    async def _supervise(self, exchange: str, symbols: list[str], what: str, make: Any) -> None:
        """Run ``make()``'s stream into :meth:`on_message`. A source that fails after its own
        retries is closed, reported (``feed_reconnect`` per symbol) and rebuilt with back-off;
        the back-off starts afresh once the feed delivers again."""
        attempt = 0
        while not self.stopping.is_set():
            src = make()
            try:
                async with contextlib.aclosing(src.stream()) as msgs:
                    async for msg in msgs:
                        if attempt and (isinstance(msg, m.Trade) or getattr(msg, "valid", False)):
                            attempt = 0
                        self.on_message(msg)
                        if self.stopping.is_set():
                            return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - restart the feed with back-off, reported
                delay = min(60.0, self.settings.collector_reconnect_initial_s * 2.0 ** attempt)
                attempt += 1
                log.warning("%s %s feed failed (%s: %s); restarting in %.1fs", exchange, what, type(exc).__name__,
                            exc, delay)
                for symbol in symbols:
                    self.bus.publish(self.processor.reconnect(exchange, symbol,
                                                              f"{what}: {type(exc).__name__}: {exc}"[:300]))
                await asyncio.sleep(delay)
            finally:
                await src.close()

    def _binance_source(self, exchange: str) -> Any:
        from collector.binance_ws import BinanceDiffSource

        s = self.settings
        market = BINANCE_NATIVE[exchange]
        ws_url, rest_url = ((s.binance_ws_url, s.binance_rest_url) if market == "spot"
                            else (s.binance_usdm_ws_url, s.binance_usdm_rest_url))

        def on_retry(ev: Any) -> None:
            self.bus.publish(m.RiskEvent(kind="exchange_retry", severity="info", source=self.name, exchange=ev.exchange,
                                         symbol=ev.symbol,
                                         message=f"{ev.operation} {ev.error}: retry in {ev.sleep_s:.1f}s"))

        def on_reconnect(ev: Any) -> None:  # the source reconnects by itself; counted and reported
            for sym in ev.symbols:
                self.bus.publish(self.processor.reconnect(ev.exchange, sym, f"{ev.connection}: {ev.reason}"[:300]))

        return BinanceDiffSource(market, s.symbols, depth=s.book_depth, ws_url=ws_url, rest_url=rest_url,  # type: ignore[arg-type]
                                 on_retry=on_retry, on_reconnect=on_reconnect, depth_stream=s.binance_depth_stream,
                                 trade_stream=s.binance_trade_stream, trades=s.collector_trades,
                                 reconnect_initial_s=s.collector_reconnect_initial_s)

    async def _run_binance(self, exchange: str) -> None:
        """Native Binance diff-depth feed (books and trades of every symbol on one source)."""
        await self._supervise(exchange, list(self.settings.symbols), "book+trades",
                              lambda: self._binance_source(exchange))

    def _run_bybit(self, symbol: str) -> None:
        from collector.bybit_ws import BybitBookStream

        depth = 200 if self.settings.book_depth > 50 else 50
        stream = BybitBookStream(symbol, depth=depth, testnet=self.settings.mode.value == "testnet",
                                 on_update=lambda result, builder: self.on_message(
                                     builder.to_snapshot(self.settings.book_depth)),
                                 on_trade=self.on_message if self.settings.collector_trades else None)
        stream.start()
        self.stopping.wait()
        stream.stop()

    # ------------------------------------------------------------------ lifecycle
    def teardown(self) -> None:
        self._flush_store(checkpoint=not self.live, force=True)

    def stats(self) -> dict[str, float]:
        out = {"published": float(self.processor.published), "throttled": float(self.processor.throttled)}
        now = None if self.live else (self.last_ts or None)  # replay: event time, not wall clock
        for feed in self.processor.health.snapshot(now):
            key = f"{feed['exchange']}.{feed['symbol']}"
            for k in ("updates_per_s", "gaps", "resyncs", "reconnects", "crossed", "staleness_s", "last_latency_ms"):
                v = feed.get(k)
                if isinstance(v, (int, float)):
                    out[f"{key}.{k}"] = float(v)
        return out

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command in ("status", "health"):
            return {"source": self.settings.collector_source, "feeds": self.processor.health.snapshot()}
        return None


SERVICE = CollectorService
