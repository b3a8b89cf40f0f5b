"""Market-data writing: one document per message (snapshots, trades, features, signals,
events), unordered batched inserts that are idempotent by message id, and the snapshot TTL.

:class:`MarketDataWriter` is a mixin of :class:`depthpilot.store.Store` (it uses ``self.db``,
``self.url`` and ``self.snapshot_ttl_s``); :class:`BatchWriter` buffers messages off the
consumer threads and writes them in batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from depthpilot import messages as m
from depthpilot.store_docs import StoreError, message_to_doc

log = logging.getLogger("depthpilot.store")

TTL_INDEX = "ttl_stored_at"

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
COLLECTION_BY_TYPE: dict[type[m.Message], str] = {t: name for name, types in MESSAGE_COLLECTIONS.items() for t in types}


@dataclass(frozen=True)
class InsertStats:
    """Result of a batched insert: new documents and duplicates ignored (idempotent replays)."""

    inserted: int = 0
    duplicates: int = 0

    def __add__(self, other: "InsertStats") -> "InsertStats":
        return InsertStats(self.inserted + other.inserted, self.duplicates + other.duplicates)


def insert_docs(coll: Any, docs: list[dict[str, Any]]) -> InsertStats:
    """Unordered insert; duplicate keys are counted, any other write error raises StoreError."""
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


class MarketDataWriter:
    """Message inserts and market-data indexes (mixin: needs ``db``, ``url``, ``snapshot_ttl_s``)."""

    db: Any
    url: str
    snapshot_ttl_s: int | None

    def ensure_market_indexes(self) -> None:
        db = self.db
        for name in ("snapshots", "trades", "features", "signals", "fills"):
            db[name].create_index([("exchange", 1), ("symbol", 1), ("tns", 1)], name="exchange_symbol_tns")
        db.events.create_index([("tns", -1)], name="tns")
        db.events.create_index([("exchange", 1), ("symbol", 1), ("tns", 1)], name="exchange_symbol_tns")
        self._ensure_ttl()

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
        return insert_docs(coll, docs)

    def insert(self, msg: m.Message) -> bool:
        """Insert one message into its collection; False if it was already stored."""
        coll = COLLECTION_BY_TYPE.get(type(msg))
        if coll is None:
            raise StoreError(f"no collection stores {type(msg).__name__} messages")
        return self.insert_many(coll, [msg]).inserted == 1

    def insert_many(self, collection: str, msgs: Iterable[m.Message]) -> InsertStats:
        """Unordered batched insert. Duplicates (same message id, or same fill) are counted
        and ignored, so replays are idempotent; any other write error raises StoreError."""
        msgs = list(msgs)
        self._check_types(collection, msgs)
        return self._insert_docs(self.db[collection], [message_to_doc(x) for x in msgs])


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
        store: Any,
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
            raise StoreError(
                f"{self.collection!r} stores {'/'.join(t.__name__ for t in self._types)}, got {type(msg).__name__}"
            )
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
