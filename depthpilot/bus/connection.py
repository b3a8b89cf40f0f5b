"""RabbitMQ bus, part 1 of 3: the connection (I/O thread, reconnects, handing work to the
I/O thread, topology, admin helpers). ``publisher.py`` and ``consumer.py`` add the rest;
``rabbit.py`` puts them together as :class:`RabbitBus`.

* One I/O thread owns a ``pika.SelectConnection`` and nothing else touches it; other
  threads hand work over with :meth:`RabbitConnection._call_soon` /
  :meth:`RabbitConnection._schedule_once`.
* **Work handed to the I/O thread is tied to its connection.** pika's
  ``add_callback_threadsafe`` happily accepts a callback on a connection that is just
  closing, and that loop never runs again. So a "callback already queued" flag must name
  the connection it was queued on (``_armed[key] == generation``): after a reconnect a
  stale flag no longer blocks the next request, and ``_on_open`` re-arms every pending
  settle and flush (``_rearm``).
* The connection is re-established with exponential back-off (capped at
  ``reconnect_max_delay``); topology is re-declared and every subscription resumes.
  Logging during an outage: one WARNING per attempt with the next delay, no tracebacks for
  expected connection errors (pika's own loggers are quieted), one INFO "reconnected after
  X s" per connection, ``stats.reconnects`` / ``stats.reconnect_attempts``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pika
import pika.exceptions

from depthpilot import messages as m
from depthpilot.bus.base import Bus, BusError
from depthpilot.settings import redact_url
from depthpilot.topology import DEAD_LETTER_EXCHANGE, EXCHANGES, QUEUES, QueueDef

log = logging.getLogger("depthpilot.bus.rabbit")

# errors that mean "the broker is away / the connection broke": logged as one line, no traceback
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def quiet_pika() -> None:
    """pika logs every failed connect at ERROR with a traceback; we report outages ourselves.
    Leaves a level someone configured explicitly alone."""
    pika_log = logging.getLogger("pika")
    if pika_log.level == logging.NOTSET:
        pika_log.setLevel(logging.CRITICAL)


def backoff_delay(attempt: int, max_delay: float, rand: float) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): 0.1 s doubling, capped, with
    jitter (``rand`` in [0, 1) scales it to 50..100 %)."""
    return min(max_delay, 0.1 * (2 ** min(attempt, 30))) * (0.5 + rand / 2)


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown reason"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


class TopologyError(BusError):
    """The broker holds a queue/exchange whose arguments differ from topology.py."""


