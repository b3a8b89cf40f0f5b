"""The bus interface shared by the RabbitMQ and the in-memory implementations.

Semantics (both implementations):

* ``publish(msg)`` routes by the message type (``topology.ROUTES``). MARKET class returns
  at once (fire and forget, dropped and counted when the broker is away). STATE class
  returns a :class:`concurrent.futures.Future` resolved when the broker confirmed the
  message; while the broker is away state messages are buffered (bounded; overflow raises
  :class:`BusBackpressure` instead of dropping silently) and re-published on reconnect.
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
  same correlation id; raises :class:`RpcTimeout`.
"""
from __future__ import annotations

import logging
import threading
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
    reconnects: int = 0
    unroutable: int = 0

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

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    # lifecycle
    @abstractmethod
    def start(self) -> "Bus": ...

    @abstractmethod
    def close(self, timeout: float = 5.0) -> None: ...

    def __enter__(self) -> "Bus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # publishing
    @abstractmethod
    def publish(self, msg: m.Message, routing_key: str | None = None, *,
                headers: dict[str, Any] | None = None) -> Future | None: ...

    @abstractmethod
    def publish_raw(self, exchange: str, routing_key: str, body: bytes, *, persistent: bool = True,
                    headers: dict[str, Any] | None = None) -> Future: ...

    @abstractmethod
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every state message published so far is confirmed. True if so."""

    # consuming
    @abstractmethod
    def subscribe(self, queue: QueueDef | str, handler: Handler, *, prefetch: int | None = None,
                  dedup: bool = True) -> Subscription: ...

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
