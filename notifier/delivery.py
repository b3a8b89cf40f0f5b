"""Getting a message to a channel, whatever it takes (the clock and sleep are injected, so the
policy is unit-tested without waiting).

* rate limits: at most one message per ``per_target_s`` to a chat (Telegram: ~1/s per chat) and
  ``global_per_s`` overall (Telegram: ~30/s per bot);
* transient failures (network, 5xx, 429) are retried forever with exponential back-off
  (capped at ``max_backoff_s``); a 429's ``retry_after`` is honoured exactly;
* permanent failures (400 chat not found, 403 bot blocked...) raise
  :class:`PermanentDeliveryError` (the caller dead-letters the message with the reason);
* :meth:`Deliverer.deliver` returns only when the channel accepted the message, or raises
  :class:`DeliveryInterrupted` when the service stops (the caller requeues).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

log = logging.getLogger("notifier.delivery")


class DeliveryError(Exception):
    """A channel refused or failed a send. ``retry_after`` (s) when the channel asked for a pause."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class PermanentDeliveryError(RuntimeError):
    pass


class DeliveryInterrupted(RuntimeError):
    pass


class Channel(Protocol):
    def send(self, target: str, text: str) -> None:
        """Deliver ``text`` to ``target`` or raise :class:`DeliveryError`."""


class RateLimiter:
    def __init__(self, per_target_s: float = 1.0, global_per_s: float = 30.0) -> None:
        self.per_target_s = per_target_s
        self.global_gap_s = 1.0 / global_per_s
        self.last_target: dict[str, float] = {}
        self.last_any = float("-inf")

    def wait_s(self, target: str, now: float) -> float:
        last = self.last_target.get(target, float("-inf"))
        return max(0.0, last + self.per_target_s - now, self.last_any + self.global_gap_s - now)

    def record(self, target: str, now: float) -> None:
        self.last_target[target] = now
        self.last_any = now

    def hold(self, target: str, until: float) -> None:
        """No message to ``target`` before ``until`` (a 429's retry_after)."""
        self.last_target[target] = max(self.last_target.get(target, float("-inf")), until - self.per_target_s)


@dataclass
class Backoff:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))


@dataclass
class DeliveryStats:
    sent: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429s
    failed_permanently: int = 0


class Deliverer:
    def __init__(
        self,
        channels: dict[str, Channel],
        limiter: RateLimiter | None = None,
        backoff: Backoff | None = None,
        stopping: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.channels = channels
        self.limiter = limiter or RateLimiter()
        self.backoff = backoff or Backoff()
        self.stopping = stopping or threading.Event()
        self.clock = clock
        self._sleep = sleep or self.stopping.wait  # returns True when stopping
        self.stats = DeliveryStats()

    def channel_for(self, target: str) -> Channel:
        kind = target.split(":", 1)[0]
        ch = self.channels.get(kind)
        if ch is None:
            raise PermanentDeliveryError(f"no {kind!r} channel configured for target {target!r}")
        return ch

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self._sleep(seconds):
            raise DeliveryInterrupted("stopping")
        if self.stopping.is_set():
            raise DeliveryInterrupted("stopping")

    def deliver(self, target: str, text: str) -> int:
        """Send until accepted; returns the number of attempts."""
        ch = self.channel_for(target)
        attempt = failures = 0  # failures: transient errors other than 429, for the back-off
        while True:
            self._pause(self.limiter.wait_s(target, self.clock()))
            attempt += 1
            try:
                ch.send(target, text)
            except DeliveryError as exc:
                if exc.permanent:
                    self.stats.failed_permanently += 1
                    raise PermanentDeliveryError(f"{target}: {exc}") from None
                self.stats.retries += 1
                if exc.retry_after is not None:
                    self.stats.rate_limited += 1
                    delay = float(exc.retry_after)
                    self.limiter.hold(target, self.clock() + delay)
                else:
                    failures += 1
                    delay = self.backoff.delay(failures)
                log.warning("delivery to %s failed (attempt %d: %s); retrying in %.1f s", target, attempt, exc, delay)
                self._pause(delay)
                continue
            self.limiter.record(target, self.clock())
            self.stats.sent += 1
            return attempt
