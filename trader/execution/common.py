"""What the live execution adapters share, kept free of any venue client: venue order ids
derived from client order ids, rounding/refusing orders against the instrument's rules,
the retry policy (tenacity) with its one-line reporting, and secret redaction (with the core's
registry, :mod:`depthpilot.redact`: the API key and secret a client registers there are masked
in its errors, in the venue libraries' log lines, and in every log line and chat reply of the
service).

Pure except for the retry loop's sleeping.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from depthpilot.redact import mask_secrets, register_secrets
from trader.domain import (
    Instrument,
    OrderRejected,
    OrderRequest,
    RetryableExecutionError,
)

T = TypeVar("T")

# Bybit orderLinkId and Binance newClientOrderId both accept up to 36 of these characters.
_VENUE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


def venue_order_id(client_order_id: str) -> str:
    """The id sent to the venue for ``client_order_id``: itself when the venue accepts it,
    else ``dp-`` + 33 hex digits of its SHA-256 (deterministic: a redelivered intent, or a
    restarted process, maps to the same venue order)."""
    if _VENUE_ID_RE.match(client_order_id):
        return client_order_id
    return "dp-" + hashlib.sha256(client_order_id.encode()).hexdigest()[:33]


def dec(x: Any, default: Decimal | None = None) -> Decimal | None:
    """A venue's number (string/int/float) as ``Decimal``; '' / None / garbage -> ``default``."""
    if x is None or x == "":
        return default
    try:
        return Decimal(repr(x)) if isinstance(x, float) else Decimal(str(x))
    except InvalidOperation:
        return default


def prepare_order(req: OrderRequest, inst: Instrument) -> OrderRequest:
    """Round ``req`` to ``inst``'s rules (quantity floored to the lot step, a limit price snapped
    to the tick on the passive side) and refuse it locally (``OrderRejected``, code ``local``)
    when it still breaks them. For a market order ``price`` is the reference price of the
    min-notional check (not sent); without one the notional check is left to the venue.
    Reduce-only orders are exempt from the min notional (as on Bybit and Binance)."""
    qty = inst.round_qty(req.qty)
    price = req.price
    if price is not None:
        price = inst.round_price(price, req.side if req.order_type == "limit" else None)
    if req.order_type == "limit" and price is None:
        raise OrderRejected(
            f"{inst.exchange} {inst.symbol}: limit order {req.client_order_id} has no price", code="local"
        )
    check_price = price if (price is not None and not req.reduce_only) else None
    why = inst.violation(qty, check_price if check_price is not None else Decimal(0))
    if why and (check_price is not None or not why.startswith("notional")):
        raise OrderRejected(
            f"{inst.exchange} {inst.symbol}: order {req.client_order_id} refused locally: {why} (asked {req.qty})",
            code="local",
        )
    return replace(req, qty=qty, price=price)


def redacted(text: object) -> str:
    """``text`` on one line with every secret of the core registry replaced by ``***``: what an
    execution error or a log line may say about a venue's answer."""
    return " ".join(mask_secrets(str(text)).split())


class LogRedactor(logging.Filter):
    """Scrubs credentials out of the venue libraries' own log records (ccxt logs every request's
    headers, X-MBX-APIKEY included, at DEBUG), with the core registry. One instance per logger,
    shared by all clients."""

    @classmethod
    def protect(cls, *secrets: str | None, loggers: tuple[str, ...] = ()) -> None:
        """Register ``secrets`` with the core registry and filter ``loggers`` with it."""
        register_secrets([s for s in secrets if s])
        for name in loggers:
            lg = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in lg.filters):
                lg.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_secrets(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


LIBRARY_LOGGERS = (
    "ccxt",
    "ccxt.base.exchange",
    "pybit",
    "pybit._http_manager",
    "pybit._websocket_stream",
    "websocket",
    "urllib3.connectionpool",
)


class RateLimited(RetryableExecutionError):
    """The venue said slow down; ``retry_after_s`` is its hint (0 = none)."""

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff (``base_delay_s`` * 2^n, capped at ``max_delay_s``; a venue's
    Retry-After hint wins when longer) for at most ``attempts`` tries within ``deadline_s``."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    deadline_s: float = 30.0


@dataclass
class RetryStats:
    """What the retries cost (read by health/metrics; logged per retry)."""

    retries: int = 0
    rate_limited: int = 0
    delays_s: list[float] = field(default_factory=list)


def retry_after(value: object) -> float:
    """An HTTP ``Retry-After`` in seconds (delta-seconds only; an HTTP-date or garbage -> 0)."""
    try:
        return max(0.0, float(str(value))) if value not in (None, "") else 0.0
    except ValueError:
        return 0.0


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after_s: float = 0.0) -> float:
    """Delay before try ``attempt + 1`` (``attempt`` >= 1 tries done)."""
    expo = min(policy.max_delay_s, policy.base_delay_s * (2 ** (attempt - 1)))
    return max(expo, min(retry_after_s, policy.max_delay_s))


def retrying(policy: RetryPolicy, stats: RetryStats, log: logging.Logger, what: str) -> Retrying:
    """A tenacity ``Retrying`` for ``RetryableExecutionError`` that reports every retry."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", 0.0) or 0.0
        return backoff_delay(policy, state.attempt_number, hint)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        stats.retries += 1
        stats.rate_limited += isinstance(exc, RateLimited)
        stats.delays_s.append(delay)
        log.warning("%s: %s; retry %d in %.2f s", what, exc, state.attempt_number, delay)

    return Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline_s),
        wait=wait,
        retry=retry_if_exception_type(RetryableExecutionError),
        before_sleep=before_sleep,
        reraise=True,
    )


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, stats: RetryStats, log: logging.Logger, what: str) -> T:
    return retrying(policy, stats, log, what)(fn)
