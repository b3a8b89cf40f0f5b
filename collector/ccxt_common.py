"""ccxt feeds, the pure part (no ccxt import, no I/O): which exchanges and book depths the
ccxt feeds serve, and the conversion of ccxt's unified order books and trades into our
messages, shared by the live feeds (:mod:`collector.ccxt_source`) and the replay of their
recordings (:mod:`collector.ccxt_recording`).

Depth: each exchange accepts different ``limit`` values (taken from ccxt's own
``fetch_order_book``/``watch_order_book`` code and the exchanges' docs, see
:data:`EXCHANGES`); :func:`resolve_limit` picks the smallest allowed limit that covers the
requested depth (or the exchange maximum) and the snapshot is cut to ``depth``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping
from urllib.parse import urlsplit

import numpy as np

from depthpilot.messages import BookSnapshot, Side, Trade

__all__ = [
    "ExchangeSpec",
    "EXCHANGES",
    "CcxtSourceError",
    "CcxtDataError",
    "TradeDeduper",
    "normalise_trade",
    "resolve_limit",
    "rebase_api_urls",
    "rebase_ws_urls",
    "normalise_order_book",
    "fresh_trades",
]


class CcxtSourceError(ValueError):
    """Bad configuration of a ccxt source (unknown exchange, bad depth/mode)."""


class CcxtDataError(ValueError):
    """A ccxt payload that cannot be normalised (e.g. a trade without price or side)."""


@dataclass(frozen=True)
class ExchangeSpec:
    ccxt_id: str
    default_type: str | None = None  # ccxt options['defaultType'] (e.g. "linear" for Bybit perps)
    rest_limits: tuple[int, ...] | None = None  # allowed REST limits (None: any value up to rest_max)
    rest_max: int | None = None  # None: the exchange ignores limit / has no maximum
    rest_sends_limit: bool = True  # False: fetch_order_book ignores ``limit`` (full book returned)
    ws_limits: tuple[int, ...] | None = None  # allowed watch_order_book limits (None: any)
    ws_max: int | None = None
    fetch_markets_types: tuple[str, ...] | None = None  # trims load_markets to what we use


# Limits per exchange (public endpoints):
#  binance spot /api/v3/depth: up to 5000 (ccxt comment "default 100, max 5000"); ccxt's ws
#    book = diff stream + a REST snapshot fetched with the same limit, so the same values apply.
#  binance usd-m /fapi/v1/depth: 5,10,20,50,100,500,1000 (REST and the ws snapshot).
#  bybit v5 /v5/market/orderbook: linear/inverse 1..500, spot 1..200; ws orderbook.{1,50,200,1000}
#    (ccxt watchOrderBookForSymbols rejects any other limit).
#  okx /api/v5/market/books sz <= 400 (ccxt switches to books-full above 400); ws "books" = 400.
#  coinbase advanced trade product_book: ``limit`` passed through; ws level2 = full book.
#  kraken /0/public/Depth count 1..500; ws depth 10,25,100,500,1000 (ccxt raises otherwise).
#  bitstamp /api/v2/order_book: full book, no limit; ws order_book channel = top 100.
# "binance_ccxt" is Binance spot through ccxt instead of the native diff-depth source (a
# fallback route; published under its own exchange name so the two never mix).
EXCHANGES: dict[str, ExchangeSpec] = {
    "binance": ExchangeSpec(
        "binance",
        rest_limits=(5, 10, 20, 50, 100, 500, 1000, 5000),
        rest_max=5000,
        ws_limits=(5, 10, 20, 50, 100, 500, 1000, 5000),
        ws_max=5000,
        fetch_markets_types=("spot",),
    ),
    "binance_ccxt": ExchangeSpec(
        "binance",
        rest_limits=(5, 10, 20, 50, 100, 500, 1000, 5000),
        rest_max=5000,
        ws_limits=(5, 10, 20, 50, 100, 500, 1000, 5000),
        ws_max=5000,
        fetch_markets_types=("spot",),
    ),
    "binanceusdm": ExchangeSpec(
        "binanceusdm",
        rest_limits=(5, 10, 20, 50, 100, 500, 1000),
        rest_max=1000,
        ws_limits=(5, 10, 20, 50, 100, 500, 1000),
        ws_max=1000,
        fetch_markets_types=("linear",),
    ),
    "bybit": ExchangeSpec("bybit", default_type="linear", rest_max=500, ws_limits=(1, 50, 200, 1000), ws_max=1000),
    "bybit_spot": ExchangeSpec("bybit", default_type="spot", rest_max=200, ws_limits=(1, 50, 200, 1000), ws_max=1000),
    "okx": ExchangeSpec("okx", rest_max=400, ws_limits=(1, 5, 400), ws_max=400),
    "coinbase": ExchangeSpec("coinbase", rest_max=None),
    "kraken": ExchangeSpec("kraken", rest_max=500, ws_limits=(10, 25, 100, 500, 1000), ws_max=1000),
    "bitstamp": ExchangeSpec("bitstamp", rest_sends_limit=False, ws_max=100),
}


def resolve_limit(spec: ExchangeSpec, depth: int, mode: Literal["rest", "ws"]) -> int | None:
    """The ``limit`` to pass to ccxt for ``depth`` levels (None = do not send one)."""
    if depth < 1:
        raise CcxtSourceError(f"depth must be >= 1, got {depth}")
    if mode == "rest":
        if not spec.rest_sends_limit:
            return None
        allowed, cap = spec.rest_limits, spec.rest_max
    elif mode == "ws":
        allowed, cap = spec.ws_limits, spec.ws_max
    else:
        raise CcxtSourceError(f"mode must be 'rest' or 'ws', got {mode!r}")
    if allowed:
        covering = [x for x in allowed if x >= depth]
        return min(covering) if covering else max(allowed)
    return min(depth, cap) if cap is not None else depth


def _rebase_urls(exchange: Any, base_url: str, schemes: tuple[str, ...]) -> None:
    """Every url in ``exchange.urls["api"]`` (nested dicts too) starting with one of ``schemes``
    moved to ``base_url`` (scheme://host:port), path and query kept."""
    base = base_url.rstrip("/")

    def rebase(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(schemes):
            parts = urlsplit(v)
            return base + parts.path + (f"?{parts.query}" if parts.query else "")
        if isinstance(v, dict):
            return {k: rebase(x) for k, x in v.items()}
        return v

    exchange.urls["api"] = rebase(exchange.urls["api"])


def rebase_api_urls(exchange: Any, base_url: str) -> None:
    """Point every REST API url of a ccxt exchange at ``base_url`` (scheme://host:port),
    keeping the paths: the supported way to use a proxy, a mirror or a local fake server."""
    _rebase_urls(exchange, base_url, ("http://", "https://"))


def rebase_ws_urls(exchange: Any, ws_base_url: str) -> None:
    """Point every websocket url (``ws://``/``wss://``) of a ccxt.pro exchange at ``ws_base_url``
    (scheme://host:port), keeping the paths (ccxt.pro appends its stream path to them)."""
    _rebase_urls(exchange, ws_base_url, ("ws://", "wss://"))


def normalise_order_book(
    ob: Mapping[str, Any], *, exchange: str, symbol: str, depth: int, ts_recv: int
) -> BookSnapshot:
    """ccxt unified order book -> BookSnapshot (top ``depth``, sorted, crossed -> invalid)."""
    bids = np.asarray([lv[:2] for lv in ob.get("bids") or ()], dtype=np.float64).reshape(-1, 2)
    asks = np.asarray([lv[:2] for lv in ob.get("asks") or ()], dtype=np.float64).reshape(-1, 2)
    bids = bids[np.argsort(-bids[:, 0], kind="stable")][:depth]
    asks = asks[np.argsort(asks[:, 0], kind="stable")][:depth]
    ts = ob.get("timestamp")
    nonce = ob.get("nonce")
    valid, reason = True, ""
    if len(bids) and len(asks) and bids[0, 0] >= asks[0, 0]:
        valid, reason = False, f"crossed: best bid {bids[0, 0]} >= best ask {asks[0, 0]}"
    elif not len(bids) or not len(asks):
        valid, reason = False, "empty side"
    return BookSnapshot(
        exchange=exchange,
        symbol=symbol,
        ts_exchange=int(ts) * 1_000_000 if ts else 0,
        ts_recv=ts_recv,
        seq=int(nonce) if nonce is not None else 0,
        bids=bids,
        asks=asks,
        depth=depth,
        valid=valid,
        reason=reason,
    )


_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


def normalise_trade(t: Mapping[str, Any], *, exchange: str, symbol: str, ts_recv: int) -> Trade:
    """ccxt unified trade -> Trade. ccxt's ``side`` is the taker's (aggressor) side; the
    timestamp (ms) becomes ns. Missing/invalid price, amount, side or timestamp ->
    :class:`CcxtDataError`."""
    side = _SIDES.get(str(t.get("side") or "").lower())
    if side is None:
        raise CcxtDataError(f"{exchange} {symbol}: trade {t.get('id')!r} has no taker side ({t.get('side')!r})")
    try:
        price = float(t["price"])
        size = float(t["amount"])
        ts = int(t["timestamp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CcxtDataError(f"{exchange} {symbol}: trade {t.get('id')!r} lacks price/amount/timestamp: {exc}") from None
    if not (price > 0 and size > 0 and ts > 0):
        raise CcxtDataError(f"{exchange} {symbol}: trade {t.get('id')!r} has price={price} amount={size} ts={ts}")
    tid = t.get("id")
    return Trade(
        exchange=exchange,
        symbol=symbol,
        ts_exchange=ts * 1_000_000,
        ts_recv=ts_recv,
        price=price,
        size=size,
        side=side,
        trade_id="" if tid is None else str(tid),
    )


class TradeDeduper:
    """Remembers the last ``max_ids`` trade ids; :meth:`add` is True for an id not seen yet.
    Bounded: overlapping REST pages only repeat recent trades."""

    def __init__(self, max_ids: int = 20_000, ids: Iterable[str] = ()) -> None:
        if max_ids < 1:
            raise CcxtSourceError("max_ids must be >= 1")
        self.max_ids = max_ids
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        for i in ids:
            self.add(i)

    def add(self, trade_id: str) -> bool:
        if trade_id in self._ids:
            return False
        self._ids.add(trade_id)
        self._order.append(trade_id)
        if len(self._order) > self.max_ids:
            self._ids.discard(self._order.popleft())
        return True

    def recent(self) -> list[str]:
        """The remembered ids, oldest first (to seed a replacement source)."""
        return list(self._order)

    def __contains__(self, trade_id: object) -> bool:
        return trade_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def fresh_trades(
    raw: Iterable[Mapping[str, Any]], *, exchange: str, symbol: str, ts_recv: int, seen: TradeDeduper
) -> tuple[list[Trade], list[str], int]:
    """The trades of one ccxt page / message not emitted yet, oldest first: (trades, one error
    line per trade that cannot be normalised, duplicates skipped). Nothing is marked seen here:
    the caller adds each id to ``seen`` as it hands the trade out. One rule for the live feed
    and the replay of its recording."""
    out: list[Trade] = []
    errors: list[str] = []
    duplicates = 0
    page_ids: set[str] = set()
    for t in sorted(raw, key=lambda x: x.get("timestamp") or 0):
        try:
            trade = normalise_trade(t, exchange=exchange, symbol=symbol, ts_recv=ts_recv)
        except CcxtDataError as exc:
            errors.append(str(exc))
            continue
        if trade.trade_id and (trade.trade_id in seen or trade.trade_id in page_ids):
            duplicates += 1
            continue
        page_ids.add(trade.trade_id)
        out.append(trade)
    return out, errors, duplicates
