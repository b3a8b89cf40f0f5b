"""OKX v5 ``books`` channel book builder with CRC32 checksum verification (pure logic).

Message shape (public websocket, channel ``books`` / ``books-l2-tbt`` / ``books50-l2-tbt``)::

    {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot" | "update",
     "data": [{"asks": [["30243.5", "1.2112", "0", "4"], ...], "bids": [...],
               "ts": "1652459225453", "checksum": -652563973,
               "seqId": 123, "prevSeqId": 122}]}          # seqId/prevSeqId: newer API only

Checksum (OKX documentation): take the top 25 bids and asks of the local book *after*
applying the message, interleave them ``bid1, ask1, bid2, ask2, ...`` (when one side is
shorter the other's remaining levels follow), join each level as ``price:size`` and all
of them with ``:``, and compare the CRC32 of that string, as a **signed** 32-bit integer,
with ``checksum``. Prices and sizes must be the exchange's original strings ("30243.50"
and "30243.5" hash differently), so this builder keeps them next to the float book.

``seqId``/``prevSeqId`` (added to the API in 2023): an update whose ``prevSeqId`` is not
the last ``seqId`` is a gap. OKX announced (2026) that ``checksum`` becomes always 0;
a 0 checksum on a message that carries ``seqId`` is therefore treated as "no checksum"
and continuity rests on the sequence ids.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

from collector.exchanges.core import ApplyResult, BookBuilder, BookMessageError

__all__ = ["OkxBookBuilder", "okx_checksum", "CHECKSUM_DEPTH"]

CHECKSUM_DEPTH = 25
BOOK_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt", "books5"})


def okx_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """OKX's signed CRC32 over the top levels given as original ``(price, size)`` strings,
    best first. Only the first :data:`CHECKSUM_DEPTH` levels of each side are used."""
    b = bids[:CHECKSUM_DEPTH]
    a = asks[:CHECKSUM_DEPTH]
    parts: list[str] = []
    for i in range(max(len(b), len(a))):
        if i < len(b):
            parts.append(f"{b[i][0]}:{b[i][1]}")
        if i < len(a):
            parts.append(f"{a[i][0]}:{a[i][1]}")
    crc = zlib.crc32(":".join(parts).encode("ascii"))
    return crc - (1 << 32) if crc >= (1 << 31) else crc


class OkxBookBuilder(BookBuilder):
    exchange = "okx"

    def __init__(self, symbol: str, *, verify_checksum: bool = True) -> None:
        super().__init__(symbol)
        self.verify_checksum = verify_checksum
        # float price -> (original price string, original size string)
        self._bid_str: dict[float, tuple[str, str]] = {}
        self._ask_str: dict[float, tuple[str, str]] = {}
        self._seq_id: int | None = None

    def reset(self) -> None:
        super().reset()
        self._bid_str.clear()
        self._ask_str.clear()
        self._seq_id = None

    # ----------------------------------------------------------------- processing
    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        arg = msg.get("arg")
        if not isinstance(arg, Mapping) or arg.get("channel") not in BOOK_CHANNELS or "data" not in msg:
            return ApplyResult.IGNORED  # acks ({"event": ...}), trades, tickers
        if arg.get("instId") != self.symbol:
            return ApplyResult.IGNORED
        action = msg.get("action", "snapshot")  # books5 pushes full books without "action"
        data = msg["data"]
        if not isinstance(data, list) or not data:
            raise BookMessageError(f"okx {self.symbol}: 'data' must be a non-empty list")
        result = ApplyResult.IGNORED
        for entry in data:  # OKX sends one entry per message in practice
            result = self._process_entry(action, entry)
            if result.needs_resync:
                break
        return result

    def _process_entry(self, action: str, d: Mapping[str, Any]) -> ApplyResult:
        seq_id = d.get("seqId")
        prev_seq = d.get("prevSeqId")
        if action == "snapshot":
            self._bid_str = {float(p): (p, s) for p, s, *_ in d["bids"] if float(s) > 0.0}
            self._ask_str = {float(p): (p, s) for p, s, *_ in d["asks"] if float(s) > 0.0}
            self.book.apply_snapshot(
                ((p, float(s)) for p, (_, s) in self._bid_str.items()),
                ((p, float(s)) for p, (_, s) in self._ask_str.items()),
            )
            self._set_meta(d, seq_id)
            bad = self._verify(d)
            if bad is not None:
                return bad
            return self._on_snapshot_applied()
        if action != "update":
            raise BookMessageError(f"okx {self.symbol}: unknown action {action!r}")
        if not self.has_snapshot:
            return self._awaiting()
        if seq_id is not None and prev_seq is not None and self._seq_id is not None:
            if int(seq_id) < self._seq_id and int(prev_seq) < self._seq_id:
                return ApplyResult.STALE
            if int(prev_seq) != self._seq_id:
                return self._gap(f"prevSeqId {prev_seq} != last seqId {self._seq_id}")
        self._apply_side(d.get("bids", ()), self._bid_str, self.book.set_bid)
        self._apply_side(d.get("asks", ()), self._ask_str, self.book.set_ask)
        self._set_meta(d, seq_id)
        bad = self._verify(d)
        if bad is not None:
            return bad
        return self._on_delta_applied()

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _apply_side(levels: Any, strs: dict[float, tuple[str, str]], set_level: Any) -> None:
        """Apply one side's updates, keeping OKX's original strings for the checksum."""
        for p, s, *_ in levels:
            price, size = float(p), float(s)
            if size > 0.0:
                strs[price] = (p, s)
            else:
                strs.pop(price, None)
            set_level(price, size)

    def _set_meta(self, d: Mapping[str, Any], seq_id: Any) -> None:
        if seq_id is not None:
            self._seq_id = int(seq_id)
            self.book.seq = int(seq_id)
        else:
            self.book.seq += 1  # no exchange sequence in the old API: count applied messages
        ts = d.get("ts")
        if ts is not None:
            self.book.ts_exchange = int(ts) * 1_000_000

    def local_checksum(self) -> int:
        """Checksum of the current local book (original strings, top 25)."""
        bids, asks = self.book.top(CHECKSUM_DEPTH)
        return okx_checksum(
            [self._bid_str[p] for p in bids[:, 0].tolist()], [self._ask_str[p] for p in asks[:, 0].tolist()]
        )

    def _verify(self, d: Mapping[str, Any]) -> ApplyResult | None:
        if not self.verify_checksum or "checksum" not in d:
            return None
        expected = int(d["checksum"])
        if expected == 0 and "seqId" in d:
            return None  # checksum field deprecated by OKX (always 0); rely on seqId continuity
        got = self.local_checksum()
        if got != expected:
            return self._checksum_failed(f"local {got} != exchange {expected}")
        self.stats.checksum_ok += 1
        return None
