"""The trader's hot path never waits on MongoDB: the paper trader service over the real
RabbitMQ (TEST_AMQP_URL) with a mongomock store wrapped so its writes can block or fail.

* a blocked store write stalls neither books, signals nor a control command, the order waits
  for its intent to be stored, and once released every record arrives once, in order;
* the engine snapshot is coalesced: fill batches within the interval -> one write, the newest;
  a control command and the shutdown write at once;
* a failing store write is retried and reported (health), and nothing is lost.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.settings import load_settings
from depthpilot.store import Store
from tests.trader.svc_helpers import BookFeeder, book, signal, wait_until
from trader.domain import FillReport
from trader.engine import TradingEngine
from trader.service import TraderService

OUT_QUEUE = "api.state"  # binds order.intent/order.update/fill/position/risk
KEY = "trader:paper:binance"
WRITES = frozenset({"upsert_order", "insert_fill", "upsert_position", "insert", "record_closed_trade", "set_state"})


class GatedStore:
    """A Store whose writes wait while ``gate`` is cleared and raise while ``down``; every write
    that went through is logged in order as (method, first argument)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()  # a write is waiting at the gate
        self.down = False
        self.failed = 0
        self.log: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            if not self.gate.is_set():
                self.blocked.set()
                self.gate.wait(30)
            if self.down:
                self.failed += 1
                raise AutoReconnect("connection refused (test: store down)")
            res = attr(*args, **kwargs)
            with self._lock:
                self.log.append((name, args[0]))
            return res

        return write

    def snapshot_writes(self) -> list[Any]:
        with self._lock:
            return [a for n, a in self.log if n == "set_state" and a == KEY]


@pytest.fixture
def paper(amqp_url, uid, monkeypatch):
    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    made: list[Any] = []

    def make(**overrides: Any) -> tuple[TraderService, GatedStore, Any, list[m.Message]]:
        s = load_settings(
            amqp_url=amqp_url,
            mongo_url=f"mongomock://{uid}",
            exchanges=["binance"],
            trader_exchange="binance",
            **overrides,
        )
        store = GatedStore(Store.connect(s.mongo_url, f"outbox_{uid}"))
        test_bus = connect_bus(amqp_url, "outbox-test").start()
        for q in ("trader.book", "trader.signals", "trader.control", OUT_QUEUE):
            test_bus.purge(q)
        seen: list[m.Message] = []
        test_bus.subscribe(OUT_QUEUE, lambda msg, _d: seen.append(msg))
        svc_bus = connect_bus(amqp_url, "trader").start()
        svc = TraderService(s, svc_bus, store).start()
        made.append((svc, store, svc_bus, test_bus))
        return svc, store, test_bus, seen

    yield make
    for svc, store, svc_bus, test_bus in made:
        store.gate.set()
        store.down = False
        svc.stop()
        svc_bus.close()
        test_bus.close()
        store.store.drop_database()


def test_a_blocked_store_write_stalls_neither_books_signals_nor_control(paper):
    svc, store, bus, seen = paper(trader_autostart=["BTCUSDT"])
    rt = svc.runtime
    client = c.ControlClient(bus, requested_by="test", timeout_s=5)
    with BookFeeder(bus, 60000.0):
        wait_until(lambda: rt.counters["books"] > 3)
        store.gate.clear()  # from here every store write hangs until released
        bus.publish(signal("up"))
        bus.publish(signal("up"))  # K = 2 agreeing readings -> a long entry
        assert store.blocked.wait(5), "no store write was attempted"
        wait_until(lambda: rt.engine.symbols["BTCUSDT"].pending, timeout=2)
        # while the intent's write hangs: books and signals are still handled by the engine
        ts0 = rt.engine.symbols["BTCUSDT"].book_ts
        n_signals = rt.engine.counters["signals"]
        bus.publish(signal("up"))
        wait_until(lambda: rt.engine.symbols["BTCUSDT"].book_ts > ts0 + 200_000_000, timeout=3)
        wait_until(lambda: rt.engine.counters["signals"] > n_signals, timeout=3)
        # ... a control command answers within its deadline
        t0 = time.monotonic()
        st = client.call(c.Status(), 1.0)
        assert time.monotonic() - t0 < 1.0 and st.symbols[0].trading
        assert client.call(c.Positions(), 1.0).positions == []
        # ... and the order waits for its intent to be stored (persist before send)
        assert rt.worker.counters["submitted"] == 0
        store.gate.set()
        wait_until(lambda: store.store.positions("paper") and store.store.positions("paper")[0]["qty"] > 0, timeout=5)
        wait_until(lambda: any(isinstance(x, m.PositionUpdate) and x.stop_price for x in seen), timeout=5)
    (cid,) = [o["client_order_id"] for o in store.store.orders()]
    # the store saw the records once each, in the engine's order
    writes = [(n, a) for n, a in store.log if n != "set_state"]
    kinds = [(n, type(a).__name__) for n, a in writes]
    assert kinds[0] == ("upsert_order", "OrderIntent"), kinds
    first_update = kinds.index(("upsert_order", "OrderUpdate"))
    first_fill = kinds.index(("insert_fill", "Fill"))
    first_pos = kinds.index(("upsert_position", "PositionUpdate"))
    assert 0 < first_update and 0 < first_fill < first_pos, kinds
    fill_ids = [a.fill_id for n, a in writes if n == "insert_fill"]
    assert fill_ids and len(fill_ids) == len(set(fill_ids))
    assert store.store.order(cid)["status"] == "filled"
    assert len(store.store.fills(client_order_id=cid)) == len(fill_ids)
    # the bus got each message once, the intent before the order's reports
    ids = [x.id for x in seen]
    assert len(ids) == len(set(ids))
    types = [type(x).__name__ for x in seen]
    assert types.index("OrderIntent") < types.index("OrderUpdate") and types.index("OrderIntent") < types.index("Fill")
    assert sum(isinstance(x, m.Fill) for x in seen) == len(fill_ids)


