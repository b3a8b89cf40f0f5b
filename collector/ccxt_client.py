"""One ccxt client for one (exchange, symbol) with retries: the plumbing both ccxt feeds
(:mod:`collector.ccxt_rest`, :mod:`collector.ccxt_ws`) and the history loader share.

Retries with exponential backoff (tenacity) on rate limits, 5xx and timeouts, each retry
reported through a callback (:class:`collector.events.RetryEvent`) and counted. ``mode``
"auto" picks ccxt.pro's websocket class when it has the feature, else REST.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Mapping, Self

import ccxt
import ccxt.async_support as ccxt_async
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from collector.ccxt_common import EXCHANGES, CcxtSourceError, rebase_api_urls, rebase_ws_urls
from collector.events import RetryCallback, RetryEvent

try:  # ccxt.pro ships inside ccxt >= 4 ("pro" websocket classes)
    import ccxt.pro as ccxt_pro
except ImportError:  # pragma: no cover - only very old ccxt
    ccxt_pro = None


__all__ = ["RETRYABLE_ERRORS", "RawSink", "ccxt_pro"]

log = logging.getLogger(__name__)

RawSink = Callable[[str, bytes, int], Any]  # (symbol, raw record, receive ns): collector.recorder

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
        ws_base_url: str | None = None,
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
        if mode == "ws":
            if pro_cls is None:
                raise CcxtSourceError(f"ccxt.pro has no websocket class for {self.spec.ccxt_id}")
            cls = pro_cls
        else:
            cls = getattr(ccxt_async, self.spec.ccxt_id)
        self.mode: Literal["ws", "rest"] = mode
        self.client = cls(cfg)
        if api_base_url:
            rebase_api_urls(self.client, api_base_url)
        if ws_base_url:
            rebase_ws_urls(self.client, ws_base_url)
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
