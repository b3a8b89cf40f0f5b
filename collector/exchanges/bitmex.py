"""BitMEX ``orderBookL2`` builder (pure logic).

Messages (``table == "orderBookL2"``)::

    {"table": "orderBookL2", "action": "partial", "filter": {"symbol": "XBTUSD"},
     "data": [{"symbol": "XBTUSD", "id": 8700000100, "side": "Sell", "size": 1000, "price": 999999}, ...]}
    {"table": "orderBookL2", "action": "insert" | "update" | "delete", "data": [...]}

Levels are keyed by ``(symbol, id, side)``; ``update`` and ``delete`` rows may omit the
price, so the builder keeps ``id -> (side, price)``. The feed has no sequence numbers:
an update/delete of an unknown id (or an insert of a known one) is the only detectable
inconsistency and is treated as a gap. Rows before the ``partial`` are dropped.
"""
from __future__ import annotations

from typing import Any, Mapping

from collector.exchanges.core import ApplyResult, BookBuilder, BookMessageError

__all__ = ["BitmexBookBuilder"]


class BitmexBookBuilder(BookBuilder):
    exchange = "bitmex"

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol.upper())
        self._levels: dict[int, tuple[bool, float]] = {}

    def reset(self) -> None:
        super().reset()
        self._levels.clear()

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        if msg.get("table") != "orderBookL2" or "data" not in msg:
            return ApplyResult.IGNORED
        action = msg.get("action")
        rows = [r for r in msg["data"] if r.get("symbol") == self.symbol]
        if action == "partial":
            flt = msg.get("filter") or {}
            if flt.get("symbol", self.symbol) != self.symbol:
                return ApplyResult.IGNORED
            self._levels = {}
            bids, asks = [], []
            for r in rows:
                is_bid, price = self._is_bid(r), float(r["price"])
                self._levels[int(r["id"])] = (is_bid, price)
                (bids if is_bid else asks).append((price, float(r["size"])))
            self.book.apply_snapshot(bids, asks)
            self._set_meta(msg)
            return self._on_snapshot_applied()
        if not rows:
            return ApplyResult.IGNORED  # another symbol's update
        if action not in ("insert", "update", "delete"):
            raise BookMessageError(f"bitmex {self.symbol}: unknown action {action!r}")
        if not self.has_snapshot:
            return self._awaiting()
        book, levels = self.book, self._levels
        for r in rows:
            lid = int(r["id"])
            if action == "insert":
                if lid in levels:
                    return self._gap(f"insert of existing level id {lid}")
                is_bid, price = self._is_bid(r), float(r["price"])
                levels[lid] = (is_bid, price)
                (book.set_bid if is_bid else book.set_ask)(price, float(r["size"]))
                continue
            lv = levels.get(lid)
            if lv is None:
                return self._gap(f"{action} of unknown level id {lid}")
            if action == "delete":
                del levels[lid]
                (book.set_bid if lv[0] else book.set_ask)(lv[1], 0.0)
            else:
                (book.set_bid if lv[0] else book.set_ask)(lv[1], float(r["size"]))
        self._set_meta(msg)
        return self._on_delta_applied()

    @staticmethod
    def _is_bid(r: Mapping[str, Any]) -> bool:
        side = r["side"]
        if side not in ("Buy", "Sell"):
            raise BookMessageError(f"bitmex: unknown side {side!r}")
        return side == "Buy"

    def _set_meta(self, msg: Mapping[str, Any]) -> None:
        self.book.seq += 1  # BitMEX has no sequence number: count applied messages
