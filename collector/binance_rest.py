"""Binance REST depth snapshots (spot, USD-M, COIN-M): endpoints per market, the retry policy
(429/418/5xx/timeouts with exponential back-off honouring ``Retry-After``, via tenacity) and
the snapshot fetcher. The websocket side lives in :mod:`collector.binance_ws`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from collector.events import RetryEvent
from collector.exchanges.binance_parse import (
    EXCHANGE_COINM,
    EXCHANGE_SPOT,
    EXCHANGE_USDM,
    KIND_SNAPSHOT,
    BinanceFormatError,
    DepthSnapshot,
    parse_stream_message,
)

__all__ = [
    "BinanceHTTPError",
    "BinanceSourceError",
    "MARKETS",
    "MarketSpec",
    "SnapshotFetcher",
    "is_retryable",
    "retry_after_s",
    "snapshot_limit",
]

log = logging.getLogger("collector.binance_ws")


class BinanceSourceError(ValueError):
    """Bad configuration of a Binance source, or a non-retryable answer from Binance."""


class BinanceHTTPError(Exception):
    """A non-200 REST answer (``status``, Binance error ``code``/``msg``, ``Retry-After`` s)."""

    def __init__(self, status: int, code: int | None, msg: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}" + (f" code {code}" if code is not None else "") + (f": {msg}" if msg else ""))
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after = retry_after


@dataclass(frozen=True)
class MarketSpec:
    exchange: str  # normalised exchange name used everywhere else
    ws_url: str  # base: scheme://host[:port]
    rest_url: str
    depth_path: str  # REST snapshot endpoint
    rest_limits: tuple[int, ...] | None  # allowed ``limit`` values (None: any in 1..rest_max)
    rest_max: int
    depth_route: str  # ws path prefix carrying diff depth ("" = root)
    trade_route: str  # ws path prefix carrying trades
    depth_stream: str  # channel after "<sym>@"
    trade_stream: str
    max_streams: int  # per connection
    futures: bool


MARKETS: dict[str, MarketSpec] = {
    # spot: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
    "spot": MarketSpec(
        EXCHANGE_SPOT,
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
        "/api/v3/depth",
        None,
        5000,
        "",
        "",
        "depth@100ms",
        "trade",
        1024,
        False,
    ),
    # USD-M: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
    # (depth belongs to /public, aggTrade to /market; unrouted connections only get /public data)
    "usdm": MarketSpec(
        EXCHANGE_USDM,
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
        "/fapi/v1/depth",
        (5, 10, 20, 50, 100, 500, 1000),
        1000,
        "/public",
        "/market",
        "depth@100ms",
        "aggTrade",
        200,
        True,
    ),
    # COIN-M: https://developers.binance.com/docs/derivatives/coin-margined-futures/websocket-market-streams
    # (symbols like BTCUSD_PERP; sizes in contracts; one connection carries depth and trades)
    "coinm": MarketSpec(
        EXCHANGE_COINM,
        "wss://dstream.binance.com",
        "https://dapi.binance.com",
        "/dapi/v1/depth",
        (5, 10, 20, 50, 100, 500, 1000),
        1000,
        "",
        "",
        "depth@100ms",
        "aggTrade",
        200,
        True,
    ),
}


def snapshot_limit(market: str, depth: int, minimum: int = 1000) -> int:
    """REST ``limit`` for a book emitted at ``depth`` levels: at least ``minimum`` (levels far
    from the top that never change again are only known from the snapshot), at least
    ``depth``, within what the endpoint accepts (spot 1..5000, USD-M a fixed set up to 1000)."""
    spec = _spec(market)
    if depth < 1:
        raise BinanceSourceError(f"depth must be >= 1, got {depth}")
    want = max(depth, minimum)
    if spec.rest_limits is None:
        return min(want, spec.rest_max)
    covering = [x for x in spec.rest_limits if x >= want]
    return min(covering) if covering else max(spec.rest_limits)


def _spec(market: str) -> MarketSpec:
    try:
        return MARKETS[market]
    except KeyError:
        raise BinanceSourceError(f"market must be one of {sorted(MARKETS)}, not {market!r}") from None


def _check_symbols(symbols: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(symbols, str):
        symbols = [symbols]
    syms = tuple(dict.fromkeys(str(s).strip().upper() for s in symbols))
    if not syms or any(not s.replace("_", "").isalnum() for s in syms):
        raise BinanceSourceError(f"symbols must be non-empty alphanumeric Binance symbols, got {list(symbols)!r}")
    return syms


def is_retryable(exc: BaseException) -> bool:
    """Rate limits (429), IP bans (418, after their Retry-After), 5xx, timeouts, transport."""
    if isinstance(exc, BinanceHTTPError):
        return exc.status in (418, 429) or exc.status >= 500
    return isinstance(exc, (asyncio.TimeoutError, aiohttp.ClientError, OSError))


def retry_after_s(headers: Any) -> float | None:
    """``Retry-After`` in seconds (Binance sends seconds), or None."""
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return v if v >= 0 else None


class _WaitRetryAfter:
    """Exponential back-off, but never shorter than the server's Retry-After."""

    def __init__(self, base: Any, cap_s: float) -> None:
        self.base = base
        self.cap_s = cap_s

    def __call__(self, rs: RetryCallState) -> float:
        w = float(self.base(rs))
        exc = rs.outcome.exception() if rs.outcome is not None else None
        ra = getattr(exc, "retry_after", None)
        if ra is not None:
            w = max(w, min(float(ra), self.cap_s))
        return w


