"""A trader that dies mid-position comes back and keeps managing it.

* ``kill -9`` of a real ``python -m trader`` subprocess (RabbitMQ on TEST_AMQP_URL, Bybit v5
  via the real pybit client against the local fake venue): the restarted trader reconciles
  with the venue (and the store, when MONGO_URL points at a real MongoDB: without one each
  process has its own in-memory store, so the venue alone is the truth) and keeps trailing:
  it moves the venue's stop-loss up again.
* In process, with the store shared: a crashed trader's successor restores the engine from
  the store (entry, stop, trailing extreme, closed trades) and reconciles with the venue
  without any mismatch, then keeps trailing.
"""

from __future__ import annotations

import os
import signal as sig
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path


from depthpilot import control as c
from depthpilot.bus import connect_bus
from depthpilot.paths import REPO_ROOT
from depthpilot.settings import load_settings
from depthpilot.store import Store
from tests.trader.fakes.bybit_v5 import API_KEY, API_SECRET, FakeBybit
from tests.trader.svc_helpers import BookFeeder, signal, wait_until

MONGO_URL = os.environ.get("MONGO_URL", "")
REAL_MONGO = MONGO_URL.startswith(("mongodb://", "mongodb+srv://"))


def _sl(fake: FakeBybit) -> Decimal:
    pos = fake.state.positions.get("BTCUSDT")
    return Decimal(pos["sl"]) if pos and pos.get("sl") else Decimal(0)


def _set_price(fake: FakeBybit, feed: BookFeeder, px: float) -> None:
    fake.state.fill_price["BTCUSDT"] = Decimal(str(px))
    feed.price = px


def _env(amqp_url: str, fake: FakeBybit, uid: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "DEPTHPILOT_ENV_FILE": "",
        "AMQP_URL": amqp_url,
        "MONGO_URL": MONGO_URL if REAL_MONGO else "mongomock://",
        "MONGO_DB": f"svc_restart_{uid}",
        "DEPTHPILOT_MODE": "testnet",
        "BYBIT_API_KEY": API_KEY,
        "BYBIT_API_SECRET": API_SECRET,
        "BYBIT_BASE_URL": fake.url,
        "TRADER_VENUE": "bybit",
        "TRADER_EXCHANGE": "bybit",
        "DEPTHPILOT_EXCHANGES": "bybit",
        "DEPTHPILOT_SYMBOLS": "BTCUSDT",
        "TRADER_AUTOSTART": "BTCUSDT",
        "TRADER_POLL_INTERVAL_S": "0.2",
        "TRADER_TRAILING_ACTIVATION": "0.001",
        "TRADER_TRAILING_LOCK": "0.5",
        "LOG_LEVEL": "INFO",
    }


