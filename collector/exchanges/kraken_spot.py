"""Kraken spot ``book`` channel builder, websocket API v1 and v2, with the CRC32 checksum
verified on every message that carries one (pure logic, no I/O).

**v1** (``wss://ws.kraken.com``) messages are JSON arrays::

    [336, {"as": [["27918.60000", "0.10013466", "1685349920.743439"], ...], "bs": [...]}, "book-10", "XBT/USD"]
    [336, {"a": [["27922.90000", "0.00000000", "1685349935.119111"],
                 ["27925.20000", "0.40000000", "1685349920.087641", "r"]], "c": "2130071711"}, "book-10", "XBT/USD"]
    [336, {"a": [...]}, {"b": [...], "c": "974947235"}, "book-10", "XBT/USD"]   # asks and bids in one message

``as``/``bs`` is a snapshot (no checksum); ``a``/``b`` are updates (absolute volume, 0 deletes,
``"r"`` marks a level re-published after another fell out of scope), the checksum ``c`` sits
in the last map. Prices and volumes are strings with the pair's fixed decimals.

**v2** (``wss://ws.kraken.com/v2``) messages are objects with JSON-number prices::

    {"channel": "book", "type": "snapshot" | "update",
     "data": [{"symbol": "BTC/USD", "bids": [{"price": 45283.5, "qty": 0.1}], "asks": [...],
               "checksum": 3310070434, "timestamp": "2023-10-06T17:35:55.440295Z"}]}

and carry a checksum on the snapshot too. Because the numbers lose their trailing zeros, the
checksum strings are formatted with the instrument's ``price_precision`` / ``qty_precision``
(from the ``instrument`` channel, which this builder also reads, or given explicitly).

**Checksum** (Kraken's documentation, both versions): after applying the whole message and
truncating the book to the subscribed depth, take the top 10 asks (price ascending) then the
top 10 bids (price descending); for each level, the price string and then the volume string,
each with the ``.`` removed and leading zeros stripped, all concatenated; CRC32 of that, as
an unsigned 32-bit integer. A mismatch invalidates the book (``CHECKSUM_FAILED``): the live
feed re-subscribes for a fresh snapshot.
"""

from __future__ import annotations

import calendar
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from collector.exchanges.core import ApplyResult, BookBuilder, BookMessageError

__all__ = ["CHECKSUM_DEPTH", "DEPTHS", "KrakenSpotBookBuilder", "checksum_field", "kraken_checksum"]

CHECKSUM_DEPTH = 10
DEPTHS = (10, 25, 100, 500, 1000)  # the subscription depths Kraken offers


def checksum_field(s: str) -> str:
    """``"0.00100000"`` -> ``"100000"``: the decimal point removed, leading zeros stripped."""
    return s.replace(".", "").lstrip("0")


def kraken_checksum(asks: Sequence[tuple[str, str]], bids: Sequence[tuple[str, str]]) -> int:
    """Kraken's CRC32 over the top 10 ``(price, volume)`` strings of each side, best first."""
    parts = [checksum_field(p) + checksum_field(q) for p, q in asks[:CHECKSUM_DEPTH]]
    parts += [checksum_field(p) + checksum_field(q) for p, q in bids[:CHECKSUM_DEPTH]]
    return zlib.crc32("".join(parts).encode("ascii"))


def _fmt(x: Any, decimals: int) -> str:
    """A v2 JSON number (float, int or Decimal) as a string with ``decimals`` places."""
    if isinstance(x, str):
        x = Decimal(x)
    return format(x, f".{decimals}f")