class SnapshotFetcher:
    """REST depth snapshots of one market with retries; counts ``rest_requests``, ``retries``
    and ``retries_by_error``, reports each retry through ``on_retry``."""

    def __init__(
        self,
        spec: MarketSpec,
        rest_url: str,
        rest_limit: int,
        *,
        on_retry: Callable[[RetryEvent], Any] | None,
        timeout_s: float,
        max_attempts: int,
        backoff_initial_s: float,
        backoff_max_s: float,
        retry_after_max_s: float,
    ) -> None:
        self.spec = spec
        self.exchange = spec.exchange
        self.rest_url = rest_url
        self.rest_limit = rest_limit
        self.on_retry = on_retry
        self.rest_timeout_s = timeout_s
        self.rest_max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.rest_requests = 0
        self.last_raw: dict[str, bytes] = {}
        self.retries = 0
        self.retries_by_error: dict[str, int] = {}

    async def fetch(self, session: aiohttp.ClientSession, sym: str) -> DepthSnapshot:
        """One REST depth snapshot with retries (429/418/5xx/timeouts), reported via on_retry."""

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            sleep_s = rs.next_action.sleep if rs.next_action is not None else 0.0
            name = type(exc).__name__
            self.retries += 1
            key = f"HTTP {exc.status}" if isinstance(exc, BinanceHTTPError) else name
            self.retries_by_error[key] = self.retries_by_error.get(key, 0) + 1
            log.warning(
                "%s %s depth snapshot attempt %d failed (%s), retrying in %.2fs",
                self.exchange,
                sym,
                rs.attempt_number,
                exc,
                sleep_s,
            )
            if self.on_retry is not None:
                self.on_retry(
                    RetryEvent(self.exchange, sym, "depth_snapshot", rs.attempt_number, name, str(exc)[:300], sleep_s)
                )

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=_WaitRetryAfter(
                wait_exponential(multiplier=self.backoff_initial_s, min=self.backoff_initial_s, max=self.backoff_max_s),
                self.retry_after_max_s,
            ),
            stop=stop_after_attempt(self.rest_max_attempts),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_depth(session, sym)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _get_depth(self, session: aiohttp.ClientSession, sym: str) -> DepthSnapshot:
        self.rest_requests += 1
        url = self.rest_url + self.spec.depth_path
        timeout = aiohttp.ClientTimeout(total=self.rest_timeout_s)
        async with session.get(url, params={"symbol": sym, "limit": str(self.rest_limit)}, timeout=timeout) as r:
            body = await r.read()
            if r.status != 200:
                code, msg = None, body[:200].decode(errors="replace")
                try:
                    obj = orjson.loads(body)
                    if isinstance(obj, dict):
                        code, msg = obj.get("code"), str(obj.get("msg", msg))
                except ValueError:
                    pass  # not JSON (e.g. an HTML 502 page): keep the text
                err = BinanceHTTPError(r.status, code, msg, retry_after_s(r.headers))
                if not is_retryable(err):
                    raise BinanceSourceError(f"{self.exchange} {sym} depth snapshot refused: {err}")
                raise err
        try:
            kind, _, snap = parse_stream_message(body)
        except BinanceFormatError as exc:
            raise BinanceSourceError(f"{self.exchange} {sym} depth snapshot unreadable: {exc}") from None
        if kind != KIND_SNAPSHOT:
            raise BinanceSourceError(f"{self.exchange} {sym} depth snapshot: unexpected payload {body[:100]!r}")
        self.last_raw[sym] = body  # the exchange's bytes, for a recorder
        return snap
