"""MongoDB persistence for depthpilot (pymongo API only): :class:`Store` is the one entry point.

``Store.connect("mongodb://...")`` talks to a real server; ``Store.connect("mongomock://...")``
gives an in-process ``mongomock_ng`` client (one shared in-memory server per distinct URL in
the process, so two services in one test process that connect to ``mongomock://`` see the
same data).

The store is split along its seams:

* :mod:`depthpilot.store_docs`: message <-> document conversion (message id as ``_id``,
  ``tns``/``time``, packed arrays, **money as BSON Decimal128**, exact round trip);
* :mod:`depthpilot.store_market`: market-data writing (snapshots, trades, features, signals,
  events): idempotent batched inserts (:class:`BatchWriter`), the snapshot TTL;
* :mod:`depthpilot.store_trading`: trading state behind :class:`TradingRepository`
  (``store.trading``): orders (upserts that never regress), fills (append-only, deduped by
  fill id), positions, closed trades, PnL by period;
* this module: connecting, indexes, heartbeats, small key/value state and the read queries.
  The trading methods of the repository are also reachable on the Store itself
  (``store.upsert_order(...)`` = ``store.trading.upsert_order(...)``) for existing callers.

State collections hold the latest state per key: ``orders`` (unique ``client_order_id``),
``positions`` (unique ``exchange, symbol, mode``), ``heartbeats`` (unique ``service,
instance``), ``collector_state`` (``_id`` = key). Their ``_id`` is an ObjectId and is dropped
when read; the last applied message id is kept as ``msg_id``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pymongo
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from depthpilot import messages as m
from depthpilot.redact import redact_url, scrub
from depthpilot.store_docs import (
    StoreError,
    doc_to_message,
    from_bson,
    to_bson,
    event_ns,
    message_body,
    message_to_doc,
    ns_to_datetime,
    pack_array,
    public,
    snapshot_from_doc,
    to_ns,
    unpack_array,
)
from depthpilot.store_market import (
    COLLECTION_BY_TYPE,
    MESSAGE_COLLECTIONS,
    TTL_INDEX,
    BatchWriter,
    InsertStats,
    MarketDataWriter,
)
from depthpilot.store_trading import ORDER_STATUS_RANK, DuplicateOrderError, TradingRepository

__all__ = [
    "Store",
    "StoreError",
    "DuplicateOrderError",
    "InsertStats",
    "BatchWriter",
    "TradingRepository",
    "COLLECTIONS",
    "MESSAGE_COLLECTIONS",
    "ORDER_STATUS_RANK",
    "TTL_INDEX",
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
STATE_COLLECTIONS = ("orders", "positions", "heartbeats", "collector_state", "closed_trades")
COLLECTIONS: tuple[str, ...] = (*MESSAGE_COLLECTIONS, *STATE_COLLECTIONS)
_COLLECTION_BY_TYPE = COLLECTION_BY_TYPE
_STATE_DROP = ("id", "type", "v", "trace")
_TRADING_METHODS = (
    "insert_order_intent",
    "upsert_order",
    "insert_fill",
    "upsert_position",
    "pnl_summary",
    "positions",
    "orders",
    "order",
    "open_orders",
    "fills",
    "record_closed_trade",
    "closed_trades",
    "pnl",
)


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


class Store(MarketDataWriter):
    """MongoDB-backed store. Build with :meth:`connect`; ``Store(db)`` wraps an existing
    pymongo (or mongomock) ``Database`` without creating indexes."""

    def __init__(self, db: Any, *, snapshot_ttl_s: int | None = 86400, url: str = "", owns_client: bool = False):
        if snapshot_ttl_s is not None and (
            isinstance(snapshot_ttl_s, bool) or not isinstance(snapshot_ttl_s, int) or snapshot_ttl_s <= 0
        ):
            raise StoreError(f"snapshot_ttl_s must be a positive int of seconds or None, got {snapshot_ttl_s!r}")
        self.db = db
        self.snapshot_ttl_s = snapshot_ttl_s
        self.url = redact_url(url) if url else f"<{type(db.client).__module__} client>"
        self.is_mock = type(db).__module__.startswith("mongomock")
        self._owns_client = owns_client
        self.trading = TradingRepository(db)

    def __getattr__(self, name: str) -> Any:
        # trading-state methods live on the repository; keep ``store.upsert_order`` etc. working
        trading = self.__dict__.get("trading")
        if trading is not None and name in _TRADING_METHODS:
            return getattr(trading, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        try:
            self.ensure_market_indexes()
            self.trading.ensure_indexes()
            self.db.heartbeats.create_index(
                [("service", 1), ("instance", 1)], name="uniq_service_instance", unique=True
            )
        except OperationFailure as exc:
            raise StoreError(f"cannot create indexes in {self.url} db {self.db.name!r}: {exc}") from exc

    def _coll(self, name: str) -> Any:
        if name not in COLLECTIONS:
            raise StoreError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}")
        return self.db[name]

    # ------------------------------------------------------------------ heartbeats, state

    def record_heartbeat(self, hb: m.ServiceHeartbeat) -> bool:
        """Latest heartbeat per (service, instance); older ones ignored (returns False)."""
        if not isinstance(hb, m.ServiceHeartbeat):
            raise StoreError(f"record_heartbeat needs a ServiceHeartbeat, got {type(hb).__name__}")
        body = message_body(hb)
        tns = event_ns(hb)
        fields = {k: v for k, v in body.items() if k not in _STATE_DROP and k not in ("service", "instance")}
        fields.update(tns=tns, time=ns_to_datetime(tns), msg_id=hb.id)
        try:
            self.db.heartbeats.update_one(
                {"service": hb.service, "instance": hb.instance, "tns": {"$lte": tns}}, {"$set": fields}, upsert=True
            )
            return True
        except DuplicateKeyError:
            return False  # a newer heartbeat exists

    def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Small persistent key -> dict state (e.g. collector resume points)."""
        self.db.collector_state.replace_one(
            {"_id": key}, {"_id": key, "value": to_bson(dict(value)), "time": datetime.now(timezone.utc)}, upsert=True
        )

    def get_state(self, key: str) -> dict[str, Any] | None:
        doc = self.db.collector_state.find_one({"_id": key})
        return None if doc is None else from_bson(doc["value"])

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
            f["tns"] = {"$gte": to_ns(since, "since")}
        cur = self._coll(collection).find(f).sort("tns", -1).limit(limit)
        return [public(d) for d in cur]

    def heartbeats(self) -> list[dict[str, Any]]:
        return [public(d) for d in self.db.heartbeats.find({}).sort([("service", 1), ("instance", 1)])]

    def count(self, collection: str, exchange: str | None = None, symbol: str | None = None) -> int:
        return int(self._coll(collection).count_documents(self._filter(exchange, symbol)))

    def _range_cursor(
        self,
        collection: str,
        exchange: str,
        symbol: str,
        start: int | datetime | None,
        end: int | datetime | None,
        batch_size: int,
    ) -> Any:
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise StoreError(f"batch_size must be a positive int, got {batch_size!r}")
        f: dict[str, Any] = {"exchange": exchange, "symbol": symbol}
        rng: dict[str, int] = {}
        if start is not None:
            rng["$gte"] = to_ns(start, "start")
        if end is not None:
            rng["$lt"] = to_ns(end, "end")
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
            yield public(d, "numpy")

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
