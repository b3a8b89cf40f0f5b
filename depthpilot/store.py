"""MongoDB persistence for depthpilot messages and trading state (pymongo API only).

One module, one class: :class:`Store`. ``Store.connect("mongodb://...")`` talks to a real
server; ``Store.connect("mongomock://...")`` gives an in-process ``mongomock_ng`` client (one
shared in-memory server per distinct URL in the process, so two services in one test process
that connect to ``mongomock://`` see the same data).

Document layout
---------------
Message collections (snapshots, trades, features, signals, fills, events, position_history)
hold one document per message: ``depthpilot.messages.to_builtins(msg)`` with

* ``_id``  = the message ``id``. The message id *is* the primary key, so re-inserting the same
  message after a restart is a duplicate-key no-op and no second unique index is needed on the
  hot collections (one random-key B-tree per insert instead of two: ObjectId ``_id`` + unique
  ``msg_id``). Reading back renames ``_id`` to ``id``.
* ``tns``  = normalised event time, int ns (``ts_exchange`` or ``ts_recv`` for books/trades,
  ``ts`` where the message has one, else ``trace["created"]``). Exact ordering; all queries
  and the ``(exchange, symbol, tns)`` indexes use it.
* ``time`` = the same instant as a BSON datetime (ms), used by the snapshot TTL index and for
  humans. (Not called ``ts``: FeatureVector/Signal/Fill/... already have ``ts`` in ns.)
* numpy arrays (book sides, feature values) as ``{"shape": [n, 2], "data": <BSON binary of
  little-endian float64 bytes>}`` -- 400 bytes for a 25-level side instead of 50 BSON doubles
  in nested arrays.

State collections hold the latest state per key: ``orders`` (unique ``client_order_id``),
``positions`` (unique ``exchange, symbol, mode``), ``heartbeats`` (unique ``service,
instance``), ``collector_state`` (``_id`` = key). Their ``_id`` is an ObjectId and is dropped
when read; the last applied message id is kept as ``msg_id``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import msgspec
import numpy as np
import pymongo
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from depthpilot import messages as m
from depthpilot.redact import redact_url, scrub

__all__ = [
    "Store",
    "StoreError",
    "DuplicateOrderError",
    "InsertStats",
    "BatchWriter",
    "COLLECTIONS",
    "MESSAGE_COLLECTIONS",
    "ORDER_STATUS_RANK",
    "message_to_doc",
    "doc_to_message",
    "snapshot_from_doc",
    "pack_array",
    "unpack_array",
    "redact_url",
    "event_ns",
    "ns_to_datetime",
]

log = logging.getLogger(__name__)

MOCK_SCHEME = "mongomock://"
TTL_INDEX = "ttl_stored_at"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class StoreError(RuntimeError):
    """Any store failure: unreachable server, bad input, undecodable document, write error."""


class DuplicateOrderError(StoreError):
    """An order with this ``client_order_id`` already exists (the same intent must never
    become two orders). ``same_message`` is True when the stored intent is this very message
    (a replay), False when a different intent or an exchange update already holds the id."""

    def __init__(self, client_order_id: str, existing: Mapping[str, Any] | None, same_message: bool):
        self.client_order_id = client_order_id
        self.existing = dict(existing) if existing is not None else None
        self.same_message = same_message
        status = existing.get("status") if existing else "?"
        what = "this intent was already recorded" if same_message else "a different order holds it"
        super().__init__(f"duplicate client_order_id {client_order_id!r} (status {status!r}): {what}")


@dataclass(frozen=True)
class InsertStats:
    """Result of a batched insert: new documents and duplicates ignored (idempotent replays)."""

    inserted: int = 0
    duplicates: int = 0

    def __add__(self, other: "InsertStats") -> "InsertStats":
        return InsertStats(self.inserted + other.inserted, self.duplicates + other.duplicates)


# --------------------------------------------------------------------------- collections

#: collection -> message types it stores one-document-per-message
MESSAGE_COLLECTIONS: dict[str, tuple[type[m.Message], ...]] = {
    "snapshots": (m.BookSnapshot,),
    "trades": (m.Trade,),
    "features": (m.FeatureVector,),
    "signals": (m.Signal,),
    "fills": (m.Fill,),
    "events": (m.RiskEvent, m.Notification),
    "position_history": (m.PositionUpdate,),
}
STATE_COLLECTIONS = ("orders", "positions", "heartbeats", "collector_state")
COLLECTIONS: tuple[str, ...] = (*MESSAGE_COLLECTIONS, *STATE_COLLECTIONS)

_COLLECTION_BY_TYPE: dict[type[m.Message], str] = {
    t: name for name, types in MESSAGE_COLLECTIONS.items() for t in types
}

#: order status progression; a stored order never moves to a lower rank, and a terminal
#: status (rank 4) never changes to another status.
ORDER_STATUS_RANK: dict[str, int] = {
    "intent": 0,  # recorded by the trader before sending; no exchange ack yet
    "new": 1,
    "accepted": 2,
    "partially_filled": 3,
    "filled": 4,
    "cancelled": 4,
    "rejected": 4,
    "expired": 4,
}
_TERMINAL_RANK = 4

_INTENT_SCALARS = ("exchange", "symbol", "side", "qty")
_UPDATE_FIELDS = ("exchange", "symbol", "side", "qty", "status", "filled_qty", "avg_price",
                  "exchange_order_id", "reason", "ts")
_STATE_DROP = ("id", "type", "v", "trace")


# --------------------------------------------------------------------------- conversion


def _array_fields(cls: type[m.Message]) -> tuple[str, ...]:
    cached = _ARRAY_FIELDS.get(cls)
    if cached is None:
        cached = tuple(f.name for f in msgspec.structs.fields(cls) if f.type is np.ndarray)
        _ARRAY_FIELDS[cls] = cached
    return cached


_ARRAY_FIELDS: dict[type, tuple[str, ...]] = {}


def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """ndarray -> ``{"shape": [...], "data": float64 little-endian bytes}`` (BSON binary)."""
    a = np.ascontiguousarray(arr, dtype="<f8")
    return {"shape": list(a.shape), "data": a.tobytes()}


def unpack_array(obj: Any) -> np.ndarray:
    """Inverse of :func:`pack_array` (returns a writable float64 array)."""
    try:
        shape = tuple(int(s) for s in obj["shape"])
        arr = np.frombuffer(obj["data"], dtype="<f8")
        return arr.reshape(shape).astype(np.float64, copy=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"stored array is malformed: {exc}") from exc


def _is_packed(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 2 and "shape" in v and "data" in v


def event_ns(msg: m.Message) -> int:
    """The instant a message describes, ns since epoch (see module docstring)."""
    if isinstance(msg, (m.BookSnapshot, m.Trade)):
        t = msg.ts_exchange or msg.ts_recv
    else:
        t = getattr(msg, "ts", 0) or 0
    if not t:
        t = msg.trace.get("created") or m.now_ns()
    return int(t)


def ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ns // 1_000_000)  # BSON datetimes hold ms


def _to_ns(t: int | datetime, what: str) -> int:
    if isinstance(t, datetime):
        if t.tzinfo is None:  # naive = UTC (as pymongo returns without tz_aware)
            t = t.replace(tzinfo=timezone.utc)
        return (t - _EPOCH) // timedelta(microseconds=1) * 1000
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    raise StoreError(f"{what} must be an int (ns since epoch) or a datetime, got {type(t).__name__}")


def message_to_doc(msg: m.Message) -> dict[str, Any]:
    """Message -> MongoDB document (message id as ``_id``, arrays packed, ``tns``/``time``)."""
    if not isinstance(msg, m.Message):
        raise StoreError(f"expected a depthpilot message, got {type(msg).__name__}")
    doc = m.to_builtins(msg)
    doc["_id"] = doc.pop("id")
    for name in _array_fields(type(msg)):
        doc[name] = pack_array(getattr(msg, name))
    tns = event_ns(msg)
    doc["tns"] = tns
    doc["time"] = ns_to_datetime(tns)
    # TTL counts from when we stored it, not from the event: a replayed 2024 recording must
    # not vanish the moment it is written.
    doc["stored_at"] = datetime.now(timezone.utc)
    return doc


def _convert_dec_hook(typ: type, obj: Any) -> Any:
    if typ is np.ndarray and isinstance(obj, np.ndarray):
        return obj
    raise NotImplementedError(f"cannot decode {typ!r} from {type(obj).__name__}")


def doc_to_message(doc: Mapping[str, Any]) -> m.Message:
    """Stored message document (raw, as returned by pymongo) -> the typed message."""
    d = dict(doc)
    if "_id" in d:
        d["id"] = d.pop("_id")
    tag = d.get("type")
    cls = m.MESSAGE_BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise StoreError(f"document {d.get('id')!r} has no known message type (type={tag!r})")
    for name in _array_fields(cls):
        if name in d:
            d[name] = unpack_array(d[name])
    d.pop("time", None)  # datetime, not a message field (unknown fields are ignored anyway)
    try:
        msg = msgspec.convert(d, cls, dec_hook=_convert_dec_hook)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise StoreError(f"stored {tag} {d.get('id')!r} does not match its schema: {exc}") from exc
    if msg.v != cls.VERSION:
        raise StoreError(f"stored {tag} {msg.id!r} has schema v{msg.v}, this build speaks v{cls.VERSION}")
    return msg


def snapshot_from_doc(doc: Mapping[str, Any]) -> m.BookSnapshot:
    msg = doc_to_message(doc)
    if not isinstance(msg, m.BookSnapshot):
        raise StoreError(f"document {msg.id!r} is a {msg.type_name}, not a book_snapshot")
    return msg


def _public(doc: Mapping[str, Any], arrays: Literal["list", "numpy"]) -> dict[str, Any]:
    """Raw document -> what queries return: ``_id`` -> ``id`` (message docs) or dropped
    (ObjectId of state docs), packed arrays -> lists (JSON-ready) or numpy arrays."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k == "_id":
            if isinstance(v, str):
                out["id"] = v
            continue
        if _is_packed(v):
            a = unpack_array(v)
            out[k] = a.tolist() if arrays == "list" else a
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- mongomock