def _manual_fill(i: int, qty: str = "0.001") -> FillReport:
    """A fill of an order the engine did not place (a venue-side trade): it grows the position."""
    return FillReport(
        "manual-1",
        "binance",
        "BTCUSDT",
        "buy",
        Decimal(qty),
        Decimal("60000"),
        Decimal("0.01"),
        fill_id=f"m{i}",
        ts_ns=time.time_ns(),
    )


def _saved(store: GatedStore) -> TradingEngine:
    return TradingEngine.restore(store.store.get_state(KEY))


def test_engine_snapshot_is_coalesced_and_written_at_once_on_control_and_shutdown(paper):
    svc, store, bus, seen = paper(trader_snapshot_interval_ms=1500)
    rt = svc.runtime
    for _ in range(3):
        rt.on_book(book(60000.0))
    time.sleep(1.6)  # the start-up snapshot is older than the interval
    n0 = len(store.snapshot_writes())
    rt.on_exec_events([_manual_fill(0)])  # a position opened: saved at once
    wait_until(lambda: len(store.snapshot_writes()) == n0 + 1, timeout=0.5)
    t_open = time.monotonic()
    for i in range(1, 9):  # 8 fill batches growing it, well within the interval
        rt.on_exec_events([_manual_fill(i)])
    time.sleep(0.3)
    assert len(store.snapshot_writes()) == n0 + 1  # not one write per batch
    wait_until(lambda: len(store.snapshot_writes()) == n0 + 2, timeout=2.5)
    assert time.monotonic() - t_open > 1.0  # not before the interval
    eng = _saved(store)
    assert eng.symbols["BTCUSDT"].led.signed_qty == Decimal("0.009")  # the newest state
    assert {f"m{i}" for i in range(9)} <= set(eng.symbols["BTCUSDT"].fill_ids)
    time.sleep(1.7)
    assert len(store.snapshot_writes()) == n0 + 2  # nothing changed since: nothing written

    rt.on_exec_events([_manual_fill(9)])  # coalesced: waits for the interval ...
    t0 = time.monotonic()
    rt.act(lambda e: e.stop("BTCUSDT"))  # ... but a control command saves at once
    wait_until(lambda: len(store.snapshot_writes()) == n0 + 3, timeout=0.5)
    assert time.monotonic() - t0 < 0.5
    eng = _saved(store)
    assert not eng.symbols["BTCUSDT"].trading and eng.symbols["BTCUSDT"].led.signed_qty == Decimal("0.010")

    rt.on_exec_events([_manual_fill(10)])
    rt.on_exec_events([_manual_fill(11)])
    svc.stop()  # shutdown: the newest snapshot at once
    assert len(store.snapshot_writes()) == n0 + 4
    assert _saved(store).symbols["BTCUSDT"].led.signed_qty == Decimal("0.012")


