"""Live order-book and trade sources through ccxt (public data only): websocket where
ccxt.pro has it, else REST polling; retries with exponential backoff (tenacity) on rate
limits, 5xx and timeouts, each retry reported through a callback and counted.

I/O lives here but nothing else: no bus, no store. Books come out as
:class:`depthpilot.messages.BookSnapshot` (top ``depth`` levels, float64 arrays) from
:class:`CcxtBookSource`, trades as :class:`depthpilot.messages.Trade` (side = the taker's,
which is what ccxt's unified ``side`` is) from :class:`CcxtTradeSource`; both either from
the async iterator ``stream()`` or pushed to a callback by ``run()``. The wiring turns
:class:`RetryEvent` into a RiskEvent.

Trades over REST: ``fetch_trades`` polled with ``since`` = the newest trade time seen
(inclusive, so trades sharing that millisecond are not lost); the pages overlap and
:class:`TradeDeduper` drops every trade id already emitted. The first poll (no ``since``)
only seeds the watermark: trades from before the source started are not published (a
restarted collector would otherwise publish them again); ``since_ms``/``seen_ids`` resume
a replaced source exactly where the old one stopped. Note the ids differ per route on
Binance: REST ``fetch_trades`` reads ``/api/v3/aggTrades`` (aggregate ids), the websocket
``<sym>@trade`` (trade ids).

Depth: each exchange accepts different ``limit`` values (taken from ccxt's own
``fetch_order_book``/``watch_order_book`` code and the exchanges' docs, see
:data:`EXCHANGES`); :func:`resolve_limit` picks the smallest allowed limit that covers the
requested depth (or the exchange maximum) and the snapshot is cut to ``depth``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Literal, Mapping
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from collector.events import RetryCallback, RetryEvent
from depthpilot.messages import BookSnapshot, Side, Trade

try:  # ccxt.pro ships inside ccxt >= 4 ("pro" websocket classes)
    import ccxt.pro as ccxt_pro
except ImportError:  # pragma: no cover - only very old ccxt
    ccxt_pro = None

__all__ = [
    "ExchangeSpec",
    "EXCHANGES",
    "RETRYABLE_ERRORS",
    "RetryEvent",
    "CcxtBookSource",
    "CcxtTradeSource",
    "CcxtSourceError",
    "CcxtDataError",
    "TradeDeduper",
    "normalise_trade",
    "resolve_limit",
    "rebase_api_urls",
    "normalise_order_book",
]

log = logging.getLogger(__name__)

# Retried: rate limits (HTTP 429/418 -> RateLimitExceeded/DDoSProtection), exchange down (5xx ->
# ExchangeNotAvailable), timeouts (RequestTimeout) and other transport errors (NetworkError).
# All are NetworkError subclasses in ccxt; listed explicitly for the reader.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    ccxt.RateLimitExceeded,
    ccxt.DDoSProtection,
    ccxt.ExchangeNotAvailable,
    ccxt.RequestTimeout,
    ccxt.NetworkError,
)


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


def rebase_api_urls(exchange: Any, base_url: str) -> None:
    """Point every REST API url of a ccxt exchange at ``base_url`` (scheme://host:port),
    keeping the paths: the supported way to use a proxy, a mirror or a local fake server."""
    base = base_url.rstrip("/")

    def rebase(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(("http://", "https://")):
            parts = urlsplit(v)
            return base + parts.path + (f"?{parts.query}" if parts.query else "")
        if isinstance(v, dict):
            return {k: rebase(x) for k, x in v.items()}
        return v

    exchange.urls["api"] = rebase(exchange.urls["api"])


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


class _CcxtSource:
    """One ccxt client for one (exchange, symbol) with tenacity retries (shared plumbing)."""

    _ws_feature = ""  # ccxt.pro ``has`` key that makes "auto" pick the websocket

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        mode: Literal["auto", "ws", "rest"] = "auto",
        poll_interval_s: float = 1.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_retry: RetryCallback | None = None,
        config: Mapping[str, Any] | None = None,
        api_base_url: str | None = None,
    ) -> None:
        if exchange not in EXCHANGES:
            raise CcxtSourceError(f"unknown exchange {exchange!r}; known: {sorted(EXCHANGES)}")
        if mode not in ("auto", "ws", "rest"):
            raise CcxtSourceError(f"mode must be auto|ws|rest, got {mode!r}")
        if max_attempts < 1:
            raise CcxtSourceError("max_attempts must be >= 1")
        self.name = exchange
        self.spec = EXCHANGES[exchange]
        self.symbol = symbol
        self.poll_interval_s = poll_interval_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_retry = on_retry
        self.retries = 0
        self.retries_by_error: dict[str, int] = {}
        self.updates = 0
        cfg: dict[str, Any] = {"enableRateLimit": True}
        options: dict[str, Any] = {}
        if self.spec.default_type:
            options["defaultType"] = self.spec.default_type
        if self.spec.fetch_markets_types:
            options["fetchMarkets"] = {"types": list(self.spec.fetch_markets_types)}
        cfg["options"] = options
        for k, v in (config or {}).items():
            if k == "options":
                options.update(v)
            else:
                cfg[k] = v
        pro_cls = getattr(ccxt_pro, self.spec.ccxt_id, None) if ccxt_pro is not None else None
        if mode == "auto":
            mode = "ws" if pro_cls is not None and pro_cls().has.get(self._ws_feature) else "rest"
        if mode == "ws" and pro_cls is None:
            raise CcxtSourceError(f"ccxt.pro has no websocket class for {self.spec.ccxt_id}")
        self.mode: Literal["ws", "rest"] = mode
        cls = pro_cls if mode == "ws" else getattr(ccxt_async, self.spec.ccxt_id)
        self.client = cls(cfg)
        if api_base_url:
            rebase_api_urls(self.client, api_base_url)
        self._markets_loaded = False

    # ----------------------------------------------------------------- retry plumbing
    def _retrying(self, operation: str) -> AsyncRetrying:
        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            sleep_s = rs.next_action.sleep if rs.next_action is not None else 0.0
            name = type(exc).__name__
            self.retries += 1
            self.retries_by_error[name] = self.retries_by_error.get(name, 0) + 1
            ev = RetryEvent(self.name, self.symbol, operation, rs.attempt_number, name, str(exc)[:300], sleep_s)
            log.warning(
                "%s %s %s attempt %d failed (%s), retrying in %.2fs",
                self.name,
                self.symbol,
                operation,
                rs.attempt_number,
                name,
                sleep_s,
            )
            if self.on_retry is not None:
                self.on_retry(ev)

        return AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE_ERRORS),
            wait=wait_exponential(
                multiplier=self.backoff_initial_s, min=self.backoff_initial_s, max=self.backoff_max_s
            ),
            stop=stop_after_attempt(self.max_attempts),
            before_sleep=before_sleep,
            reraise=True,
        )

    async def _call(self, operation: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        async for attempt in self._retrying(operation):
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def load_markets(self) -> None:
        if not self._markets_loaded:
            await self._call("load_markets", self.client.load_markets)
            self._markets_loaded = True

    def stream(self) -> AsyncIterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def run(self, callback: Callable[[Any], Any], *, max_updates: int | None = None) -> None:
        """Push updates to ``callback`` (sync or async) until cancelled / ``max_updates``."""
        n = 0
        async for item in self.stream():
            res = callback(item)
            if asyncio.iscoroutine(res):
                await res
            n += 1
            if max_updates is not None and n >= max_updates:
                return

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class CcxtBookSource(_CcxtSource):
    """Public L2 book source for one (exchange, symbol).

    ``exchange`` is a key of :data:`EXCHANGES`. ``mode``: ``"ws"`` (ccxt.pro
    ``watch_order_book``), ``"rest"`` (``fetch_order_book`` polling every
    ``poll_interval_s``) or ``"auto"`` (ws when ccxt.pro supports it for this exchange).
    ``config`` is merged into the ccxt constructor config (e.g. ``{"timeout": 5000}``).
    ``api_base_url`` rebases all REST urls (see :func:`rebase_api_urls`).
    """

    _ws_feature = "watchOrderBook"

    def __init__(self, exchange: str, symbol: str, *, depth: int = 250, **kwargs: Any) -> None:
        super().__init__(exchange, symbol, **kwargs)
        self.depth = depth
        self.limit = resolve_limit(self.spec, depth, self.mode)

    async def fetch_once(self) -> BookSnapshot:
        """One REST snapshot (with retries)."""
        await self.load_markets()
        ob = await self._call("fetch_order_book", lambda: self.client.fetch_order_book(self.symbol, self.limit))
        return self._emit(ob)

    async def stream(self) -> AsyncIterator[BookSnapshot]:  # type: ignore[override]
        """Yield a BookSnapshot per websocket book update (ws) or per poll (rest), forever."""
        await self.load_markets()
        if self.mode == "ws":
            while True:
                ob = await self._call("watch_order_book", lambda: self.client.watch_order_book(self.symbol, self.limit))
                yield self._emit(ob)
        else:
            while True:
                t0 = time.monotonic()
                yield await self.fetch_once()
                await asyncio.sleep(max(0.0, self.poll_interval_s - (time.monotonic() - t0)))

    def _emit(self, ob: Mapping[str, Any]) -> BookSnapshot:
        self.updates += 1
        return normalise_order_book(
            ob, exchange=self.name, symbol=self.symbol, depth=self.depth, ts_recv=time.time_ns()
        )


class CcxtTradeSource(_CcxtSource):
    """Public trades for one (exchange, symbol): ccxt.pro ``watch_trades`` (ws) or
    ``fetch_trades`` polling with ``since`` and de-duplication by trade id (rest).

    ``limit``: trades per REST page (None = the exchange default). A full page is followed
    at once by the next one (catching up), otherwise the next poll waits
    ``poll_interval_s``. ``since_ms``/``seen_ids`` resume after an earlier source (its
    :attr:`since_ms` and :meth:`seen_ids`); without ``since_ms`` the first page only seeds
    the watermark. Trades ccxt cannot normalise are counted in :attr:`dropped` and logged.
    """

    _ws_feature = "watchTrades"

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        limit: int | None = 1000,
        since_ms: int | None = None,
        seen_ids: Iterable[str] = (),
        max_seen: int = 20_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(exchange, symbol, **kwargs)
        if limit is not None and limit < 1:
            raise CcxtSourceError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.since_ms = since_ms
        self.dedup = TradeDeduper(max_seen, seen_ids)
        self.duplicates = 0  # trades seen again in an overlapping page / message (not emitted)
        self.dropped = 0  # trades ccxt returned that could not be normalised
        self.skipped_windows = 0  # full pages of one millisecond that had to be stepped over
        self.polls = 0

    def seen_ids(self) -> list[str]:
        return self.dedup.recent()

    def _new(self, raw: Iterable[Mapping[str, Any]], ts_recv: int) -> list[Trade]:
        """Normalised trades of a page/message not emitted yet, oldest first (not marked
        seen here: :meth:`_emitted` does that when the trade is handed out)."""
        out: list[Trade] = []
        page_ids: set[str] = set()
        for t in sorted(raw, key=lambda x: x.get("timestamp") or 0):
            try:
                trade = normalise_trade(t, exchange=self.name, symbol=self.symbol, ts_recv=ts_recv)
            except CcxtDataError as exc:
                self.dropped += 1
                log.warning("dropping trade: %s", exc)
                continue
            if trade.trade_id and (trade.trade_id in self.dedup or trade.trade_id in page_ids):
                self.duplicates += 1
                continue
            page_ids.add(trade.trade_id)
            out.append(trade)
        return out

    def _emitted(self, t: Trade) -> Trade:
        if t.trade_id:
            self.dedup.add(t.trade_id)
        # inclusive watermark: the next page starts at this millisecond, the deduper drops repeats
        self.since_ms = max(self.since_ms or 0, t.ts_exchange // 1_000_000)
        self.updates += 1
        return t

    async def _poll(self) -> tuple[list[Trade], bool]:
        """One REST page (with retries): (new trades, page was full). Advances the
        watermark only over trades already emitted, so a source stopped mid-page resumes
        without holes."""
        await self.load_markets()
        since = self.since_ms
        page = await self._call("fetch_trades", lambda: self.client.fetch_trades(self.symbol, since, self.limit))
        ts_recv = time.time_ns()
        self.polls += 1
        new = self._new(page, ts_recv)
        full = self.limit is not None and len(page) >= self.limit
        stamps = [int(t["timestamp"]) for t in page if t.get("timestamp")]
        if stamps and not new and since is not None and full and max(stamps) <= since:
            # a whole page inside one millisecond, all seen: step over it (trades may be lost)
            self.skipped_windows += 1
            log.warning(
                "%s %s: %d trades in one ms at %d fill the page; stepping over it",
                self.name,
                self.symbol,
                len(page),
                since,
            )
            self.since_ms = since + 1
        return new, full

    async def stream(self) -> AsyncIterator[Trade]:  # type: ignore[override]
        """Yield every new trade, oldest first, forever."""
        await self.load_markets()
        if self.mode == "ws":
            while True:
                raw = await self._call("watch_trades", lambda: self.client.watch_trades(self.symbol))
                for t in self._new(raw, time.time_ns()):
                    yield self._emitted(t)
        if self.since_ms is None:  # seed: trades from before the start are not published
            seed, _ = await self._poll()
            for t in seed:
                self._emitted(t)
            self.updates = 0
            await asyncio.sleep(self.poll_interval_s)
        while True:
            t0 = time.monotonic()
            new, full = await self._poll()
            for t in new:
                yield self._emitted(t)
            if not full:
                await asyncio.sleep(max(0.0, self.poll_interval_s - (time.monotonic() - t0)))