_MOCK_CLIENTS: dict[str, Any] = {}
_MOCK_LOCK = threading.Lock()


def _mock_client(url: str) -> Any:
    from depthpilot.extras import MissingExtra, require

    try:
        mongomock_ng = require("mongomock_ng", "demo", "MONGO_URL=mongomock:// (the embedded store)")
    except MissingExtra as exc:
        raise StoreError(str(exc)) from None
    with _MOCK_LOCK:
        client = _MOCK_CLIENTS.get(url)
        if client is None:
            client = mongomock_ng.MongoClient(tz_aware=True)
            _MOCK_CLIENTS[url] = client
        return client


# --------------------------------------------------------------------------- store


class Store:
    """MongoDB-backed store. Build with :meth:`connect`; ``Store(db)`` wraps an existing
    pymongo (or mongomock) ``Database`` without creating indexes."""

    def __init__(self, db: Any, *, snapshot_ttl_s: int | None = 86400, url: str = "", owns_client: bool = False):
        if snapshot_ttl_s is not None and (isinstance(snapshot_ttl_s, bool) or not isinstance(snapshot_ttl_s, int) or snapshot_ttl_s <= 0):
            raise StoreError(f"snapshot_ttl_s must be a positive int of seconds or None, got {snapshot_ttl_s!r}")
        self.db = db
        self.snapshot_ttl_s = snapshot_ttl_s
        self.url = redact_url(url) if url else f"<{type(db.client).__module__} client>"
        self.is_mock = type(db).__module__.startswith("mongomock")
        self._owns_client = owns_client

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def connect(
        cls,
        url: str,
        db: str = "depthpilot",
        *,
        snapshot_ttl_s: int | None = 86400,
        server_selection_timeout_ms: int = 5000,
    ) -> "Store":
        """Connect, check the server answers (``ping``) and create the indexes.

        Raises :class:`StoreError` naming the (password-redacted) URL if the server cannot be
        reached, refuses the credentials, or the URL is invalid."""
        if not isinstance(url, str) or not url:
            raise StoreError(f"store URL must be a non-empty string, got {url!r}")
        safe = redact_url(url)
        if url.startswith(MOCK_SCHEME):
            store = cls(_mock_client(url)[db], snapshot_ttl_s=snapshot_ttl_s, url=url)
            store.ensure_indexes()
            return store
        client: Any = None
        try:
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=server_selection_timeout_ms, tz_aware=True)
            client.admin.command("ping")
            store = cls(client[db], snapshot_ttl_s=snapshot_ttl_s, url=url, owns_client=True)
            store.ensure_indexes()
            return store
        except (PyMongoError, ValueError, TypeError) as exc:
            if client is not None:
                client.close()
            # `from None`: the original exception text could echo the URL with its password
            raise StoreError(
                f"cannot use MongoDB at {safe} (db {db!r}): {type(exc).__name__}: {scrub(str(exc), url)}"
            ) from None

    def ping(self) -> None:
        """Raise StoreError when the server does not answer."""
        try:
            self.db.command("ping")
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            raise StoreError(f"store at {redact_url(self.url)} does not answer: {scrub(str(exc), self.url)}") from None

    def close(self) -> None:
        if self._owns_client:
            self.db.client.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url}, db={self.db.name!r})"

    def drop_database(self) -> None:
        """Delete everything in this store's database (tests, resets)."""
        self.db.client.drop_database(self.db.name)

    # ------------------------------------------------------------------ indexes

    def ensure_indexes(self) -> None:
        """Create every index (idempotent). Also brings the snapshot TTL in line with
        ``snapshot_ttl_s``: changed via ``collMod`` (or drop + create), dropped when None."""
        db = self.db
        try:
            for name in ("snapshots", "trades", "features", "signals", "fills"):
                db[name].create_index([("exchange", 1), ("symbol", 1), ("tns", 1)], name="exchange_symbol_tns")
            db.fills.create_index(
                [("client_order_id", 1), ("fill_id", 1)],
                name="uniq_order_fill",
                unique=True,
                partialFilterExpression={"fill_id": {"$gt": ""}},  # empty fill ids dedup by message id only
            )
            db.fills.create_index([("mode", 1), ("tns", 1)], name="mode_tns")
            db.orders.create_index([("client_order_id", 1)], name="uniq_client_order_id", unique=True)
            db.orders.create_index([("status", 1), ("tns", -1)], name="status_tns")
            db.orders.create_index([("tns", -1)], name="tns")
            db.positions.create_index([("exchange", 1), ("symbol", 1), ("mode", 1)], name="uniq_position", unique=True)
            db.position_history.create_index(
                [("mode", 1), ("exchange", 1), ("symbol", 1), ("tns", 1)], name="mode_exchange_symbol_tns"
            )
            db.events.create_index([("tns", -1)], name="tns")
            db.events.create_index([("exchange", 1), ("symbol", 1), ("tns", 1)], name="exchange_symbol_tns")
            db.heartbeats.create_index([("service", 1), ("instance", 1)], name="uniq_service_instance", unique=True)
            self._ensure_ttl()
        except OperationFailure as exc:
            raise StoreError(f"cannot create indexes in {self.url} db {db.name!r}: {exc}") from exc

    def _ensure_ttl(self) -> None:
        coll = self.db.snapshots
        existing = coll.index_information().get(TTL_INDEX)
        ttl = self.snapshot_ttl_s
        if ttl is None:
            if existing is not None:
                log.info("snapshot TTL disabled: dropping index %s", TTL_INDEX)
                coll.drop_index(TTL_INDEX)
            return
        if existing is not None and existing.get("expireAfterSeconds") != ttl:
            try:
                self.db.command("collMod", "snapshots", index={"name": TTL_INDEX, "expireAfterSeconds": ttl})
                return
            except (OperationFailure, NotImplementedError):  # mongomock has no collMod for indexes
                coll.drop_index(TTL_INDEX)
        coll.create_index([("stored_at", 1)], name=TTL_INDEX, expireAfterSeconds=ttl)

    # ------------------------------------------------------------------ helpers

    def _coll(self, name: str) -> Any:
        if name not in COLLECTIONS:
            raise StoreError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}")
        return self.db[name]

    def _check_types(self, collection: str, msgs: Sequence[m.Message]) -> None:
        types = MESSAGE_COLLECTIONS.get(collection)
        if types is None:
            raise StoreError(
                f"{collection!r} is not a message collection (use the upsert methods); "
                f"message collections: {', '.join(MESSAGE_COLLECTIONS)}"
            )
        for msg in msgs:
            if not isinstance(msg, types):
                raise StoreError(
                    f"{collection!r} stores {'/'.join(t.__name__ for t in types)}, got {type(msg).__name__}"
                )

    def _insert_docs(self, coll: Any, docs: list[dict[str, Any]]) -> InsertStats:
        if not docs:
            return InsertStats()
        try:
            res = coll.insert_many(docs, ordered=False)
            return InsertStats(inserted=len(res.inserted_ids))
        except BulkWriteError as exc:
            details = exc.details or {}
            errors = details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != 11000]
            concern_errors: list[Any] = details.get("writeConcernErrors") or []
            if other or concern_errors:
                first = (other or concern_errors)[0]
                raise StoreError(
                    f"insert into {coll.name!r} failed: {len(other)} non-duplicate errors, first: "
                    f"code {first.get('code')}: {first.get('errmsg')}"
                ) from exc
            return InsertStats(inserted=int(details.get("nInserted", 0)), duplicates=len(errors))
        except PyMongoError as exc:
            raise StoreError(f"insert into {coll.name!r} failed: {exc}") from exc

    def _upsert_latest(self, coll: Any, key: dict[str, Any], fields: dict[str, Any]) -> bool:
        """Set ``fields`` on the document ``key`` unless the stored one is newer (``tns``).
        Returns False for a stale update (ignored)."""
        try:
            coll.update_one({**key, "tns": {"$lte": fields["tns"]}}, {"$set": fields}, upsert=True)
            return True
        except DuplicateKeyError:
            return False  # a newer document exists: the filter missed and the upsert collided

    # ------------------------------------------------------------------ inserts

    def insert(self, msg: m.Message) -> bool:
        """Insert one message into its collection; False if it was already stored."""
        coll = _COLLECTION_BY_TYPE.get(type(msg))
        if coll is None:
            raise StoreError(f"no collection stores {type(msg).__name__} messages")
        return self.insert_many(coll, [msg]).inserted == 1

    def insert_many(self, collection: str, msgs: Iterable[m.Message]) -> InsertStats:
        """Unordered batched insert. Duplicates (same message id, or same fill) are counted
        and ignored, so replays are idempotent; any other write error raises StoreError."""
        msgs = list(msgs)
        self._check_types(collection, msgs)
        return self._insert_docs(self._coll(collection), [message_to_doc(x) for x in msgs])

    def insert_fill(self, fill: m.Fill, *, mode: str | None = None) -> bool:
        """Store a fill once. Keyed by message id and by (client_order_id, fill_id) when
        fill_id is set. ``mode`` (paper/testnet/live) tags it for :meth:`pnl_summary`.
        Returns False for a duplicate."""
        self._check_types("fills", [fill])
        doc = message_to_doc(fill)
        doc["mode"] = mode
        return self._insert_docs(self.db.fills, [doc]).inserted == 1

    # ------------------------------------------------------------------ orders

    def _intent_doc(self, intent: m.OrderIntent, mode: str | None) -> dict[str, Any]:
        body = m.to_builtins(intent)
        tns = event_ns(intent)
        doc = {k: body[k] for k in _INTENT_SCALARS}
        doc.update(
            status="intent", status_rank=0, filled_qty=0.0, avg_price=None, exchange_order_id="",
            reason="", ts=0, tns=tns, time=ns_to_datetime(tns), created_tns=tns, msg_id=intent.id, mode=mode,
        )
        return doc

    def insert_order_intent(self, intent: m.OrderIntent, *, mode: str | None = None) -> None:
        """Record an intent BEFORE sending it. Raises :class:`DuplicateOrderError` if any
        order (even this same message, replayed) already holds its client_order_id."""
        if not isinstance(intent, m.OrderIntent):
            raise StoreError(f"insert_order_intent needs an OrderIntent, got {type(intent).__name__}")
        doc = self._intent_doc(intent, mode)
        doc["client_order_id"] = intent.client_order_id
        doc["intent"] = m.to_builtins(intent)
        try:
            self.db.orders.insert_one(doc)
        except DuplicateKeyError:
            existing = self.db.orders.find_one({"client_order_id": intent.client_order_id}, {"_id": 0})
            same = bool(existing and (existing.get("intent") or {}).get("id") == intent.id)
            raise DuplicateOrderError(intent.client_order_id, existing, same) from None

    def upsert_order(self, msg: m.OrderUpdate | m.OrderIntent, *, mode: str | None = None) -> bool:
        """Idempotently apply an intent or an exchange update to ``orders``.

        * OrderIntent: stored (or attached to an order first seen through an update);
          re-applying the same intent is a no-op; a *different* intent with the same
          client_order_id raises :class:`DuplicateOrderError`.
        * OrderUpdate: applied only if it does not regress the order: higher status rank
          wins; within a non-terminal rank, larger ``filled_qty`` then later time wins; a
          terminal status (filled/cancelled/rejected/expired) only accepts the same status
          again (e.g. a later avg_price). Late/stale updates return False.
        """
        orders = self.db.orders
        if isinstance(msg, m.OrderIntent):
            body = m.to_builtins(msg)
            on_insert: dict[str, Any] = self._intent_doc(msg, mode)
            try:
                res = orders.update_one(
                    {"client_order_id": msg.client_order_id, "$or": [{"intent": None}, {"intent.id": msg.id}]},
                    {"$set": {"intent": body}, "$setOnInsert": on_insert},
                    upsert=True,
                )
            except DuplicateKeyError:
                existing = orders.find_one({"client_order_id": msg.client_order_id}, {"_id": 0})
                raise DuplicateOrderError(msg.client_order_id, existing, False) from None
            return res.upserted_id is not None or res.modified_count > 0
        if not isinstance(msg, m.OrderUpdate):
            raise StoreError(f"upsert_order needs an OrderUpdate or OrderIntent, got {type(msg).__name__}")
        rank = ORDER_STATUS_RANK[msg.status]
        tns = event_ns(msg)
        fq = float(msg.filled_qty)
        same_rank: dict[str, Any] = {"status_rank": rank}
        if rank == _TERMINAL_RANK:
            same_rank["status"] = msg.status
        filt = {
            "client_order_id": msg.client_order_id,
            "$or": [
                {"status_rank": {"$lt": rank}},
                {**same_rank, "filled_qty": {"$lt": fq}},
                {**same_rank, "filled_qty": fq, "tns": {"$lte": tns}},
            ],
        }
        body = m.to_builtins(msg)
        fields = {k: body[k] for k in _UPDATE_FIELDS}
        fields.update(filled_qty=fq, status_rank=rank, tns=tns, time=ns_to_datetime(tns), msg_id=msg.id)
        if mode is not None:
            fields["mode"] = mode
        on_insert = {"created_tns": tns}
        if mode is None:
            on_insert["mode"] = None
        try:
            orders.update_one(filt, {"$set": fields, "$setOnInsert": on_insert}, upsert=True)
            return True
        except DuplicateKeyError:
            return False  # order exists with a status this update must not override

    # ------------------------------------------------------------------ positions, heartbeats, state

    def upsert_position(self, pos: m.PositionUpdate) -> bool:
        """Latest position per (exchange, symbol, mode); older updates (by ``ts``) are
        ignored (returns False). Every update is also kept in ``position_history``
        (idempotent by message id) so :meth:`pnl_summary` can answer "since t"."""
        if not isinstance(pos, m.PositionUpdate):
            raise StoreError(f"upsert_position needs a PositionUpdate, got {type(pos).__name__}")
        self.insert_many("position_history", [pos])
        body = m.to_builtins(pos)
        tns = event_ns(pos)
        fields = {k: v for k, v in body.items() if k not in _STATE_DROP and k not in ("exchange", "symbol", "mode")}
        fields.update(tns=tns, time=ns_to_datetime(tns), msg_id=pos.id)
        key = {"exchange": pos.exchange, "symbol": pos.symbol, "mode": pos.mode}
        return self._upsert_latest(self.db.positions, key, fields)

    def record_heartbeat(self, hb: m.ServiceHeartbeat) -> bool:
        """Latest heartbeat per (service, instance); older ones ignored (returns False)."""
        if not isinstance(hb, m.ServiceHeartbeat):
            raise StoreError(f"record_heartbeat needs a ServiceHeartbeat, got {type(hb).__name__}")
        body = m.to_builtins(hb)
        tns = event_ns(hb)
        fields = {k: v for k, v in body.items() if k not in _STATE_DROP and k not in ("service", "instance")}
        fields.update(tns=tns, time=ns_to_datetime(tns), msg_id=hb.id)
        return self._upsert_latest(self.db.heartbeats, {"service": hb.service, "instance": hb.instance}, fields)

    def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Small persistent key -> dict state (e.g. collector resume points)."""
        self.db.collector_state.replace_one(
            {"_id": key}, {"_id": key, "value": dict(value), "time": datetime.now(timezone.utc)}, upsert=True
        )

    def get_state(self, key: str) -> dict[str, Any] | None:
        doc = self.db.collector_state.find_one({"_id": key})
        return None if doc is None else doc["value"]

    # ------------------------------------------------------------------ queries

    @staticmethod
    def _filter(exchange: str | None, symbol: str | None) -> dict[str, Any]:
        f: dict[str, Any] = {}
        if exchange is not None:
            f["exchange"] = exchange
        if symbol is not None:
            f["symbol"] = symbol
        return f

    def latest_snapshot(self, exchange: str, symbol: str) -> m.BookSnapshot | None:
        doc = self.db.snapshots.find_one({"exchange": exchange, "symbol": symbol}, sort=[("tns", -1)])
        return None if doc is None else snapshot_from_doc(doc)

    def recent(
        self,
        collection: str,
        exchange: str | None = None,
        symbol: str | None = None,
        since: int | datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first, JSON-ready dicts (message ``id``, arrays as lists, ``time`` datetime)."""
        if not isinstance(limit, int) or limit <= 0:
            raise StoreError(f"limit must be a positive int, got {limit!r}")
        f = self._filter(exchange, symbol)
        if since is not None:
            f["tns"] = {"$gte": _to_ns(since, "since")}
        cur = self._coll(collection).find(f).sort("tns", -1).limit(limit)
        return [_public(d, "list") for d in cur]

    def positions(self, mode: str | None = None) -> list[dict[str, Any]]:
        f = {} if mode is None else {"mode": mode}
        return [_public(d, "list") for d in self.db.positions.find(f).sort([("exchange", 1), ("symbol", 1)])]

    def orders(self, status: str | Sequence[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Orders, most recently updated first; ``status`` one status or a list of them."""
        if not isinstance(limit, int) or limit <= 0:
            raise StoreError(f"limit must be a positive int, got {limit!r}")
        f: dict[str, Any] = {}
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in statuses if s not in ORDER_STATUS_RANK]
            if unknown:
                raise StoreError(f"unknown order status {unknown}; known: {sorted(ORDER_STATUS_RANK)}")
            f["status"] = {"$in": statuses}
        return [_public(d, "list") for d in self.db.orders.find(f).sort("tns", -1).limit(limit)]

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        doc = self.db.orders.find_one({"client_order_id": client_order_id})
        return None if doc is None else _public(doc, "list")

    def heartbeats(self) -> list[dict[str, Any]]:
        return [_public(d, "list") for d in self.db.heartbeats.find({}).sort([("service", 1), ("instance", 1)])]

    def pnl_summary(self, mode: str, since: int | datetime | None = None) -> dict[str, Any]:
        """Realized PnL and fees for one trading mode.

        From positions: ``realized_pnl`` and ``fees_paid`` are taken as *cumulative* per
        (exchange, symbol, mode) (the trader's contract); with ``since`` the value of the last
        position update before ``since`` is subtracted. ``net_pnl = realized_pnl - fees``.
        From fills tagged with this mode (``insert_fill(mode=...)``): count, fees, notional.
        """
        since_ns = None if since is None else _to_ns(since, "since")
        realized = fees = unrealized = 0.0
        n_pos = 0
        for p in self.db.positions.find({"mode": mode}):
            n_pos += 1
            r, fe = float(p.get("realized_pnl") or 0.0), float(p.get("fees_paid") or 0.0)
            if since_ns is not None:
                base = self.db.position_history.find_one(
                    {"mode": mode, "exchange": p["exchange"], "symbol": p["symbol"], "tns": {"$lt": since_ns}},
                    sort=[("tns", -1)],
                )
                if base is not None:
                    r -= float(base.get("realized_pnl") or 0.0)
                    fe -= float(base.get("fees_paid") or 0.0)
            realized += r
            fees += fe
            unrealized += float(p.get("unrealized_pnl") or 0.0)
        match: dict[str, Any] = {"mode": mode}
        if since_ns is not None:
            match["tns"] = {"$gte": since_ns}
        agg = list(
            self.db.fills.aggregate(
                [
                    {"$match": match},
                    {"$group": {
                        "_id": None,
                        "n": {"$sum": 1},
                        "fee": {"$sum": "$fee"},
                        "notional": {"$sum": {"$multiply": ["$qty", "$price"]}},
                    }},
                ]
            )
        )
        g = agg[0] if agg else {"n": 0, "fee": 0.0, "notional": 0.0}
        return {
            "mode": mode,
            "since": None if since_ns is None else ns_to_datetime(since_ns),
            "positions": n_pos,
            "realized_pnl": realized,
            "fees": fees,
            "net_pnl": realized - fees,
            "unrealized_pnl": unrealized,
            "fill_count": int(g["n"]),
            "fill_fees": float(g["fee"]),
            "fill_notional": float(g["notional"]),
        }

    def count(self, collection: str, exchange: str | None = None, symbol: str | None = None) -> int:
        return int(self._coll(collection).count_documents(self._filter(exchange, symbol)))

    def _range_cursor(
        self, collection: str, exchange: str, symbol: str, start: int | datetime | None,
        end: int | datetime | None, batch_size: int,
    ) -> Any:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise StoreError(f"batch_size must be a positive int, got {batch_size!r}")
        f: dict[str, Any] = {"exchange": exchange, "symbol": symbol}
        rng: dict[str, int] = {}
        if start is not None:
            rng["$gte"] = _to_ns(start, "start")
        if end is not None:
            rng["$lt"] = _to_ns(end, "end")
        if rng:
            f["tns"] = rng
        cur = self._coll(collection).find(f).sort("tns", 1)
        if not self.is_mock:  # mongomock warns that batch_size is a no-op
            cur = cur.batch_size(batch_size)
        return cur

    def iter_docs(
        self,
        collection: str,
        exchange: str,
        symbol: str,
        start: int | datetime | None = None,
        end: int | datetime | None = None,
        batch_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Export iterator, ascending by event time, ``start <= tns < end``; dicts with
        message ``id`` and arrays as numpy float64 arrays. Streams (cursor batches)."""
        for d in self._range_cursor(collection, exchange, symbol, start, end, batch_size):
            yield _public(d, "numpy")

    def iter_messages(
        self,
        collection: str,
        exchange: str,
        symbol: str,
        start: int | datetime | None = None,
        end: int | datetime | None = None,
        batch_size: int = 1000,
    ) -> Iterator[m.Message]:
        """Like :meth:`iter_docs` but yields the typed messages (e.g. BookSnapshot)."""
        if collection not in MESSAGE_COLLECTIONS:
            raise StoreError(f"{collection!r} does not hold messages")
        for d in self._range_cursor(collection, exchange, symbol, start, end, batch_size):
            yield doc_to_message(d)


# --------------------------------------------------------------------------- batching


class BatchWriter:
    """Buffers messages for one collection and writes them in unordered batches.

    ``add`` never does I/O; ``maybe_flush(now)`` writes when the buffer holds ``max_size``
    messages or its oldest message is ``max_age_s`` old (``now`` on the ``clock`` timescale,
    default ``time.monotonic``); ``flush()`` writes unconditionally. Thread-safe. If a write
    fails the batch is put back (retrying is safe: inserts are idempotent) and the error is
    raised. The buffer is capped at ``max_buffer`` messages; beyond that the oldest are dropped
    and counted in ``dropped`` (storage is a sample; it must not take the service down).
    """

    def __init__(
        self,
        store: Store,
        collection: str,
        *,
        max_size: int = 500,
        max_age_s: float = 1.0,
        max_buffer: int | None = None,
        clock: Any = time.monotonic,
    ):
        if collection not in MESSAGE_COLLECTIONS:
            raise StoreError(f"BatchWriter needs a message collection, got {collection!r}")
        if max_size <= 0 or max_age_s <= 0:
            raise StoreError(f"max_size and max_age_s must be > 0, got {max_size}, {max_age_s}")
        self.store = store
        self.collection = collection
        self.max_size = int(max_size)
        self.max_age_s = float(max_age_s)
        self.max_buffer = int(max_buffer) if max_buffer is not None else 100 * self.max_size
        if self.max_buffer < self.max_size:
            raise StoreError(f"max_buffer ({self.max_buffer}) must be >= max_size ({self.max_size})")
        self._types = MESSAGE_COLLECTIONS[collection]
        self._clock = clock
        self._buf: deque[m.Message] = deque()
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.inserted = 0
        self.duplicates = 0
        self.dropped = 0
        self.flushes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._buf)

    def add(self, msg: m.Message) -> bool:
        """Buffer one message; returns True when a flush is due by size."""
        if not isinstance(msg, self._types):
            raise StoreError(f"{self.collection!r} stores {'/'.join(t.__name__ for t in self._types)}, got {type(msg).__name__}")
        with self._lock:
            if not self._buf:
                self._oldest = self._clock()
            self._buf.append(msg)
            while len(self._buf) > self.max_buffer:
                self._buf.popleft()
                self.dropped += 1
            return len(self._buf) >= self.max_size

    def due(self, now: float | None = None) -> bool:
        with self._lock:
            if not self._buf:
                return False
            if len(self._buf) >= self.max_size:
                return True
            now = self._clock() if now is None else now
            return self._oldest is not None and now - self._oldest >= self.max_age_s

    def maybe_flush(self, now: float | None = None) -> InsertStats | None:
        """Flush if due (size or age); returns the stats, or None if nothing was due."""
        return self.flush() if self.due(now) else None

    def flush(self) -> InsertStats:
        total = InsertStats()
        with self._flush_lock:
            while True:
                with self._lock:
                    if not self._buf:
                        self._oldest = None
                        return total
                    n = min(self.max_size, len(self._buf))
                    batch = [self._buf.popleft() for _ in range(n)]
                    oldest = self._oldest
                    self._oldest = self._clock() if self._buf else None
                try:
                    stats = self.store.insert_many(self.collection, batch)
                except Exception:
                    with self._lock:  # put back in front, keep the cap
                        self._buf.extendleft(reversed(batch))
                        self._oldest = oldest
                        while len(self._buf) > self.max_buffer:
                            self._buf.popleft()
                            self.dropped += 1
                    raise
                self.flushes += 1
                self.inserted += stats.inserted
                self.duplicates += stats.duplicates
                total = total + stats

    def close(self) -> InsertStats:
        return self.flush()

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