class KrakenSpotBookBuilder(BookBuilder):
    """One Kraken spot pair (``symbol`` as Kraken writes it: ``XBT/USD`` in v1, ``BTC/USD`` in
    v2), one subscribed ``depth``. Feed it decoded messages of either version."""

    exchange = "krakenspot"  # the venue name (the ccxt venue "kraken" is another)

    def __init__(
        self,
        symbol: str,
        *,
        depth: int = 10,
        price_precision: int | None = None,
        qty_precision: int | None = None,
        verify_checksum: bool = True,
    ) -> None:
        super().__init__(symbol)
        if depth not in DEPTHS:
            raise ValueError(f"kraken spot book depth must be one of {DEPTHS}, got {depth}")
        self.depth = depth
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        self.verify_checksum = verify_checksum
        self._bids: dict[float, tuple[str, str]] = {}  # price -> (price string, volume string)
        self._asks: dict[float, tuple[str, str]] = {}

    def reset(self) -> None:
        super().reset()
        self._bids.clear()
        self._asks.clear()

    # ----------------------------------------------------------------- entry point
    def process(self, msg: Any) -> ApplyResult:
        """A decoded v1 (list) or v2 (dict) message; see the module doc."""
        if isinstance(msg, list):
            msg = {"_v1": msg}
        return super().process(msg)

    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:
        if "_v1" in msg:
            return self._v1(msg["_v1"])
        ch = msg.get("channel")
        if ch == "instrument":
            self._instrument(msg)
            return ApplyResult.IGNORED
        if ch != "book" or "data" not in msg:
            return ApplyResult.IGNORED  # heartbeats, status, acks, other channels
        result = ApplyResult.IGNORED
        for d in msg["data"]:
            if d.get("symbol") != self.symbol:
                continue
            result = self._v2(msg.get("type"), d)
            if result.needs_resync:
                break
        return result

    # ----------------------------------------------------------------- v1
    def _v1(self, arr: list) -> ApplyResult:
        if len(arr) < 4 or not isinstance(arr[-2], str) or not arr[-2].startswith("book"):
            return ApplyResult.IGNORED  # trades, ticker, ... (events are dicts and never arrive here)
        if arr[-1] != self.symbol:
            return ApplyResult.IGNORED
        maps = [x for x in arr[1:-2] if isinstance(x, Mapping)]
        if not maps:
            raise BookMessageError(f"{self.exchange} {self.symbol}: v1 book message without a map")
        if any("as" in x or "bs" in x for x in maps):
            self._bids.clear()
            self._asks.clear()
            for x in maps:
                self._apply_v1(x.get("bs", ()), self._bids)
                self._apply_v1(x.get("as", ()), self._asks)
            self._set_ts(maps, v1=True)
            self._commit()
            return self._on_snapshot_applied()
        if not self.has_snapshot:
            return self._awaiting()
        expected = None
        for x in maps:
            self._apply_v1(x.get("b", ()), self._bids)
            self._apply_v1(x.get("a", ()), self._asks)
            if "c" in x:
                expected = int(x["c"])
        self._set_ts(maps, v1=True)
        self._commit()
        bad = self._verify(expected)
        return bad if bad is not None else self._on_delta_applied()

    @staticmethod
    def _apply_v1(levels: Any, side: dict[float, tuple[str, str]]) -> None:
        for lv in levels:  # in order: the last entry for a price is the latest
            p, q = lv[0], lv[1]
            if float(q) == 0.0:
                side.pop(float(p), None)
            else:
                side[float(p)] = (p, q)

    # ----------------------------------------------------------------- v2
    def _instrument(self, msg: Mapping[str, Any]) -> None:
        data = msg.get("data") or {}
        for pair in data.get("pairs", ()) if isinstance(data, Mapping) else ():
            if pair.get("symbol") == self.symbol:
                self.price_precision = int(pair["price_precision"])
                self.qty_precision = int(pair["qty_precision"])

    def _v2(self, kind: Any, d: Mapping[str, Any]) -> ApplyResult:
        pp, qp = self.price_precision, self.qty_precision
        if pp is None or qp is None:
            raise BookMessageError(
                f"{self.exchange} {self.symbol}: v2 book message but the pair's price/qty precision is "
                "unknown (subscribe to the instrument channel or pass price_precision/qty_precision)"
            )
        if kind == "snapshot":
            self._bids.clear()
            self._asks.clear()
        elif kind != "update":
            raise BookMessageError(f"{self.exchange} {self.symbol}: unknown book message type {kind!r}")
        elif not self.has_snapshot:
            return self._awaiting()
        for levels, side in ((d.get("bids", ()), self._bids), (d.get("asks", ()), self._asks)):
            for lv in levels:
                price, qty = lv["price"], lv["qty"]
                if float(qty) == 0.0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = (_fmt(price, pp), _fmt(qty, qp))
        ts = d.get("timestamp")
        if ts:
            t = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            self.book.ts_exchange = calendar.timegm(t.utctimetuple()) * 10**9 + t.microsecond * 1000
        self._commit()
        bad = self._verify(int(d["checksum"]) if "checksum" in d else None)
        if bad is not None:
            return bad
        return self._on_snapshot_applied() if kind == "snapshot" else self._on_delta_applied()

    # ----------------------------------------------------------------- shared
    def _set_ts(self, maps: list, *, v1: bool) -> None:
        ts = 0.0
        for x in maps:
            for key in ("a", "b", "as", "bs"):
                for lv in x.get(key, ()):
                    ts = max(ts, float(lv[2]))
        if ts:
            self.book.ts_exchange = int(ts * 1e9)

    def _commit(self) -> None:
        """Truncate to the subscribed depth (Kraken sends no delete for levels that fall out of
        scope) and rebuild the float book from the string levels."""
        for side, best_first in ((self._bids, True), (self._asks, False)):
            if len(side) > self.depth:
                keep = sorted(side, reverse=best_first)[: self.depth]
                for p in set(side) - set(keep):
                    del side[p]
        self.book.apply_snapshot(
            ((p, float(q)) for p, (_, q) in self._bids.items()), ((p, float(q)) for p, (_, q) in self._asks.items())
        )
        self.book.seq += 1  # no exchange sequence: count messages applied

    def local_checksum(self) -> int:
        asks = [self._asks[p] for p in sorted(self._asks)[:CHECKSUM_DEPTH]]
        bids = [self._bids[p] for p in sorted(self._bids, reverse=True)[:CHECKSUM_DEPTH]]
        return kraken_checksum(asks, bids)

    def levels(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(bids best first, asks best first) as the exchange's strings."""
        return ([self._bids[p] for p in sorted(self._bids, reverse=True)], [self._asks[p] for p in sorted(self._asks)])

    def _verify(self, expected: int | None) -> ApplyResult | None:
        if not self.verify_checksum or expected is None:
            return None
        got = self.local_checksum()
        if got != expected:
            return self._checksum_failed(f"local {got} != exchange {expected}")
        self.stats.checksum_ok += 1
        return None