def test_a_failing_store_is_retried_and_reported_and_nothing_is_lost(paper):
    svc, store, bus, seen = paper(trader_autostart=["BTCUSDT"])
    rt = svc.runtime
    client = c.ControlClient(bus, requested_by="test", timeout_s=5)
    with BookFeeder(bus, 60000.0):
        wait_until(lambda: rt.counters["books"] > 3)
        store.down = True
        bus.publish(signal("up"))
        bus.publish(signal("up"))
        # the order is not held back by the failing store: traded on the venue, out on the bus
        wait_until(lambda: any(isinstance(x, m.PositionUpdate) and x.qty > 0 for x in seen), timeout=5)
        ack = client.call(c.StopTrading(symbol="all", flatten=True))
        assert "1 closing orders" in ack.message
        wait_until(lambda: rt.counters["closed_trades"] == 1, timeout=5)
        wait_until(lambda: any(isinstance(x, m.PositionUpdate) and x.qty == 0 for x in seen), timeout=5)
        # reported: the health check names it while the store is down
        wait_until(lambda: any("store writes failing" in p for p in svc.problems()), timeout=3)
        wait_until(lambda: svc.status == "degraded", timeout=3)
        assert store.failed >= 2  # retried, not given up after one attempt
        assert store.store.fills(mode="paper") == [] and store.store.closed_trades("paper", n=5) == []
        store.down = False
    # back up: every record written, once, and the health clears
    wait_until(lambda: not svc.problems(), timeout=10)
    wait_until(lambda: svc.status == "ok", timeout=3)
    fills = [x for x in seen if isinstance(x, m.Fill)]
    intents = [x for x in seen if isinstance(x, m.OrderIntent)]
    assert len(intents) == 2 and len(fills) >= 2
    stored_fills = store.store.fills(mode="paper")
    assert sorted(f["id"] for f in stored_fills) == sorted(x.id for x in fills)
    for it in intents:
        o = store.store.order(it.client_order_id)
        assert o["status"] == "filled" and o["intent"]["qty"] == it.qty
    (trade,) = store.store.closed_trades("paper", n=5)
    assert trade["exit_reason"] == "flatten"
    assert store.store.positions("paper")[0]["qty"] == 0
    wait_until(lambda: not _saved(store).symbols["BTCUSDT"].trading, timeout=3)
    eng = _saved(store)
    assert eng.symbols["BTCUSDT"].led.qty == 0 and len(eng.closed) == 1


# --------------------------------------------------------------------------- the outbox alone


class _FlakyStore:
    """Writes fail while ``fail`` > 0 (counting down); successful ones are logged in order."""

    def __init__(self, fail: int) -> None:
        self.fail, self.log = fail, []

    def upsert_position(self, pos: m.PositionUpdate) -> bool:
        if self.fail:
            self.fail -= 1
            raise AutoReconnect("store down (test)")
        self.log.append(pos.qty)
        return True

    def set_state(self, key: str, value: dict) -> None:
        self.log.append(("state", value["n"]))


class _ListBus:
    def __init__(self, die: bool = False) -> None:
        self.sent: list[m.Message] = []
        self.die = die

    def publish(self, msg: m.Message) -> None:
        if self.die:
            raise SystemExit("bus thread killed (test)")
        self.sent.append(msg)


def _pos(qty: str) -> m.PositionUpdate:
    return m.PositionUpdate(
        exchange="binance", symbol="BTCUSDT", mode="paper", qty=Decimal(qty), avg_price=Decimal("60000"), ts=1
    )


def test_outbox_retries_in_order_without_holding_back_the_bus_then_saves_the_newest_snapshot():
    from trader.outbox import Outbox, Write

    store, bus, lock = _FlakyStore(fail=3), _ListBus(), threading.RLock()
    state = {"n": 0}
    box = Outbox(
        store, bus, engine_lock=lock, snapshot=lambda: dict(state), state_key="k", retry_base_s=0.02, interval_s=0.05
    ).start()
    try:
        with lock:
            for q in ("1", "2", "3"):
                p = _pos(q)
                box.put([Write("upsert_position", (p,), {}, p, count="positions")])
                state["n"] += 1
                box.mark_dirty()
        wait_until(lambda: len(bus.sent) == 3, timeout=1)  # the bus did not wait for the store
        assert [x.qty for x in bus.sent] == [1, 2, 3]
        wait_until(lambda: "store writes failing" in box.problem(), timeout=1)
        assert box.flush(5)
        assert store.log == [Decimal(1), Decimal(2), Decimal(3), ("state", 3)]  # in order, once, newest state
        assert box.problem() == "" and box.counters["store_errors"] == 3 and box.counters["positions"] == 3
    finally:
        box.close(2)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_outbox_writer_is_reported_not_hidden():
    from trader.outbox import Outbox, Publish

    box = Outbox(None, _ListBus(die=True), engine_lock=threading.RLock(), snapshot=dict, state_key="k").start()
    box.put([Publish(_pos("1"))])
    assert box.barrier(2)  # returns (does not hang) once the writer is gone
    wait_until(lambda: not box.alive, timeout=2)
    assert "outbox writer died" in box.problem() and "SystemExit" in box.problem()
