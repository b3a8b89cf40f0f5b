"""The bus interface shared by the RabbitMQ and the in-memory implementations.

Semantics (both implementations):

* ``publish(msg)`` routes by the message type (``topology.ROUTES``). MARKET class returns
  at once (fire and forget). A market message that reaches no queue, overflows a bounded
  queue or is published while the broker is away is dropped and *counted*
  (``stats.market_dropped`` / ``market_unroutable`` / ``market_overflow``), never raised.
  STATE class is published *mandatory* and returns a :class:`concurrent.futures.Future`:
  - resolved with ``True`` when the broker confirmed the message into at least one queue;
  - failed with :class:`Unroutable` when no queue is bound for it (basic.return; the
    in-memory bus: zero queues matched), with :class:`PublishNacked` when the broker
    refused it (e.g. a full ``x-overflow: reject-publish`` queue).
  While the broker is away state messages are buffered (bounded; overflow raises
  :class:`BusBackpressure` instead of dropping silently) and re-published on reconnect.

  **How a failure reaches the caller** (the async-confirm path stays fast: nothing waits
  unless asked):
  - ``publish_and_wait(msg, timeout)`` (or ``publish(...).result(timeout)``) raises the
    typed error: use it where a lost message is money (order intents);
  - fire-and-forget callers: every failure is counted in ``stats`` (``unroutable``,
    ``nacked``), logged at ERROR (first per routing key, then every 100th), and kept until
    ``take_failures()`` returns (and clears) them, so a periodic ``flush()`` +
    ``take_failures()`` sees every loss. ``flush()`` itself only answers "is anything
    still outstanding" (a failed publish is settled, not outstanding).
* ``close(timeout)`` waits for outstanding confirms up to ``timeout`` and returns how many
  state messages were NOT confirmed (logged at ERROR when > 0): use it for the exit code.
* ``health_problems()`` lists what is wrong now (e.g. a consumer stalled at its prefetch
  limit); empty when fine. The service base reports "degraded" when it is not empty.
* ``subscribe(queue, handler)`` consumes a queue from ``topology.QUEUES`` (or any QueueDef)
  on its own worker thread, in order, with manual acks. The broker I/O (heartbeats!) never
  waits for a handler. The handler gets the decoded message and a :class:`Delivery`; it
  may return a message, which is sent as the reply when the delivery has ``reply_to``.
  - bytes that do not decode, or a handler raising anything but :class:`RetryableError`
    -> the original bytes go to ``<queue>.dlq`` with the reason in headers
    (``x-dlq-reason``, ``x-dlq-error``, ``x-original-routing-key``, ...), then the message
    is acked: the next message is processed.
  - :class:`RetryableError` -> negative ack with requeue after a short back-off.
  - duplicates (same message id seen recently on that subscription, e.g. after a
    reconnect) are acked and skipped: delivery is at-least-once, handling effectively
    once.
* ``rpc(cmd, timeout)`` publishes a ControlCommand and waits for the ControlReply with the
  same correlation id; raises :class:`RpcTimeout`. It sets (or clamps) ``cmd.expires_at``
  to now + ``timeout``: a command must never run after its caller gave up (servers drop
  expired commands).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from depthpilot import messages as m
from depthpilot.topology import QUEUES, QueueDef

log = logging.getLogger("depthpilot.bus")


class BusError(RuntimeError):
    pass


class BusBackpressure(BusError):
    """The state-message buffer is full (broker away too long): refuse instead of dropping."""


class PublishTimeout(BusError):
    pass


class PublishFailed(BusError):
    """A state message the broker did not take. ``exchange``/``routing_key``/``message_id``
    name it."""

    def __init__(self, text: str, *, exchange: str = "", routing_key: str = "", message_id: str | None = None) -> None:
        super().__init__(text)
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id


class Unroutable(PublishFailed):
    """No queue is bound for the routing key (basic.return on a mandatory publish)."""


class PublishNacked(PublishFailed):
    """The broker nacked the message (e.g. a full ``reject-publish`` queue)."""


def expire_by(cmd: m.ControlCommand, timeout: float) -> None:
    """Set or clamp ``cmd.expires_at`` (ns) to now + ``timeout``: never later than the caller waits."""
    limit = time.time_ns() + int(timeout * 1e9)
    if not cmd.expires_at or cmd.expires_at > limit:
        cmd.expires_at = limit


class RpcTimeout(BusError):
    pass


class RetryableError(Exception):
    """Raised by a handler to ask for redelivery (transient failure, e.g. store down)."""


@dataclass
class Delivery:
    queue: str
    routing_key: str
    exchange: str = ""
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None


Handler = Callable[[m.Message, Delivery], Optional[m.Message]]


@dataclass
class BusStats:
    published: int = 0
    confirmed: int = 0
    market_dropped: int = 0  # market messages dropped while disconnected
    consumed: int = 0
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0
    reconnects: int = 0  # successful re-connections after a loss
    reconnect_attempts: int = 0  # failed connection attempts
    unroutable: int = 0  # state messages failed with Unroutable
    nacked: int = 0  # state messages failed with PublishNacked
    market_unroutable: int = 0  # market messages that matched no queue (counted, not raised)
    market_overflow: int = 0  # market messages dropped by a bounded queue (in-memory bus)
    consumer_stalls: int = 0  # times a consumer sat at its prefetch limit without progress
    consumers_stalled: int = 0  # gauge: consumers stalled right now
    unconfirmed_at_close: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


DLQ_HEADERS = ("x-dlq-reason", "x-dlq-error", "x-original-exchange", "x-original-routing-key", "x-dlq-queue")


def dlq_headers(reason: str, error: str, delivery: Delivery) -> dict[str, Any]:
    return {
        "x-dlq-reason": reason,  # "decode_error" | "handler_error"
        "x-dlq-error": error[:1000],
        "x-original-exchange": delivery.exchange,
        "x-original-routing-key": delivery.routing_key,
        "x-dlq-queue": delivery.queue,
        **({"x-original-message-id": delivery.message_id} if delivery.message_id else {}),
    }


class SeenIds:
    """Bounded LRU of recently handled message ids (per subscription)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, mid: str) -> bool:
        return mid in self._ids

    def add(self, mid: str) -> None:
        self._ids[mid] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def resolve_queue(queue: QueueDef | str) -> QueueDef:
    if isinstance(queue, QueueDef):
        return queue
    try:
        return QUEUES[queue]
    except KeyError:
        raise BusError(f"unknown queue {queue!r}: define it in depthpilot/topology.py") from None


