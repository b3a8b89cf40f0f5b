"""Bybit order book builders (pure logic).

:class:`BybitBookBuilder` — v5 public ``orderbook.{1,50,200,500,1000}.{SYMBOL}``::

    {"topic": "orderbook.50.BTCUSDT", "type": "snapshot" | "delta", "ts": 1733011200691,
     "data": {"s": "BTCUSDT", "b": [["1.9531", "6203"], ...], "a": [...], "u": 20254869,
              "seq": 130020238981}, "cts": 1733011200589}

Rules (Bybit v5 docs, "Orderbook"): a ``snapshot`` replaces the local book; a ``delta``
sets absolute sizes (0 deletes); update id ``u`` grows by exactly one per message of a
topic, so a delta whose ``u`` is not ``last u + 1`` is a gap (resync); ``u == 1`` means
the exchange's book service restarted and the message must be treated as a snapshot
whatever its ``type``. We build our own book from the raw messages: pybit's internal
book (``_process_delta_orderbook``) is not used (pybit issue #369).

:class:`BybitV2BookBuilder` — the retired v2 inverse ``orderBookL2_25.{SYMBOL}`` feed (as in
the 2021 cryptofeed clip): levels are keyed by ``id``; deltas carry ``delete`` /
``update`` / ``insert`` lists and a ``cross_seq`` that increases but is not consecutive
(shared across symbols), so the only detectable inconsistency is an update/delete of an
unknown id, treated as a gap.
"""

from __future__ import annotations

from typing import Any, Mapping

from collector.exchanges.core import ApplyResult, BookBuilder, BookMessageError, IdLevelBookBuilder

__all__ = ["BybitBookBuilder", "BybitV2BookBuilder"]


class BybitBookBuilder(BookBuilder):
    exchange = "bybit"

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol.upper())
        self.last_cross_seq: int = 0  # data.seq of the last applied message (cross sequence)

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        topic = msg.get("topic")
        if not isinstance(topic, str) or not topic.startswith("orderbook."):
            return ApplyResult.IGNORED  # subscribe acks, pongs, other topics
        if topic.rsplit(".", 1)[-1] != self.symbol:
            return ApplyResult.IGNORED
        data = msg["data"]
        u = int(data["u"])
        kind = msg.get("type")
        book = self.book
        if kind == "snapshot" or u == 1:
            book.apply_snapshot(
                ((float(p), float(q)) for p, q in data["b"]), ((float(p), float(q)) for p, q in data["a"])
            )
            self._set_meta(msg, data, u)
            return self._on_snapshot_applied()
        if kind != "delta":
            raise BookMessageError(f"bybit {self.symbol}: unknown message type {kind!r}")
        if not self.has_snapshot:
            return self._awaiting()
        if u <= book.seq:
            return ApplyResult.STALE
        if u != book.seq + 1:
            return self._gap(f"u {u} after {book.seq} ({u - book.seq - 1} missing)")
        for p, q in data["b"]:
            book.set_bid(float(p), float(q))
        for p, q in data["a"]:
            book.set_ask(float(p), float(q))
        self._set_meta(msg, data, u)
        return self._on_delta_applied()

    def _set_meta(self, msg: Mapping[str, Any], data: Mapping[str, Any], u: int) -> None:
        self.book.seq = u
        if "seq" in data:
            self.last_cross_seq = int(data["seq"])
        ts = msg.get("cts", msg.get("ts"))  # cts: matching-engine time; ts: push time
        if ts is not None:
            self.book.ts_exchange = int(ts) * 1_000_000


class BybitV2BookBuilder(IdLevelBookBuilder):
    exchange = "bybit"

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol.upper())

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        topic = msg.get("topic")
        if not isinstance(topic, str) or not topic.startswith("orderBookL2"):
            return ApplyResult.IGNORED
        if topic.rsplit(".", 1)[-1] != self.symbol:
            return ApplyResult.IGNORED
        kind = msg.get("type")
        data = msg["data"]
        if kind == "snapshot":
            self._load_rows(data["order_book"] if isinstance(data, Mapping) else data)
            self._set_meta(msg)
            return self._on_snapshot_applied()
        if kind != "delta":
            raise BookMessageError(f"bybit v2 {self.symbol}: unknown message type {kind!r}")
        if not self.has_snapshot:
            return self._awaiting()
        seq = int(msg.get("cross_seq", 0))
        if seq and seq <= self.book.seq:
            return ApplyResult.STALE
        for action in ("delete", "update", "insert"):
            for r in data.get(action, ()):
                gap = self._apply_row(action, r)
                if gap is not None:
                    return gap
        self._set_meta(msg)
        return self._on_delta_applied()

    def _set_meta(self, msg: Mapping[str, Any]) -> None:
        if "cross_seq" in msg:
            self.book.seq = int(msg["cross_seq"])
        if "timestamp_e6" in msg:
            self.book.ts_exchange = int(msg["timestamp_e6"]) * 1_000
