"""Kraken Futures ``book`` feed builder (websocket v1, pure logic).

Messages::

    {"feed": "book_snapshot", "product_id": "FI_XBTUSD_210924", "timestamp": 1626994927655,
     "seq": 13501560, "bids": [{"price": 32189.5, "qty": 1130.0}, ...], "asks": [...]}
    {"feed": "book", "product_id": "FI_XBTUSD_210924", "side": "buy", "seq": 13501561,
     "price": 32189.5, "qty": 0.0, "timestamp": 1626994927700}

Every delta carries one level (``qty`` absolute, 0 removes it) and ``seq`` increases by
exactly one per product. A delta with ``seq <= book seq`` is already in the snapshot
(stale); one with ``seq > book seq + 1`` is a gap. Deltas that arrive before the first
snapshot (the exchange may interleave them on subscribe) are dropped.
"""

from __future__ import annotations

from typing import Any, Mapping

from collector.exchanges.core import ApplyResult, BookBuilder, BookMessageError

__all__ = ["KrakenFuturesBookBuilder"]


class KrakenFuturesBookBuilder(BookBuilder):
    exchange = "krakenfutures"

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol.upper())

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        feed = msg.get("feed")
        if feed not in ("book", "book_snapshot") or "event" in msg or "product_id" not in msg:
            return ApplyResult.IGNORED  # subscribe acks, trades, tickers
        if str(msg["product_id"]).upper() != self.symbol:
            return ApplyResult.IGNORED
        seq = int(msg["seq"])
        book = self.book
        if feed == "book_snapshot":
            book.apply_snapshot(
                ((lv["price"], lv["qty"]) for lv in msg["bids"]), ((lv["price"], lv["qty"]) for lv in msg["asks"])
            )
            book.seq = seq
            book.ts_exchange = int(msg.get("timestamp", 0)) * 1_000_000
            return self._on_snapshot_applied()
        if not self.has_snapshot:
            return self._awaiting()
        if seq <= book.seq:
            return ApplyResult.STALE
        if seq != book.seq + 1:
            return self._gap(f"seq {seq} after {book.seq} ({seq - book.seq - 1} missing)")
        side = msg["side"]
        price, qty = float(msg["price"]), float(msg["qty"])
        if side == "buy":
            book.set_bid(price, qty)
        elif side == "sell":
            book.set_ask(price, qty)
        else:
            raise BookMessageError(f"krakenfutures {self.symbol}: unknown side {side!r}")
        book.seq = seq
        book.ts_exchange = int(msg.get("timestamp", 0)) * 1_000_000
        return self._on_delta_applied()
