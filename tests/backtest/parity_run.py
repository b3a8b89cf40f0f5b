"""The parity harness: one recorded stream through the running services (collector replay ->
features -> predictor -> trader on paper, over a bus URL) and through the backtest, with one
configuration. Used by ``tests/backtest/test_parity.py`` (RabbitMQ) and ``bench/backtest.py``
(the in-memory bus)."""

from __future__ import annotations

import gzip
import os
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"

# one configuration for both paths: the "direction" strategy (trades often enough for a short
# slice), 50 ms paper latency, the default taker fee, instrument rules given explicitly
ENV = {
    "COLLECTOR_SOURCE": "replay",
    "PIPELINE_CLOCK": "replay",
    "REPLAY_LOOP": "false",
    "SNAPSHOT_RATE_HZ": "1000",  # no snapshot throttle: every rebuilt book goes out, as in a backtest
    "DEPTHPILOT_EXCHANGES": "binance",
    "DEPTHPILOT_SYMBOLS": "BTCUSDT",
    "TRADER_EXCHANGE": "binance",
    "TRADER_AUTOSTART": "BTCUSDT",
    "DEPTHPILOT_MODE": "paper",
    "TRADER_ENTRY_THRESHOLD": "0.45",
    "TRADER_CONFIRM_K": "1",
    "TRADER_EXIT_ON_NEUTRAL": "true",
    "TRADER_PAPER_LATENCY_MS": "50",
    "TRADER_PAPER_TICK": "0.01",
    "TRADER_PAPER_LOT": "0.00001",
    "INPUT_MAX_AGE_S": "0",
}
QUEUES = ("features.book", "features.trades", "predictor.features", "trader.book", "trader.signals", "trader.control")


def slice_recording(src_dir: Path, seconds: float, out: Path) -> Path:
    """The first ``seconds`` (by the recorder's receive time) of the raw recording's first file,
    written to ``out`` (a temporary file, never the repository)."""
    raw = sorted((src_dir / "raw").iterdir())[0]
    t0 = None
    with gzip.open(raw, "rt") as f, gzip.open(out, "wt") as g:
        for line in f:
            ts = int(line.split(" ", 1)[0])
            t0 = ts if t0 is None else t0
            if ts - t0 > seconds * 1e9:
                break
            g.write(line)
    return out


@dataclass
class ServicesRun:
    trades: list[Any]
    open_qty: Decimal
    books: int
    signals: int
    counters: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # services started -> the trader took the last signal


def run_services(
    url: str, recording: Path, speed: float, timeout_s: float = 60.0, quiet_s: float = 2.0, **env: str
) -> ServicesRun:
    """Replay ``recording`` through the four services on ``url`` until the trader has taken
    every book and signal (nothing held, no change for ``quiet_s``); the trader's closed trades."""
    from collector.service import CollectorService
    from depthpilot.bus import connect_bus
    from depthpilot.settings import load_settings
    from depthpilot.store import Store
    from features.service import FeaturesService
    from predictor.service import PredictorService
    from trader.service import TraderService

    os.environ["DEPTHPILOT_ENV_FILE"] = ""
    over = {**ENV, "REPLAY_PATHS": str(recording), "REPLAY_SPEED": str(speed), **env}
    saved = {k: os.environ.get(k) for k in over}
    os.environ.update(over)
    try:
        settings = load_settings(amqp_url=url)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    uid = uuid.uuid4().hex[:10]
    store = Store.connect(f"mongomock://{uid}", f"parity_{uid}", snapshot_ttl_s=None)
    services, buses = [], []
    try:
        for cls in (TraderService, PredictorService, FeaturesService, CollectorService):
            bus = connect_bus(url, cls.name).start()
            if cls is TraderService:
                for q in QUEUES:
                    bus.purge(q)  # nothing an earlier run left behind
            svc = cls(settings, bus, store)
            svc.start()
            services.append(svc)
            buses.append(bus)
        rt = services[0].runtime
        start = time.monotonic()
        last, since, sig_at, deadline = None, start, start, start + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with rt._seq:
                now = (rt.counters["books"], rt.counters["signals"], len(rt.replay.held) if rt.replay else 0)
            if now != last:
                if last is None or now[1] != last[1]:
                    sig_at = time.monotonic()
                last, since = now, time.monotonic()
            elif now[0] and not now[2] and time.monotonic() - since > quiet_s:
                break
        else:
            raise AssertionError(f"the services did not finish the replay within {timeout_s:g} s: {last}")
        seconds = sig_at - start  # until the trader took the last signal (held books wait hold_s after it)
        with rt.lock:
            trades = list(rt.engine.closed)
            st = rt.engine.symbols["BTCUSDT"]
            open_qty = st.led.signed_qty
        stats = services[0].stats()
        return ServicesRun(trades, open_qty, rt.counters["books"], rt.counters["signals"], stats, seconds)
    finally:
        for svc in reversed(services):
            svc.stop()
        for bus in buses:
            bus.close()


def backtest_settings() -> Any:
    """The services' settings for the same configuration (for the backtest's TraderConfig)."""
    from depthpilot.settings import load_settings

    os.environ["DEPTHPILOT_ENV_FILE"] = ""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        return load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_backtest(recording: Path) -> tuple[Any, Any]:
    """The same recording through ``backtest.run.run_signals`` with the services' configuration:
    the model on its sampled clock, the service's TraderConfig, paper instrument, fee and latency."""
    from backtest.data import load_recording
    from backtest.run import RunConfig, run_signals
    from backtest.signals import load_model, sampled_probs
    from trader.settings_map import trader_config
    from trader.settings_map import fees
    from trader.venues import paper_instrument

    s = backtest_settings()
    books = load_recording(recording, depth=s.book_depth)
    pred = load_model()
    inst = paper_instrument(books.exchange, books.symbol, s.trader_paper_tick, s.trader_paper_lot)
    cfg = RunConfig(
        trader=trader_config(s),
        fees=fees(s),
        latency_ns=int(s.trader_paper_latency_ms * 1e6),
        balance=Decimal(s.trader_paper_balance),
    )
    return run_signals(books, sampled_probs(pred, books), inst, cfg), books
