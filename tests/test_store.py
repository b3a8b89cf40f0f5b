"""Store tests. Run on mongomock-ng always; run the SAME tests against a real MongoDB when
MONGO_URL=mongodb://... is set (each test gets its own uniquely named database, dropped after)."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest
from pymongo.errors import BulkWriteError

from depthpilot import messages as m
from depthpilot.paths import data_dir
from depthpilot.store import (
    BatchWriter,
    DuplicateOrderError,
    InsertStats,
    Store,
    StoreError,
    doc_to_message,
    message_to_doc,
    redact_url,
    snapshot_from_doc,
)

MONGO_URL = os.environ.get("MONGO_URL", "")
BOOK_CSV = "binance-spot-btcusdt-2024-08-08-l2diff/derived_book_snapshot_25.csv.gz"
# synthetic messages are stamped "now" (whole second): older event times fall under the 1-day snapshot TTL
T0 = m.now_ns() // 10**9 * 10**9


@pytest.fixture(params=["mongomock", "mongodb"])
def make_store(request):
    """Factory: make_store(**connect_kwargs) -> Store on a fresh database; all dropped after."""
    if request.param == "mongodb":
        if not MONGO_URL.startswith(("mongodb://", "mongodb+srv://")):
            pytest.skip("set MONGO_URL=mongodb://... to run the store tests against a real server")
        url = MONGO_URL
    else:
        url = "mongomock://test_store"
    db_name = f"depthpilot_test_{uuid.uuid4().hex[:12]}"
    made: list[Store] = []

    def factory(**kw) -> Store:
        s = Store.connect(url, db_name, **kw)
        made.append(s)
        return s

    yield factory
    if made:
        made[0].drop_database()
    for s in made:
        s.close()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


@pytest.fixture(scope="module")
def book_rows():
    """(ts_exchange_ns, ts_recv_ns, bids (n,25,2), asks (n,25,2)) from the real Binance recording."""
    path = data_dir() / BOOK_CSV
    if not path.exists():
        pytest.skip(f"dataset missing: {path} (set DEPTHPILOT_DATA_DIR)")
    import pandas as pd

    df = pd.read_csv(path)
    levels = df.iloc[:, 4:].to_numpy(dtype=np.float64).reshape(len(df), 25, 4)  # ask px, ask qty, bid px, bid qty
    asks, bids = levels[:, :, 0:2].copy(), levels[:, :, 2:4].copy()
    return df["timestamp"].to_numpy(np.int64) * 1000, df["local_timestamp"].to_numpy(np.int64) * 1000, bids, asks


def make_snapshots(book_rows, n: int) -> list[m.BookSnapshot]:
    """n real-shaped snapshots; the 6,493 recorded rows are cycled, each pass shifted later in
    time by the recording span so timestamps stay strictly increasing."""
    ts_ex, ts_rc, bids, asks = book_rows
    rows = len(ts_ex)
    span = int(ts_ex[-1] - ts_ex[0]) + 100_000_000
    out = []
    for i in range(n):
        j, k = i % rows, i // rows
        out.append(
            m.BookSnapshot(
                exchange="binance",
                symbol="BTCUSDT",
                ts_exchange=int(ts_ex[j]) + k * span,
                ts_recv=int(ts_rc[j]) + k * span,
                seq=i,
                bids=bids[j],
                asks=asks[j],
                depth=25,
            )
        )
    return out


def book(ts: int, mid: float = 100.0, symbol: str = "BTCUSDT") -> m.BookSnapshot:
    lv = np.arange(25, dtype=np.float64)
    return m.BookSnapshot(
        exchange="binance",
        symbol=symbol,
        ts_exchange=ts,
        ts_recv=ts + 1_000_000,
        seq=ts,
        bids=np.column_stack([mid - 0.5 - lv, 1.0 + lv]),
        asks=np.column_stack([mid + 0.5 + lv, 2.0 + lv]),
        depth=25,
    )


# --------------------------------------------------------------------------- indexes


def test_indexes_exist(store):
    info = {
        c: store.db[c].index_information()
        for c in ("snapshots", "trades", "features", "signals", "orders", "fills", "positions", "events", "heartbeats")
    }
    for c in ("snapshots", "trades", "features", "signals", "fills"):
        assert info[c]["exchange_symbol_tns"]["key"] == [("exchange", 1), ("symbol", 1), ("tns", 1)]
    ttl = info["snapshots"]["ttl_stored_at"]
    assert ttl["key"] == [("stored_at", 1)] and ttl["expireAfterSeconds"] == 86400
    assert info["orders"]["uniq_client_order_id"]["unique"] is True
    assert info["orders"]["uniq_client_order_id"]["key"] == [("client_order_id", 1)]
    fills = info["fills"]["uniq_order_fill"]
    assert fills["unique"] is True and fills["key"] == [("client_order_id", 1), ("fill_id", 1)]
    assert fills["partialFilterExpression"] == {"fill_id": {"$gt": ""}}
    assert info["positions"]["uniq_position"]["unique"] is True
    assert info["positions"]["uniq_position"]["key"] == [("exchange", 1), ("symbol", 1), ("mode", 1)]
    assert info["events"]["tns"]["key"] == [("tns", -1)]
    assert info["heartbeats"]["uniq_service_instance"]["unique"] is True
    # the message id is the primary key (_id) of message documents: uniqueness for free
    assert "_id_" in info["snapshots"]
    store.ensure_indexes()  # idempotent
    assert store.db.snapshots.index_information() == info["snapshots"]


def test_ttl_is_changed_and_disabled(store):
    Store(store.db, snapshot_ttl_s=3600).ensure_indexes()
    assert store.db.snapshots.index_information()["ttl_stored_at"]["expireAfterSeconds"] == 3600
    Store(store.db, snapshot_ttl_s=None).ensure_indexes()
    assert "ttl_stored_at" not in store.db.snapshots.index_information()
    with pytest.raises(StoreError, match="snapshot_ttl_s"):
        Store(store.db, snapshot_ttl_s=0)


# --------------------------------------------------------------------------- connection errors / redaction


def test_unreachable_server_error_names_url_without_password():
    url = "mongodb://alice:s3cr%40t-pw@127.0.0.1:1/depthpilot?authSource=admin"
    with pytest.raises(StoreError) as ei:
        Store.connect(url, server_selection_timeout_ms=200)
    text = str(ei.value)
    assert "127.0.0.1:1" in text and "alice:***@" in text
    assert "s3cr" not in text and "t-pw" not in text
    assert ei.value.__cause__ is None and ei.value.__suppress_context__  # original text not chained


def test_invalid_url_is_store_error_without_password():
    with pytest.raises(StoreError) as ei:
        Store.connect("mongodb://bob:hunter2@host:notaport/", server_selection_timeout_ms=200)
    assert "hunter2" not in str(ei.value) and "bob:***@" in str(ei.value)
    with pytest.raises(StoreError):
        Store.connect("")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mongodb://u:p@h:27017/db", "mongodb://u:***@h:27017/db"),
        ("mongodb://u:p@ss/w@h1:1,h2:2/db?replicaSet=rs", "mongodb://u:***@h1:1,h2:2/db?replicaSet=rs"),
        (
            "mongodb+srv://u:pw@cluster.example.net/?retryWrites=true",
            "mongodb+srv://u:***@cluster.example.net/?retryWrites=true",
        ),
        (
            "mongodb://h:27017/?authMechanismProperties=AWS_SESSION_TOKEN:abc&w=1",
            "mongodb://h:27017/?authMechanismProperties=***&w=1",
        ),
        ("mongodb://h/?tlsCertificateKeyFilePassword=x", "mongodb://h/?tlsCertificateKeyFilePassword=***"),
        ("mongodb://localhost:27017", "mongodb://localhost:27017"),
        ("mongodb://user@h", "mongodb://user@h"),
        ("not a url", "<unparseable url>"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_repr_is_redacted(store):
    s = Store(store.db, url="mongodb://svc:topsecret@db.internal:27017/x")
    assert "svc:***@db.internal:27017" in repr(s) and "topsecret" not in repr(s)


def test_mongomock_urls_share_one_server_per_url():
    name = f"depthpilot_test_{uuid.uuid4().hex[:12]}"
    a = Store.connect("mongomock://shared", name, snapshot_ttl_s=None)
    b = Store.connect("mongomock://shared", name, snapshot_ttl_s=None)
    c = Store.connect("mongomock://other", name, snapshot_ttl_s=None)
    try:
        assert a.insert(book(T0))
        assert b.count("snapshots") == 1 and c.count("snapshots") == 0
    finally:
        a.drop_database()
        c.drop_database()


# --------------------------------------------------------------------------- conversion


def test_snapshot_round_trip_equal_arrays(store, book_rows):
    ts_ex, ts_rc, bids, asks = book_rows
    now = m.now_ns()  # real book, current time: a 2024 event time would be past the 1-day TTL
    snap = m.BookSnapshot(
        exchange="binance",
        symbol="BTCUSDT",
        ts_exchange=now,
        ts_recv=now + int(ts_rc[100] - ts_ex[100]),
        seq=100,
        bids=bids[100],
        asks=asks[100],
        depth=25,
        valid=False,
        reason="stale",
    )
    snap.stamp("collector")
    assert store.insert(snap) is True
    raw = store.db.snapshots.find_one({"_id": snap.id})
    assert raw["bids"]["shape"] == [25, 2] and len(raw["bids"]["data"]) == 25 * 2 * 8
    assert raw["tns"] == snap.ts_exchange
    assert raw["time"] == datetime.fromtimestamp(snap.ts_exchange // 1_000_000 / 1000, tz=timezone.utc)
    back = store.latest_snapshot("binance", "BTCUSDT")
    assert isinstance(back, m.BookSnapshot)
    np.testing.assert_array_equal(back.bids, snap.bids)
    np.testing.assert_array_equal(back.asks, snap.asks)
    assert back.bids.dtype == np.float64 and back.bids.flags.writeable
    for f in ("id", "v", "trace", "exchange", "symbol", "ts_exchange", "ts_recv", "seq", "depth", "valid", "reason"):
        assert getattr(back, f) == getattr(snap, f), f
    assert snapshot_from_doc(raw).mid() == snap.mid()
    assert store.latest_snapshot("binance", "ETHUSDT") is None


def test_other_messages_round_trip(store):
    fv = m.FeatureVector(
        exchange="bybit",
        symbol="BTCUSDT",
        ts=T0,
        spec_hash="abc",
        values=np.array([1.5, -2.0, 3.25]),
        names=["a", "b", "c"],
    )
    sig = m.Signal(
        exchange="bybit",
        symbol="BTCUSDT",
        ts=T0,
        model_id="lstm1",
        classes=["down", "flat", "up"],
        probs=[0.2, 0.3, 0.5],
        score=0.3,
        expires_at=T0 + 10**9,
        decision="up",
    )
    tr = m.Trade(
        exchange="bybit",
        symbol="BTCUSDT",
        ts_exchange=0,
        ts_recv=T0,
        price=61000.5,
        size=0.01,
        side=m.Side.SELL,
        trade_id="7",
    )
    ev = m.RiskEvent(kind="book_gap", exchange="bybit", symbol="BTCUSDT", data={"gap": 3}, ts=T0)
    note = m.Notification(level="trade", title="t", text="x")
    for coll, msg in [("features", fv), ("signals", sig), ("trades", tr), ("events", ev), ("events", note)]:
        assert store.insert_many(coll, [msg]) == InsertStats(inserted=1)
        back = doc_to_message(store.db[coll].find_one({"_id": msg.id}))
        assert type(back) is type(msg) and back.id == msg.id
        for f in msg.__struct_fields__:
            a, b = getattr(back, f), getattr(msg, f)
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, (coll, f)
    assert store.db.trades.find_one({"_id": tr.id})["tns"] == T0  # ts_exchange unknown -> ts_recv
    rec = store.recent("features")[0]
    assert rec["values"] == [1.5, -2.0, 3.25] and rec["id"] == fv.id  # JSON-ready
    assert {d["type"] for d in store.recent("events")} == {"risk_event", "notification"}


def test_conversion_rejects_bad_input(store):
    with pytest.raises(StoreError, match="stores BookSnapshot"):
        store.insert_many(
            "snapshots",
            [m.Trade(exchange="x", symbol="y", ts_exchange=1, ts_recv=1, price=1.0, size=1.0, side=m.Side.BUY)],
        )
    with pytest.raises(StoreError, match="not a message collection"):
        store.insert_many("orders", [])
    with pytest.raises(StoreError, match="unknown collection"):
        store.count("nope")
    with pytest.raises(StoreError, match="no known message type"):
        doc_to_message({"_id": "x", "type": "weird"})
    doc = message_to_doc(book(T0))
    doc["v"] = 99
    with pytest.raises(StoreError, match="v99"):
        doc_to_message(doc)
    doc = message_to_doc(book(T0))
    doc["bids"]["shape"] = [7, 2]
    with pytest.raises(StoreError, match="malformed"):
        doc_to_message(doc)
    with pytest.raises(StoreError, match="since"):
        store.recent("snapshots", since=1.5)


# --------------------------------------------------------------------------- batched inserts


def test_batched_insert_10k_real_snapshots_is_idempotent(make_store, book_rows):
    # no TTL here: the dataset is from 2024 (a real server's TTL monitor would delete it), and
    # mongomock re-scans a TTL'd collection on every write (a mock artefact, O(n^2) for 10k).
    store = make_store(snapshot_ttl_s=None)
    snaps = make_snapshots(book_rows, 10_000)
    first = store.insert_many("snapshots", snaps)
    assert first == InsertStats(inserted=10_000, duplicates=0)
    assert store.count("snapshots") == 10_000
    again = store.insert_many("snapshots", snaps)
    assert again == InsertStats(inserted=0, duplicates=10_000)
    assert store.count("snapshots", "binance", "BTCUSDT") == 10_000
    # partial overlap: half old, half new
    more = make_snapshots(book_rows, 10_500)[10_000:]
    assert store.insert_many("snapshots", snaps[:500] + more) == InsertStats(inserted=500, duplicates=500)
    # export order and content
    got = list(
        store.iter_docs(
            "snapshots", "binance", "BTCUSDT", start=snaps[6493].ts_exchange, end=snaps[6503].ts_exchange, batch_size=4
        )
    )
    assert [d["seq"] for d in got] == list(range(6493, 6503))
    np.testing.assert_array_equal(got[0]["bids"], book_rows[2][0])  # second pass restarts at row 0
    latest = store.latest_snapshot("binance", "BTCUSDT")
    assert latest.seq == 10_499
    msgs = list(store.iter_messages("snapshots", "binance", "BTCUSDT", end=snaps[3].ts_exchange))
    assert [x.id for x in msgs] == [s.id for s in snaps[:3]]


def test_non_duplicate_bulk_error_is_raised(store):
    class FailingColl:
        name = "snapshots"

        def insert_many(self, docs, ordered):
            raise BulkWriteError(
                {
                    "writeErrors": [
                        {"index": 0, "code": 11000, "errmsg": "dup"},
                        {"index": 1, "code": 121, "errmsg": "Document failed validation"},
                    ],
                    "nInserted": 0,
                }
            )

    with pytest.raises(StoreError, match="121.*validation"):
        store._insert_docs(FailingColl(), [{}, {}])

    class DupColl(FailingColl):
        def insert_many(self, docs, ordered):
            raise BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "nInserted": 3})

    assert store._insert_docs(DupColl(), [{}] * 4) == InsertStats(inserted=3, duplicates=1)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_batch_writer_flushes_by_size_and_age(store):
    clock = Clock()
    w = BatchWriter(store, "snapshots", max_size=5, max_age_s=1.0, clock=clock)
    snaps = [book(T0 + i * 10**8) for i in range(12)]
    assert [w.add(s) for s in snaps[:3]] == [False] * 3
    assert w.maybe_flush(clock.t + 0.5) is None and store.count("snapshots") == 0
    assert w.maybe_flush(clock.t + 1.0) == InsertStats(inserted=3)
    assert store.count("snapshots") == 3 and len(w) == 0
    assert [w.add(s) for s in snaps[3:8]] == [False] * 4 + [True]
    assert w.maybe_flush() == InsertStats(inserted=5)
    for s in snaps[:2] + snaps[8:]:  # 2 replays + 4 new
        w.add(s)
    assert w.flush() == InsertStats(inserted=4, duplicates=2)
    assert (w.inserted, w.duplicates, w.flushes) == (12, 2, 4)  # 6 buffered, max_size 5: two batches
    assert store.count("snapshots") == 12
    assert w.flush() == InsertStats() and w.maybe_flush() is None
    with pytest.raises(StoreError, match="stores BookSnapshot"):
        w.add(m.Notification(text="x"))


def test_batch_writer_keeps_batch_on_failure_and_caps_buffer(store):
    class Flaky:
        def __init__(self, inner):
            self.inner, self.fail = inner, True

        def insert_many(self, coll, msgs):
            if self.fail:
                self.fail = False
                raise StoreError("server down")
            return self.inner.insert_many(coll, msgs)

    w = BatchWriter(Flaky(store), "snapshots", max_size=2, max_age_s=1.0, max_buffer=4)
    snaps = [book(T0 + i) for i in range(6)]
    for s in snaps[:3]:
        w.add(s)
    with pytest.raises(StoreError, match="server down"):
        w.flush()
    assert len(w) == 3  # nothing lost
    for s in snaps[3:]:
        w.add(s)  # 6 > cap 4: the two oldest are dropped
    assert w.dropped == 2 and len(w) == 4
    assert w.flush() == InsertStats(inserted=4)
    assert {d["id"] for d in store.recent("snapshots")} == {s.id for s in snaps[2:]}


def test_batch_writer_is_thread_safe(store):
    w = BatchWriter(store, "trades", max_size=50, max_age_s=0.01)
    n_threads, per = 4, 500

    def producer(k):
        for i in range(per):
            w.add(
                m.Trade(
                    exchange="binance",
                    symbol="BTCUSDT",
                    ts_exchange=T0 + k * per + i,
                    ts_recv=T0,
                    price=1.0,
                    size=1.0,
                    side=m.Side.BUY,
                )
            )
            w.maybe_flush()

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.flush()
    assert store.count("trades") == n_threads * per == w.inserted and w.duplicates == 0 and w.dropped == 0


# --------------------------------------------------------------------------- orders / fills / positions


def intent(coid: str = "c1", **kw) -> m.OrderIntent:
    return m.OrderIntent(client_order_id=coid, exchange="bybit", symbol="BTCUSDT", side=m.Side.BUY, qty=1.0, **kw)


def update(status: str, ts: int, filled: float = 0.0, coid: str = "c1", **kw) -> m.OrderUpdate:
    return m.OrderUpdate(
        client_order_id=coid,
        exchange="bybit",
        symbol="BTCUSDT",
        status=status,
        side=m.Side.BUY,
        qty=1.0,
        filled_qty=filled,
        ts=ts,
        **kw,
    )


def test_duplicate_client_order_id_rejected(store):
    it = intent(reason="signal up")
    store.insert_order_intent(it, mode="paper")
    with pytest.raises(DuplicateOrderError) as ei:
        store.insert_order_intent(it)  # replay of the same message
    assert ei.value.same_message is True and ei.value.client_order_id == "c1"
    with pytest.raises(DuplicateOrderError) as ei:
        store.insert_order_intent(intent(reason="another"))  # new intent, same id
    assert ei.value.same_message is False and ei.value.existing["status"] == "intent"
    # the idempotent path accepts a replay but still refuses a different intent
    assert store.upsert_order(it) is False
    with pytest.raises(DuplicateOrderError):
        store.upsert_order(intent())
    # an order first seen through an exchange update also blocks a new intent with its id
    assert store.upsert_order(update("accepted", T0, coid="c2"))
    with pytest.raises(DuplicateOrderError):
        store.insert_order_intent(intent("c2"))
    assert store.upsert_order(intent("c2")) is True  # attaches the intent, keeps the status
    assert store.order("c2")["status"] == "accepted" and store.order("c2")["intent"]["client_order_id"] == "c2"
    assert store.count("orders") == 2
    o = store.order("c1")
    assert o["status"] == "intent" and o["mode"] == "paper" and o["intent"]["reason"] == "signal up"


def test_order_status_never_regresses(store):
    store.insert_order_intent(intent())
    assert store.upsert_order(update("accepted", T0 + 1))
    assert store.upsert_order(update("partially_filled", T0 + 2, 0.3))
    assert store.upsert_order(update("partially_filled", T0 + 4, 0.7))
    assert store.upsert_order(update("partially_filled", T0 + 3, 0.5)) is False  # late, smaller fill
    assert store.order("c1")["filled_qty"] == Decimal("0.7")
    assert store.upsert_order(update("filled", T0 + 5, 1.0))
    for late in (
        update("new", T0),
        update("accepted", T0 + 1),
        update("partially_filled", T0 + 4, 0.7),
        update("cancelled", T0 + 9, 1.0),
        update("rejected", T0 + 9, 0.0),
    ):
        assert store.upsert_order(late) is False, late.status
    o = store.order("c1")
    assert (o["status"], o["filled_qty"]) == ("filled", Decimal("1.0"))
    # the same terminal status may be refined (avg price arrives later); re-applying is harmless
    assert store.upsert_order(update("filled", T0 + 6, 1.0, avg_price=61000.0))
    assert store.upsert_order(update("filled", T0 + 6, 1.0, avg_price=61000.0))
    o = store.order("c1")
    assert (o["status"], o["avg_price"], o["intent"]["qty"]) == ("filled", Decimal("61000.0"), Decimal("1.0"))
    assert isinstance(o["avg_price"], Decimal)  # exact money comes back as Decimal
    # update arriving before anything else creates the order; cancel wins over late accept
    assert store.upsert_order(update("cancelled", T0 + 2, coid="c3"))
    assert store.upsert_order(update("accepted", T0 + 1, coid="c3")) is False
    assert [o["client_order_id"] for o in store.orders(status=["cancelled", "filled"])] == ["c1", "c3"]
    assert store.orders(status="accepted") == []
    with pytest.raises(StoreError, match="unknown order status"):
        store.orders(status="done")
    assert store.count("orders") == 2


def fill(fill_id: str, fee: float, ts: int, coid: str = "c1", qty: float = 0.5, price: float = 100.0) -> m.Fill:
    return m.Fill(
        client_order_id=coid,
        exchange="bybit",
        symbol="BTCUSDT",
        side=m.Side.BUY,
        qty=qty,
        price=price,
        fee=fee,
        fill_id=fill_id,
        ts=ts,
    )


def test_insert_fill_idempotent(store):
    f1 = fill("f1", 0.1, T0)
    assert store.insert_fill(f1, mode="paper") is True
    assert store.insert_fill(f1, mode="paper") is False  # same message
    assert store.insert_fill(fill("f1", 0.1, T0), mode="paper") is False  # same exchange fill, new message
    assert store.insert_fill(fill("", 0.1, T0)) is True  # no fill id: dedup by message id only
    assert store.insert_fill(fill("", 0.1, T0)) is True
    assert store.count("fills") == 3


def pos(ts: int, qty: float, realized: float, fees: float, mode: str = "paper", symbol: str = "BTCUSDT"):
    return m.PositionUpdate(
        exchange="bybit",
        symbol=symbol,
        qty=qty,
        avg_price=100.0,
        realized_pnl=realized,
        fees_paid=fees,
        unrealized_pnl=1.0,
        mode=mode,
        ts=ts,
    )


def test_positions_upsert_idempotent(store):
    p1 = pos(T0 + 10, 1.0, 5.0, 0.2)
    assert store.upsert_position(p1)
    before = store.positions()
    assert store.upsert_position(p1)  # same message again: same state
    assert store.positions() == before and len(before) == 1
    assert store.upsert_position(pos(T0 + 5, 9.0, 0.0, 0.0)) is False  # older, arrives late
    assert store.positions()[0]["qty"] == Decimal("1.0")
    assert store.upsert_position(pos(T0 + 20, -2.0, 7.0, 0.3))
    assert store.upsert_position(pos(T0 + 1, 3.0, 0.0, 0.0, mode="live"))
    paper = store.positions("paper")
    assert len(paper) == 1 and paper[0]["qty"] == Decimal("-2.0") and paper[0]["msg_id"] and "_id" not in paper[0]
    assert len(store.positions()) == 2 and store.positions("live")[0]["qty"] == Decimal("3.0")
    assert store.count("positions") == 2 and store.count("position_history") == 4  # p1 stored once


def test_pnl_summary(store):
    store.upsert_position(pos(T0 + 10, 1.0, 2.0, 0.1))
    store.upsert_position(pos(T0 + 20, 0.0, 5.0, 0.3))
    store.upsert_position(pos(T0 + 15, 1.0, 4.0, 0.2, symbol="ETHUSDT"))
    store.upsert_position(pos(T0 + 15, 1.0, 100.0, 1.0, mode="live"))
    store.insert_fill(fill("a", 0.1, T0 + 10), mode="paper")
    store.insert_fill(fill("b", 0.2, T0 + 20, price=110.0), mode="paper")
    store.insert_fill(fill("c", 9.0, T0 + 20), mode="live")
    s = store.pnl_summary("paper")
    # exact: 0.1 + 0.2 is 0.3 (no float drift)
    assert s["positions"] == 2 and s["realized_pnl"] == Decimal("9.0") and s["fees"] == Decimal("0.5")
    assert s["net_pnl"] == Decimal("8.5") and s["unrealized_pnl"] == Decimal("2.0")
    assert (s["fill_count"], s["fill_fees"], s["fill_notional"]) == (2, Decimal("0.3"), Decimal("105.0"))
    since = store.pnl_summary("paper", since=T0 + 12)
    # BTC: 5.0 - 2.0 (state before since), ETH: first update after since -> all 4.0
    assert since["realized_pnl"] == Decimal("7.0") and since["fees"] == Decimal("0.4")
    assert since["fill_count"] == 1 and since["fill_fees"] == Decimal("0.2")
    assert since["since"] == datetime.fromtimestamp((T0 + 12) // 10**6 / 1000, tz=timezone.utc)
    assert store.pnl_summary("testnet")["fill_count"] == 0


# --------------------------------------------------------------------------- queries, heartbeats, state


def test_recent_and_iter_filters(store):
    snaps = [book(T0 + i * 10**8, symbol="BTCUSDT" if i % 2 else "ETHUSDT") for i in range(10)]
    assert store.insert_many("snapshots", snaps).inserted == 10
    rec = store.recent("snapshots", "binance", "BTCUSDT", limit=3)
    assert [d["seq"] for d in rec] == [T0 + 9 * 10**8, T0 + 7 * 10**8, T0 + 5 * 10**8]  # newest first
    assert isinstance(rec[0]["bids"], list) and len(rec[0]["bids"]) == 25
    since = datetime.fromtimestamp((T0 + 6 * 10**8) / 1e9, tz=timezone.utc)
    assert [d["seq"] for d in store.recent("snapshots", symbol="BTCUSDT", since=since)] == [
        T0 + 9 * 10**8,
        T0 + 7 * 10**8,
    ]
    assert len(store.recent("snapshots", since=since)) == 4
    it = list(store.iter_docs("snapshots", "binance", "ETHUSDT", start=T0 + 2 * 10**8, end=T0 + 8 * 10**8))
    assert [d["seq"] for d in it] == [T0 + 2 * 10**8, T0 + 4 * 10**8, T0 + 6 * 10**8]
    assert isinstance(it[0]["asks"], np.ndarray) and it[0]["asks"].shape == (25, 2)
    assert store.count("snapshots", symbol="ETHUSDT") == 5
    with pytest.raises(StoreError, match="limit"):
        store.recent("snapshots", limit=0)


def test_heartbeats_and_collector_state(store):
    hb = m.ServiceHeartbeat(service="collector", instance="a", ts=T0 + 2, stats={"msgs": 5.0})
    assert store.record_heartbeat(hb)
    assert store.record_heartbeat(m.ServiceHeartbeat(service="collector", instance="a", ts=T0 + 1)) is False
    assert store.record_heartbeat(m.ServiceHeartbeat(service="trader", instance="a", ts=T0))
    hbs = store.heartbeats()
    assert [(h["service"], h["stats"]) for h in hbs] == [("collector", {"msgs": 5.0}), ("trader", {})]
    assert store.get_state("binance:BTCUSDT") is None
    store.set_state("binance:BTCUSDT", {"seq": 5})
    store.set_state("binance:BTCUSDT", {"seq": 7})
    assert store.get_state("binance:BTCUSDT") == {"seq": 7}


def test_error_text_echoing_the_password_is_scrubbed():
    from depthpilot.redact import scrub as _scrub

    url = "mongodb://u:p4@h/?tlsCertificateKeyFilePassword=abc&tls=true"
    out = _scrub(f"auth failed for {url}; password p4 tried; apply ok", url)
    assert "p4" not in out and "abc" not in out and "apply ok" in out and "u:***@h" in out


def test_ttl_counts_from_storage_not_event_time(store, book_rows):
    """A replayed 2024 recording must survive its first TTL sweep: expiry is keyed on when the
    document was stored."""
    ts_ex, ts_rc, bids, asks = book_rows
    snap = m.BookSnapshot(
        exchange="binance",
        symbol="BTCUSDT",
        ts_exchange=int(ts_ex[0]),
        ts_recv=int(ts_rc[0]),
        seq=1,
        bids=bids[0],
        asks=asks[0],
        depth=25,
    )
    before = datetime.now(timezone.utc)
    assert store.insert(snap)
    raw = store.db.snapshots.find_one({"_id": snap.id})
    stored = raw["stored_at"] if raw["stored_at"].tzinfo else raw["stored_at"].replace(tzinfo=timezone.utc)
    assert stored >= before - timedelta(seconds=1)
    assert raw["time"].year == 2024
    info = store.db.snapshots.index_information()["ttl_stored_at"]
    assert info["key"] == [("stored_at", 1)]
    store.ping()