def _trading(client: c.ControlClient) -> bool:
    try:
        return client.call(c.Status(), 1).symbols[0].trading
    except c.ControlError:  # not up yet: the command expires unanswered
        return False


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trader"], cwd=REPO_ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def test_kill_9_mid_position_then_restart_keeps_trailing_the_venue_stop(amqp_url, uid, tmp_path):
    log = tmp_path / "trader.log"
    bus = connect_bus(amqp_url, "restart-test").start()
    for q in ("trader.book", "trader.signals", "trader.control"):
        bus.purge(q)
    client = c.ControlClient(bus, requested_by="test", timeout_s=5)
    procs: list[subprocess.Popen] = []
    try:
        with FakeBybit() as fake, BookFeeder(bus, 60000.0, exchange="bybit") as feed:
            _set_price(fake, feed, 60000.0)
            env = _env(amqp_url, fake, uid)
            procs.append(_start(env, log))
            wait_until(lambda: _trading(client), timeout=30)
            for _ in range(2):
                bus.publish(signal("up", exchange="bybit"))
            wait_until(lambda: fake.state.positions.get("BTCUSDT", {}).get("size", 0) > 0, timeout=10)
            wait_until(lambda: _sl(fake) > 0, timeout=10)  # the initial stop is on the venue
            entry = fake.state.positions["BTCUSDT"]["avg"]
            assert _sl(fake) < entry
            _set_price(fake, feed, 60300.0)  # +0.5 %: the trailing stop locks in half of it
            wait_until(lambda: _sl(fake) > entry, timeout=10)
            sl_before = _sl(fake)

            procs[0].send_signal(sig.SIGKILL)  # mid-position, no goodbye
            procs[0].wait(10)
            size = fake.state.positions["BTCUSDT"]["size"]
            _set_price(fake, feed, 60600.0)  # the market moves on while the trader is down
            time.sleep(0.5)
            assert _sl(fake) == sl_before  # nobody moved it meanwhile

            procs.append(_start(env, log))
            wait_until(lambda: _sl(fake) > sl_before, timeout=30)  # trailing again, on the venue
            assert fake.state.positions["BTCUSDT"]["size"] == size  # managed, not closed or doubled
            pos = client.call(c.Positions()).positions
            assert len(pos) == 1 and pos[0].qty == size and pos[0].avg_price == entry
            assert pos[0].stop_price == _sl(fake)
            text = log.read_text()
            assert "reconciled with bybit: 1 venue positions" in text, text[-3000:]
            procs[1].send_signal(sig.SIGTERM)
            assert procs[1].wait(20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        bus.close()


def test_successor_restores_from_store_and_venue_without_mismatch(uid, monkeypatch):
    from depthpilot.bus.memory import MemoryBroker
    from trader.service import TraderService

    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    with FakeBybit() as fake:
        MemoryBroker.reset(uid)
        s = load_settings(
            amqp_url=f"memory://{uid}",
            mongo_url=f"mongomock://{uid}",
            mode="testnet",
            bybit_api_key=API_KEY,
            bybit_api_secret=API_SECRET,
            bybit_base_url=fake.url,
            trader_exchange="bybit",
            exchanges=["bybit"],
            trader_autostart=["BTCUSDT"],
            trader_poll_interval_s=0.1,
            trader_trailing_activation=Decimal("0.001"),
        )
        store = Store.connect(s.mongo_url, f"restore_{uid}")
        feeder_bus = connect_bus(s.amqp_url, "feeder").start()
        with BookFeeder(feeder_bus, 60000.0, exchange="bybit") as feed:
            fake.state.fill_price["BTCUSDT"] = Decimal("60000")
            bus1 = connect_bus(s.amqp_url, "trader").start()
            svc1 = TraderService(s, bus1, store).start()
            wait_until(lambda: svc1.runtime.counters["books"] > 3)
            for _ in range(2):
                feeder_bus.publish(signal("up", exchange="bybit"))
            wait_until(lambda: _sl(fake) > 0, timeout=10)
            _set_price(fake, feed, 60300.0)
            wait_until(lambda: _sl(fake) > fake.state.positions["BTCUSDT"]["avg"], timeout=10)
            with svc1.runtime.lock:
                st1 = svc1.runtime.engine.symbols["BTCUSDT"]
                extreme, stop1, entry_ts = st1.extreme, st1.stop, st1.led.trip.entry_ts
            # crash: consumers and the execution worker vanish, no final save
            bus1.close()
            svc1.runtime.worker.stop()
            svc1.stopping.set()

            bus2 = connect_bus(s.amqp_url, "trader").start()
            svc2 = TraderService(s, bus2, store).start()
            try:
                with svc2.runtime.lock:
                    st2 = svc2.runtime.engine.symbols["BTCUSDT"]
                    assert (st2.stop, st2.extreme, st2.led.trip.entry_ts) == (stop1, extreme, entry_ts)
                    assert st2.led.signed_qty == fake.state.positions["BTCUSDT"]["size"]
                kinds = [e["kind"] for e in store.recent("events", limit=100) if e.get("type") == "risk_event"]
                assert "position_mismatch" not in kinds, kinds
                _set_price(fake, feed, 60600.0)
                wait_until(lambda: _sl(fake) > stop1, timeout=10)
                assert store.positions("testnet")[0]["stop_price"] == _sl(fake)
            finally:
                svc2.stop()
                bus2.close()
        feeder_bus.close()
        store.drop_database()


def test_paper_trader_restart_rebuilds_the_paper_venue_from_stored_fills(uid, monkeypatch):
    """Paper mode: the simulated venue lives in the trader's process, so after a crash it is
    rebuilt from the stored fills and stop; the successor agrees with it and its stop still
    triggers on the books."""
    from depthpilot.bus.memory import MemoryBroker
    from trader.service import TraderService

    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    MemoryBroker.reset(uid)
    s = load_settings(
        amqp_url=f"memory://{uid}",
        mongo_url=f"mongomock://{uid}",
        trader_autostart=["BTCUSDT"],
        trader_trailing_activation=Decimal("0.001"),
    )
    store = Store.connect(s.mongo_url, f"paper_{uid}")
    feeder_bus = connect_bus(s.amqp_url, "feeder").start()
    with BookFeeder(feeder_bus, 60000.0) as feed:
        bus1 = connect_bus(s.amqp_url, "trader").start()
        svc1 = TraderService(s, bus1, store).start()
        wait_until(lambda: svc1.runtime.counters["books"] > 3)
        for _ in range(2):
            feeder_bus.publish(signal("up"))
        wait_until(lambda: svc1.runtime.engine.symbols["BTCUSDT"].stop is not None)
        feed.price = 60300.0
        wait_until(lambda: svc1.runtime.engine.symbols["BTCUSDT"].stop > Decimal("60000"))
        with svc1.runtime.lock:
            qty = svc1.runtime.engine.symbols["BTCUSDT"].led.signed_qty
            stop1 = svc1.runtime.engine.symbols["BTCUSDT"].stop
        wait_until(lambda: store.positions("paper")[0]["stop_price"] == stop1)
        bus1.close()  # crash
        svc1.runtime.worker.stop()
        svc1.stopping.set()

        bus2 = connect_bus(s.amqp_url, "trader").start()
        svc2 = TraderService(s, bus2, store).start()
        try:
            paper = svc2.runtime.client
            assert paper.positions(["BTCUSDT"])[0].qty == qty and paper.stops["BTCUSDT"] == stop1
            kinds = [e["kind"] for e in store.recent("events", limit=100) if e.get("type") == "risk_event"]
            assert "position_mismatch" not in kinds, kinds
            feed.price = float(stop1) - 50  # through the stop: the (rebuilt) paper venue closes it
            wait_until(lambda: svc2.runtime.counters["closed_trades"] == 1, timeout=5)
            t = store.closed_trades("paper", n=1)[0]
            assert t["exit_reason"] in ("stop", "trailing_stop") and t["side"] == "long" and t["pnl"] > 0
            assert not paper.positions(["BTCUSDT"])
        finally:
            svc2.stop()
            bus2.close()
    feeder_bus.close()
    store.drop_database()


def test_ccxt_venue_trades_through_the_service(uid, monkeypatch):
    """TRADER_VENUE=binanceusdm: the real ccxt client against the fake Binance USD-M venue."""
    from depthpilot.bus.memory import MemoryBroker
    from tests.trader.fakes.binance_usdm import API_KEY as BKEY
    from tests.trader.fakes.binance_usdm import API_SECRET as BSECRET
    from tests.trader.fakes.binance_usdm import FakeBinanceUSDM
    from trader.service import TraderService

    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    MemoryBroker.reset(uid)
    fake = FakeBinanceUSDM().start()
    try:
        fake.state.fill_price["BTCUSDT"] = Decimal("60000")
        s = load_settings(
            amqp_url=f"memory://{uid}",
            mongo_url=f"mongomock://{uid}",
            mode="testnet",
            bybit_api_key=BKEY,
            bybit_api_secret=BSECRET,
            trader_venue="binanceusdm",
            ccxt_api_base_url=fake.url,
            trader_autostart=["BTCUSDT"],
            trader_poll_interval_s=0.1,
        )
        store = Store.connect(s.mongo_url, f"ccxt_{uid}")
        feeder = connect_bus(s.amqp_url, "feeder").start()
        bus = connect_bus(s.amqp_url, "trader").start()
        svc = TraderService(s, bus, store).start()
        try:
            assert svc.runtime.exchange == "binanceusdm"
            with BookFeeder(feeder, 60000.0, exchange="binanceusdm"):
                wait_until(lambda: svc.runtime.counters["books"] > 3)
                for _ in range(2):
                    feeder.publish(signal("up", exchange="binanceusdm"))
                wait_until(lambda: svc.runtime.engine.symbols["BTCUSDT"].led.qty > 0, timeout=10)
                wait_until(lambda: store.positions("testnet") and store.positions("testnet")[0]["qty"] > 0)
                client = c.ControlClient(feeder, requested_by="test", timeout_s=10)
                client.call(c.StopTrading(symbol="all", flatten=True))
                wait_until(lambda: svc.runtime.counters["closed_trades"] == 1, timeout=10)
            t = store.closed_trades("testnet", n=1)[0]
            assert t["exit_reason"] == "flatten" and t["exchange"] == "binanceusdm" and t["fees"] > 0
            assert len(store.fills(mode="testnet")) == 2
        finally:
            svc.stop()
            bus.close()
            feeder.close()
            store.drop_database()
    finally:
        fake.stop()
