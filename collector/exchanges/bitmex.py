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

from collector.exchanges.core import ApplyResult, BookMessageError, IdLevelBookBuilder

__all__ = ["BitmexBookBuilder"]


class BitmexBookBuilder(IdLevelBookBuilder):
    exchange = "bitmex"

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol.upper())

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        if msg.get("table") != "orderBookL2" or "data" not in msg:
            return ApplyResult.IGNORED
        action = msg.get("action")
        rows = [r for r in msg["data"] if r.get("symbol") == self.symbol]
        if action == "partial":
            flt = msg.get("filter") or {}
            if flt.get("symbol", self.symbol) != self.symbol:
                return ApplyResult.IGNORED
            self._load_rows(rows)
            self._set_meta(msg)
            return self._on_snapshot_applied()
        if not rows:
            return ApplyResult.IGNORED  # another symbol's update
        if action not in ("insert", "update", "delete"):
            raise BookMessageError(f"bitmex {self.symbol}: unknown action {action!r}")
        if not self.has_snapshot:
            return self._awaiting()
        for r in rows:
            gap = self._apply_row(action, r)
            if gap is not None:
                return gap
        self._set_meta(msg)
        return self._on_delta_applied()

    def _set_meta(self, msg: Mapping[str, Any]) -> None:
        self.book.seq += 1  # BitMEX has no sequence number: count applied messages
