"""Recordings of the ccxt book feeds (``depthpilot record`` / ``COLLECTOR_RECORD_DIR`` on a
ccxt venue) and their replay.

ccxt has no wire messages to keep: what the feed receives is the order book ccxt returns
(``fetch_order_book`` when polling REST, ``watch_order_book`` over ccxt.pro's websocket). Each
one is recorded as a self-describing JSON line::

    <receive ns> {"ccxt":"binance_ccxt","method":"fetch_order_book","symbol":"BTC/USDT",
                  "data":{"symbol":..,"bids":[[p,q],..],"asks":[..],"timestamp":..,"nonce":..}}

``ccxt`` is the depthpilot exchange name the live books carry. The replay turns ``data`` into a
book with the live feed's own conversion (:func:`collector.ccxt_common.normalise_order_book`),
at the recorded receive time, so replay == live by construction. Floats round-trip exactly
through JSON.

Trades: every page ``fetch_trades`` returned (REST) or message ``watch_trades`` returned (ws) is
one record, ``data`` = its trades (``id``, ``timestamp``, ``side``, ``price``, ``amount``: what the
conversion reads); ``"seed": true`` marks the REST page that only seeds the feed's watermark (its
trades are not published). The replay runs the live feed's rule
(:func:`collector.ccxt_common.fresh_trades` with one de-duplicator per symbol): overlapping
pages give each trade once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from collector.ccxt_common import TradeDeduper, fresh_trades, normalise_order_book
from collector.recording_set import first_lines, in_receive_order, recorded_files
from depthpilot.messages import BookSnapshot, Trade

__all__ = [
    "BOOK_METHODS",
    "TRADE_METHODS",
    "encode_book",
    "encode_trades",
    "looks_like_ccxt_recording",
    "ccxt_recording_replay",
]

BOOK_METHODS = ("fetch_order_book", "watch_order_book")
TRADE_METHODS = ("fetch_trades", "watch_trades")
_TRADE_FIELDS = ("id", "timestamp", "side", "price", "amount")


def encode_book(exchange: str, method: str, symbol: str, ob: Mapping[str, Any]) -> bytes:
    """One recorded line body (no time stamp) for an order book ccxt returned."""
    data = {
        "symbol": ob.get("symbol", symbol),
        "bids": [list(lv[:2]) for lv in ob.get("bids") or ()],
        "asks": [list(lv[:2]) for lv in ob.get("asks") or ()],
        "timestamp": ob.get("timestamp"),
        "nonce": ob.get("nonce"),
    }
    rec = {"ccxt": exchange, "method": method, "symbol": symbol, "data": data}
    return json.dumps(rec, separators=(",", ":")).encode()


def encode_trades(
    exchange: str, method: str, symbol: str, trades: Iterable[Mapping[str, Any]], *, seed: bool = False
) -> bytes:
    """One recorded line body for a page / message of trades ccxt returned."""
    data = [{k: t.get(k) for k in _TRADE_FIELDS} for t in trades]
    rec: dict[str, Any] = {"ccxt": exchange, "method": method, "symbol": symbol, "data": data}
    if seed:
        rec["seed"] = True
    return json.dumps(rec, separators=(",", ":")).encode()


def _is_record(msg: Any) -> bool:
    return isinstance(msg, dict) and isinstance(msg.get("ccxt"), str) and "method" in msg and "data" in msg


def looks_like_ccxt_recording(path: Path) -> bool:
    """A file whose first line is ``<ns> {"ccxt":...,"method":...,"data":...}``."""
    if not path.is_file():
        return False
    first = first_lines(path)
    if not first:
        return False
    try:
        return _is_record(json.loads(first[0][1]))
    except ValueError:
        return False


def ccxt_recording_replay(paths: str | Path | Iterable[str | Path], depth: int = 25) -> Iterator[BookSnapshot | Trade]:
    """Books and trades of a ccxt recording (one file, several rotated files or their
    directory), in receive order, exactly as the live feeds emitted them (top ``depth`` levels)."""
    files = recorded_files(paths)
    return _replay(files, depth)


def _replay(files: list[Path], depth: int) -> Iterator[BookSnapshot | Trade]:
    seen: dict[tuple[str, str], TradeDeduper] = {}
    for ts, body in in_receive_order(files):
        try:
            rec = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"{files[0].parent}: bad JSON line at receive time {ts}: {exc}") from None
        if not _is_record(rec):
            raise ValueError(f"{files[0].parent}: line at receive time {ts} is not a ccxt record")
        if rec["method"] in BOOK_METHODS:
            yield normalise_order_book(rec["data"], exchange=rec["ccxt"], symbol=rec["symbol"], depth=depth, ts_recv=ts)
        elif rec["method"] in TRADE_METHODS:
            dedup = seen.setdefault((rec["ccxt"], rec["symbol"]), TradeDeduper())
            new, _errors, _dup = fresh_trades(
                rec["data"], exchange=rec["ccxt"], symbol=rec["symbol"], ts_recv=ts, seen=dedup
            )
            for t in new:
                if t.trade_id:
                    dedup.add(t.trade_id)
                if not rec.get("seed"):
                    yield t
