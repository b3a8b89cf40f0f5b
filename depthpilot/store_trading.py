"""Trading state in MongoDB: orders, fills, positions and closed trades, behind one repository
(:class:`TradingRepository`), with exact ``Decimal`` money stored as BSON Decimal128.

* ``orders``: one document per ``client_order_id`` (unique). An intent is recorded before it
  is sent; exchange updates are upserts that never regress (higher status rank wins; within
  a rank a larger ``filled_qty``, then a later time; a terminal status only accepts itself).
* ``fills``: append-only, deduplicated by message id and by ``(client_order_id, fill_id)``.
* ``positions``: latest per ``(exchange, symbol, mode)`` (older updates ignored); every update
  is also kept in ``position_history`` (idempotent by message id).
* ``closed_trades``: one document per round trip (``_id`` = its trade id, so recording it
  twice is a no-op), PnL after fees; :meth:`TradingRepository.pnl` sums them by period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo.errors import DuplicateKeyError

from depthpilot import messages as m
from depthpilot.store_docs import (
    StoreError,
    dec,
    event_ns,
    message_body,
    message_to_doc,
    ns_to_datetime,
    public,
    to_bson,
    to_ns,
)
from depthpilot.store_market import insert_docs

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
TERMINAL_RANK = 4
OPEN_STATUSES = ("intent", "new", "accepted", "partially_filled")

_INTENT_SCALARS = ("exchange", "symbol", "side", "qty")
_UPDATE_FIELDS = (
    "exchange",
    "symbol",
    "side",
    "qty",
    "status",
    "filled_qty",
    "avg_price",
    "exchange_order_id",
    "reason",
    "ts",
)
_STATE_DROP = ("id", "type", "v", "trace")
_TRADE_MONEY = ("qty", "entry_price", "exit_price", "pnl", "fees")


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


class TradingRepository:
    """Orders, fills, positions and closed trades of the trader (see module docstring)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def ensure_indexes(self) -> None:
        db = self.db
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
        db.closed_trades.create_index([("mode", 1), ("tns", -1)], name="mode_tns")

    # ------------------------------------------------------------------ orders

    def _intent_doc(self, intent: m.OrderIntent, mode: str | None) -> dict[str, Any]:
        body = message_body(intent)
        tns = event_ns(intent)
        doc = {k: body[k] for k in _INTENT_SCALARS}
        doc.update(
            status="intent",
            status_rank=0,
            filled_qty=Decimal128("0"),
            avg_price=None,
            exchange_order_id="",
            reason="",
            ts=0,
            tns=tns,
            time=ns_to_datetime(tns),
            created_tns=tns,
            msg_id=intent.id,
            mode=mode,
        )
        return doc

    def insert_order_intent(self, intent: m.OrderIntent, *, mode: str | None = None) -> None:
        """Record an intent BEFORE sending it. Raises :class:`DuplicateOrderError` if any
        order (even this same message, replayed) already holds its client_order_id."""
        if not isinstance(intent, m.OrderIntent):
            raise StoreError(f"insert_order_intent needs an OrderIntent, got {type(intent).__name__}")
        doc = self._intent_doc(intent, mode)
        doc["client_order_id"] = intent.client_order_id
        doc["intent"] = message_body(intent)
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
        * OrderUpdate: applied only if it does not regress the order (see module docstring).
          Late/stale updates return False.
        """
        orders = self.db.orders
        if isinstance(msg, m.OrderIntent):
            on_insert: dict[str, Any] = self._intent_doc(msg, mode)
            try:
                res = orders.update_one(
                    {"client_order_id": msg.client_order_id, "$or": [{"intent": None}, {"intent.id": msg.id}]},
                    {"$set": {"intent": message_body(msg)}, "$setOnInsert": on_insert},
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
        fq = Decimal128(dec(msg.filled_qty))
        same_rank: dict[str, Any] = {"status_rank": rank}
        if rank == TERMINAL_RANK:
            same_rank["status"] = msg.status
        filt = {
            "client_order_id": msg.client_order_id,
            "$or": [
                {"status_rank": {"$lt": rank}},
                {**same_rank, "filled_qty": {"$lt": fq}},
                {**same_rank, "filled_qty": fq, "tns": {"$lte": tns}},
            ],
        }
        body = message_body(msg)
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

    def orders(
        self, status: str | Sequence[str] | None = None, limit: int = 100, mode: str | None = None
    ) -> list[dict[str, Any]]:
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
        if mode is not None:
            f["mode"] = mode
        return [public(d) for d in self.db.orders.find(f).sort("tns", -1).limit(limit)]

    def open_orders(self, mode: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Orders not in a terminal status (intents not yet acknowledged included)."""
        return self.orders(status=list(OPEN_STATUSES), limit=limit, mode=mode)

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        doc = self.db.orders.find_one({"client_order_id": client_order_id})
        return None if doc is None else public(doc)

    # ------------------------------------------------------------------ fills

    def insert_fill(self, fill: m.Fill, *, mode: str | None = None) -> bool:
        """Store a fill once (append-only). Keyed by message id and by (client_order_id,
        fill_id) when fill_id is set. ``mode`` tags it for :meth:`pnl_summary`. False for a
        duplicate."""
        if not isinstance(fill, m.Fill):
            raise StoreError(f"'fills' stores Fill, got {type(fill).__name__}")
        doc = message_to_doc(fill)
        doc["mode"] = mode
        return insert_docs(self.db.fills, [doc]).inserted == 1

    def fills(
        self, client_order_id: str | None = None, mode: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        f: dict[str, Any] = {}
        if client_order_id is not None:
            f["client_order_id"] = client_order_id
        if mode is not None:
            f["mode"] = mode
        return [public(d) for d in self.db.fills.find(f).sort("tns", -1).limit(limit)]

    # ------------------------------------------------------------------ positions

    def upsert_position(self, pos: m.PositionUpdate) -> bool:
        """Latest position per (exchange, symbol, mode); older updates (by ``ts``) are
        ignored (returns False). Every update is also kept in ``position_history``."""
        if not isinstance(pos, m.PositionUpdate):
            raise StoreError(f"upsert_position needs a PositionUpdate, got {type(pos).__name__}")
        insert_docs(self.db.position_history, [message_to_doc(pos)])
        body = message_body(pos)
        tns = event_ns(pos)
        fields = {k: v for k, v in body.items() if k not in _STATE_DROP and k not in ("exchange", "symbol", "mode")}
        fields.update(tns=tns, time=ns_to_datetime(tns), msg_id=pos.id)
        key = {"exchange": pos.exchange, "symbol": pos.symbol, "mode": pos.mode}
        try:
            self.db.positions.update_one({**key, "tns": {"$lte": tns}}, {"$set": fields}, upsert=True)
            return True
        except DuplicateKeyError:
            return False  # a newer document exists: the filter missed and the upsert collided

    def positions(self, mode: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        f: dict[str, Any] = {} if mode is None else {"mode": mode}
        out = [public(d) for d in self.db.positions.find(f).sort([("exchange", 1), ("symbol", 1)])]
        return [p for p in out if dec(p.get("qty")) != 0] if open_only else out

    def pnl_summary(self, mode: str, since: int | datetime | None = None) -> dict[str, Any]:
        """Realized PnL and fees for one trading mode, exact Decimals.

        From positions: ``realized_pnl`` and ``fees_paid`` are *cumulative* per (exchange,
        symbol, mode); with ``since`` the value of the last position update before ``since``
        is subtracted. ``net_pnl = realized_pnl - fees``. From fills tagged with this mode:
        count, fees, notional.
        """
        since_ns = None if since is None else to_ns(since, "since")
        realized = fees = unrealized = Decimal(0)
        n_pos = 0
        for p in self.db.positions.find({"mode": mode}):
            n_pos += 1
            r, fe = dec(p.get("realized_pnl")), dec(p.get("fees_paid"))
            if since_ns is not None:
                base = self.db.position_history.find_one(
                    {"mode": mode, "exchange": p["exchange"], "symbol": p["symbol"], "tns": {"$lt": since_ns}},
                    sort=[("tns", -1)],
                )
                if base is not None:
                    r -= dec(base.get("realized_pnl"))
                    fe -= dec(base.get("fees_paid"))
            realized += r
            fees += fe
            unrealized += dec(p.get("unrealized_pnl"))
        match: dict[str, Any] = {"mode": mode}
        if since_ns is not None:
            match["tns"] = {"$gte": since_ns}
        n, fill_fees, notional = 0, Decimal(0), Decimal(0)
        for f in self.db.fills.find(match, {"qty": 1, "price": 1, "fee": 1}):
            n += 1
            fill_fees += dec(f.get("fee"))
            notional += dec(f.get("qty")) * dec(f.get("price"))
        return {
            "mode": mode,
            "since": None if since_ns is None else ns_to_datetime(since_ns),
            "positions": n_pos,
            "realized_pnl": realized,
            "fees": fees,
            "net_pnl": realized - fees,
            "unrealized_pnl": unrealized,
            "fill_count": n,
            "fill_fees": fill_fees,
            "fill_notional": notional,
        }

    # ------------------------------------------------------------------ closed trades

    def record_closed_trade(self, trade_id: str, trade: Mapping[str, Any], *, mode: str) -> bool:
        """Store one closed round trip (fields of ``control.TradeView``: exchange, symbol, side,
        qty, entry_price, exit_price, entry_ts, exit_ts, pnl (after fees), fees, exit_reason).
        Idempotent by ``trade_id``; returns False for a duplicate."""
        missing = [k for k in ("exchange", "symbol", "side", "exit_ts", *_TRADE_MONEY) if k not in trade]
        if missing:
            raise StoreError(f"closed trade {trade_id!r} lacks {', '.join(missing)}")
        doc = {k: v for k, v in trade.items()}
        for k in _TRADE_MONEY:
            doc[k] = dec(doc[k])
        tns = int(trade["exit_ts"])
        doc.update(_id=trade_id, mode=mode, tns=tns, time=ns_to_datetime(tns), stored_at=datetime.now(timezone.utc))
        return insert_docs(self.db.closed_trades, [to_bson(doc)]).inserted == 1

    def closed_trades(
        self, mode: str | None = None, n: int = 10, since: int | datetime | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``id`` is the trade id, money as Decimal."""
        if not isinstance(n, int) or n <= 0:
            raise StoreError(f"n must be a positive int, got {n!r}")
        f: dict[str, Any] = {} if mode is None else {"mode": mode}
        if since is not None:
            f["tns"] = {"$gte": to_ns(since, "since")}
        return [public(d) for d in self.db.closed_trades.find(f).sort("tns", -1).limit(n)]

    def pnl(self, mode: str, since: int | datetime | None = None) -> dict[str, Any]:
        """PnL of the trades closed since ``since`` (all when None): ``realized`` after fees,
        ``fees``, ``trades`` and ``wins`` (pnl > 0), exact Decimals."""
        f: dict[str, Any] = {"mode": mode}
        if since is not None:
            f["tns"] = {"$gte": to_ns(since, "since")}
        realized, fees, n, wins = Decimal(0), Decimal(0), 0, 0
        for d in self.db.closed_trades.find(f, {"pnl": 1, "fees": 1}):
            p = dec(d.get("pnl"))
            realized += p
            fees += dec(d.get("fees"))
            n += 1
            wins += p > 0
        return {"realized": realized, "fees": fees, "trades": n, "wins": wins}