class RabbitConnection(Bus):
    def __init__(
        self,
        url: str,
        service: str = "depthpilot",
        *,
        heartbeat: int | None = None,
        prefetch: int = 200,
        max_pending: int = 200_000,
        reconnect_max_delay: float = 2.0,
        extra_queues: tuple[QueueDef, ...] = (),
        stall_after: float = 30.0,
    ) -> None:
        super().__init__(service)
        quiet_pika()
        self.url = url
        self.params = pika.URLParameters(url)
        if heartbeat is not None:
            self.params.heartbeat = heartbeat
        self.params.blocked_connection_timeout = 60
        self.params.client_properties = {"connection_name": f"{service}@{m.instance_name()}"}
        self.prefetch = prefetch
        self.max_pending = max_pending
        self.reconnect_max_delay = reconnect_max_delay
        self.stall_after = stall_after  # a consumer at its prefetch limit this long without progress is stalled
        self._extra_queues: dict[str, QueueDef] = {q.name: q for q in extra_queues}
        self._subs: list[Any] = []

        self._conn: pika.SelectConnection | None = None
        self._gen = 0  # bumps for every new connection
        self._sched_lock = threading.Lock()
        self._armed: dict[Hashable, int] = {}  # key -> generation its callback is queued on
        self._ready = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self._open_error: BaseException | None = None
        self._close_reason: BaseException | None = None
        self._lost_at: float | None = None  # monotonic time the last good connection was lost
        self._failed_attempts = 0
        self._up = False  # the current connection got ready (publish channels in confirm mode)
        self.last_connected_at: float | None = None
        self.last_disconnected_at: float | None = None

    # ================================================================ lifecycle
    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def start(self, wait: float | None = 10.0) -> RabbitConnection:
        if self._thread is None:
            self._thread = threading.Thread(target=self._io_main, name=f"amqp-io-{self.service}", daemon=True)
            self._thread.start()
        if wait:
            self.wait_connected(wait)
        return self

    def wait_connected(self, timeout: float = 10.0) -> None:
        if not self._ready.wait(timeout):
            if self._fatal:
                raise self._fatal
            raise BusError(f"could not connect to RabbitMQ at {redact_url(self.url)} within {timeout}s")

    def _stop_io(self, timeout: float) -> None:
        """Close the connection and join the I/O thread (the publisher drained first)."""
        self._closing = True
        for s in list(self._subs):
            s._stop.set()
        conn = self._conn

        def _close() -> None:
            if conn is not None and conn.is_open:
                conn.close()
            elif conn is not None:
                conn.ioloop.stop()

        self._call_soon(_close)
        assert self._thread is not None
        self._thread.join(timeout)
        for s in list(self._subs):
            s.thread.join(timeout=2)
        self._subs.clear()
        self._thread = None

    def _io_main(self) -> None:
        attempt = 0
        while not self._closing:
            self._open_error = self._close_reason = None
            try:
                self._declare_topology()
                conn = pika.SelectConnection(
                    self.params,
                    on_open_callback=self._on_open,
                    on_open_error_callback=self._on_open_error,
                    on_close_callback=self._on_close,
                )
            except TopologyError as exc:
                self._fatal = exc
                log.critical("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - broker unreachable: back off and retry
                if self._closing:
                    break
                self._attempt_failed(attempt, exc)
                attempt += 1
                continue
            with self._sched_lock:
                self._conn = conn
                self._gen += 1
            self._up = False
            try:
                conn.ioloop.start()
            except Exception:  # never let the I/O thread die; this one is unexpected: traceback
                log.exception("AMQP I/O loop crashed; reconnecting")
            was_ready = self._up
            self._on_disconnected(conn)
            if self._closing:
                break
            if was_ready:
                attempt = 0
                self._lost_at = time.monotonic()
                self._failed_attempts = 0
                delay = self._delay(attempt)
                log.warning(
                    "%s: connection to RabbitMQ at %s lost (%s); reconnecting in %.2fs",
                    self.service,
                    redact_url(self.url),
                    describe(self._close_reason),
                    delay,
                )
                time.sleep(delay)
            else:
                self._attempt_failed(attempt, self._open_error or self._close_reason)
            attempt += 1
        self._conn = None

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.reconnect_max_delay, random.random())

    def _attempt_failed(self, attempt: int, exc: BaseException | None) -> None:
        """One WARNING per failed attempt, with the next delay; a traceback only for an
        error that is not a plain connection failure."""
        self._count("reconnect_attempts")
        self._failed_attempts += 1
        delay = self._delay(attempt)
        unexpected = exc is not None and not isinstance(exc, EXPECTED_ERRORS)
        log.warning(
            "%s: RabbitMQ at %s unreachable (%s); attempt %d failed, next in %.2fs",
            self.service,
            redact_url(self.url),
            describe(exc),
            self._failed_attempts,
            delay,
            exc_info=exc if unexpected else None,
        )
        time.sleep(delay)

    def _on_open_error(self, conn: pika.SelectConnection, err: BaseException) -> None:
        self._open_error = err
        self._detach(conn)
        conn.ioloop.stop()

    def _on_close(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        self._close_reason = reason
        self._detach(conn)
        conn.ioloop.stop()

    def _detach(self, conn: Any) -> None:
        """The connection is going away: nothing may be queued on its loop any more."""
        self._ready.clear()
        with self._sched_lock:
            if self._conn is conn:
                self._conn = None
            self._armed.clear()

    def _on_connected(self) -> None:
        """I/O thread, once the publish channels are ready."""
        self.last_connected_at = time.monotonic()
        if self._lost_at is not None:
            self._count("reconnects")
            log.info(
                "%s: reconnected to RabbitMQ at %s after %.1fs (%d failed attempts)",
                self.service,
                redact_url(self.url),
                self.last_connected_at - self._lost_at,
                self._failed_attempts,
            )
            self._lost_at = None
        self._failed_attempts = 0
        self._up = True
        self._ready.set()

    def _restart_connection(self) -> None:
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.close()

    def _on_disconnected(self, conn: Any) -> None:
        self._detach(conn)
        self.last_disconnected_at = time.monotonic()

    # ================================================================ handing work to the I/O thread
    def _call_soon(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the I/O thread of the current connection; False when there is none."""
        with self._sched_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.ioloop.add_callback_threadsafe(fn)
                return True
            except Exception:  # noqa: BLE001 - loop already closed: caller keeps its data buffered
                return False

    def _schedule_once(self, key: Hashable, fn: Callable[[], None]) -> None:
        """Queue ``fn`` on the current connection unless it is already queued THERE. ``fn``
        calls :meth:`_ran` first. Without a connection nothing is queued: ``_rearm`` runs
        every pending job when the next connection opens."""
        with self._sched_lock:
            conn = self._conn
            if conn is None or self._armed.get(key) == self._gen:
                return
            self._armed[key] = self._gen
            try:
                conn.ioloop.add_callback_threadsafe(fn)
            except Exception:  # noqa: BLE001 - loop closed under us: re-armed on the next connection
                self._armed.pop(key, None)

    def _ran(self, key: Hashable) -> None:
        with self._sched_lock:
            self._armed.pop(key, None)

    def _rearm(self) -> None:
        """Hook (I/O thread, new connection open): run every job that was pending."""

    def _on_open(self, conn: pika.SelectConnection) -> None:
        """I/O thread: the connection is open; open channels (``RabbitBus``)."""
        raise NotImplementedError

    # ================================================================ topology
    @contextlib.contextmanager
    def _blocking(self) -> Iterator[Any]:
        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        conn = pika.BlockingConnection(params)
        try:
            yield conn.channel()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _all_queues(self) -> list[QueueDef]:
        qs = dict(QUEUES)
        qs.update(self._extra_queues)
        for s in self._subs:
            qs[s.queue.name] = s.queue
        return list(qs.values())

    def _declare_topology(self, queues: list[QueueDef] | None = None) -> None:
        queues = self._all_queues() if queues is None else queues
        with self._blocking() as ch:
            for ex in EXCHANGES:
                ch.exchange_declare(ex.name, ex.type, durable=ex.durable)
            for q in queues:
                try:
                    ch.queue_declare(q.name, durable=True, arguments=q.arguments())
                    ch.queue_declare(q.dlq, durable=True, arguments={"x-queue-type": "quorum"})
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code == 406:
                        raise TopologyError(
                            f"queue {q.name!r} exists on the broker with other arguments than topology.py "
                            f"defines ({exc.reply_text}); delete it or regenerate the definitions"
                        ) from exc
                    raise
                for key in q.bindings:
                    ch.queue_bind(q.name, q.exchange, routing_key=key)
                ch.queue_bind(q.dlq, DEAD_LETTER_EXCHANGE, routing_key=q.name)

    def declare(self, qdef: QueueDef) -> None:
        self._extra_queues[qdef.name] = qdef
        self._declare_topology([qdef])

    # ================================================================ admin
    def queue_depth(self, queue: str) -> int:
        with self._blocking() as ch:
            return ch.queue_declare(queue, passive=True).method.message_count

    def get_dead_letters(self, queue: str, max_count: int = 100) -> list[tuple[bytes, dict[str, Any]]]:
        out: list[tuple[bytes, dict[str, Any]]] = []
        with self._blocking() as ch:
            while len(out) < max_count:
                method, props, body = ch.basic_get(f"{queue}.dlq", auto_ack=True)
                if method is None:
                    break
                out.append((body, dict(props.headers or {})))
        return out

    def purge(self, queue: QueueDef | str) -> None:
        from depthpilot.bus.base import resolve_queue

        if isinstance(queue, QueueDef) or queue in QUEUES:
            qdef = resolve_queue(queue)
            self._declare_topology([qdef])
            queue = qdef.name
        with self._blocking() as ch:
            ch.queue_purge(queue)

    def delete_queue(self, queue: QueueDef | str) -> None:
        name = queue.name if isinstance(queue, QueueDef) else queue
        with self._blocking() as ch:
            ch.queue_delete(name)
            ch.queue_delete(f"{name}.dlq")