class Subscription(ABC):
    queue: QueueDef

    @abstractmethod
    def cancel(self) -> None: ...


class Bus(ABC):
    """See module docstring."""

    def __init__(self, service: str = "depthpilot") -> None:
        self.service = service
        self.stats = BusStats()
        self._stats_lock = threading.Lock()

        self._failures: list[PublishFailed] = []
        self._failure_log: dict[str, int] = {}

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _publish_failed(self, fut: Future, exc: PublishFailed) -> None:
        """Fail one state publish: count it, keep it for ``take_failures``, log (first per
        routing key, then every 100th), and fail its future."""
        self._count("unroutable" if isinstance(exc, Unroutable) else "nacked")
        with self._stats_lock:
            if len(self._failures) < 10_000:
                self._failures.append(exc)
            key = f"{type(exc).__name__}:{exc.exchange}:{exc.routing_key}"
            n = self._failure_log[key] = self._failure_log.get(key, 0) + 1
        if n == 1 or n % 100 == 0:
            log.error("state message lost (%d so far for this key): %s", n, exc)
        if not fut.done():
            fut.set_exception(exc)

    def take_failures(self) -> list[PublishFailed]:
        """Return and forget the state publishes that failed since the last call."""
        with self._stats_lock:
            out, self._failures = self._failures, []
        return out

    def health_problems(self) -> list[str]:
        """What is wrong right now, one line each (e.g. a consumer stalled at its prefetch
        limit, broker away); empty when healthy. ``Service`` reports "degraded" when not
        empty."""
        return []

    def publish_and_wait(self, msg: m.Message, timeout: float = 10.0) -> None:
        """Publish and wait for the broker: raises :class:`Unroutable`,
        :class:`PublishNacked` or :class:`PublishTimeout`. A market message returns at once."""
        fut = self.publish(msg)
        if fut is None:
            return
        try:
            fut.result(timeout)
        except TimeoutError:
            raise PublishTimeout(f"{msg.type_name} {msg.id} not confirmed within {timeout}s") from None

    # lifecycle
    @abstractmethod
    def start(self) -> "Bus": ...

    @abstractmethod
    def close(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` for outstanding confirms, then disconnect. Returns the
        number of state messages left unconfirmed (0 = nothing lost)."""

    def __enter__(self) -> "Bus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # publishing
    @abstractmethod
    def publish(
        self, msg: m.Message, routing_key: str | None = None, *, headers: dict[str, Any] | None = None
    ) -> Future | None: ...

    @abstractmethod
    def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> Future: ...

    @abstractmethod
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every state message published so far is confirmed. True if so."""

    # consuming
    @abstractmethod
    def subscribe(
        self, queue: QueueDef | str, handler: Handler, *, prefetch: int | None = None, dedup: bool = True
    ) -> Subscription: ...

    @abstractmethod
    def rpc(self, cmd: m.ControlCommand, timeout: float = 5.0) -> m.ControlReply: ...

    # admin helpers used by tests, the CLI and the API
    @abstractmethod
    def queue_depth(self, queue: str) -> int: ...

    @abstractmethod
    def get_dead_letters(self, queue: str, max_count: int = 100) -> list[tuple[bytes, dict[str, Any]]]:
        """Remove and return up to ``max_count`` (body, headers) from ``<queue>.dlq``."""

    @abstractmethod
    def purge(self, queue: QueueDef | str) -> None:
        """Drop every ready message of ``queue``; a topology queue that does not exist yet is
        declared first (so a service started next finds it empty)."""

    @property
    @abstractmethod
    def connected(self) -> bool: ...
