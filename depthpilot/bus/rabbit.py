"""RabbitMQ bus on pika.

Design (see ``base.py`` for the semantics):

* One I/O thread owns a ``pika.SelectConnection`` and nothing else touches it; other
  threads hand work over with ``ioloop.add_callback_threadsafe``. Handlers run on one
  worker thread per subscription, so a slow handler never stalls heartbeats (the failure
  of pika #1104/#418 where a long callback inside a BlockingConnection loses the
  broker). Acks travel back to the I/O thread in batches.
* Two publish channels: MARKET messages go out on a plain channel (transient, no confirm
  wait); STATE messages on a confirm-mode channel with *asynchronous* confirms: every
  message is tracked by delivery tag until the broker acks it, so throughput is not bound
  by a round trip per message, yet nothing is forgotten. Unconfirmed messages are
  re-published after a reconnect (consumers dedupe by message id), and publishing while
  the broker is away buffers up to ``max_pending`` then raises BusBackpressure.
* The connection is re-established with exponential back-off (capped at
  ``reconnect_max_delay``); topology is re-declared and every subscription resumes.
"""
from __future__ import annotations

import contextlib
import logging
import queue as queue_mod
import random
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Iterator

import pika
import pika.exceptions
import pika.spec

from depthpilot import messages as m
from depthpilot.bus.base import (
    Bus, BusBackpressure, BusError, Delivery, Handler, PublishTimeout, RpcTimeout, SeenIds, Subscription,
    resolve_queue,
)
from depthpilot.bus.dispatch import process_delivery
from depthpilot.settings import redact_url
from depthpilot.topology import (
    DEAD_LETTER_EXCHANGE, EXCHANGES, QUEUES, DeliveryClass, QueueDef, route_for, routing_key,
)

log = logging.getLogger("depthpilot.bus.rabbit")


@dataclass
class _Pending:
    exchange: str
    routing_key: str
    body: bytes
    props: pika.BasicProperties
    future: Future
    mandatory: bool = True


class TopologyError(BusError):
    """The broker holds a queue/exchange whose arguments differ from topology.py."""


class _RabbitSubscription(Subscription):
    def __init__(self, bus: "RabbitBus", qdef: QueueDef, handler: Handler, prefetch: int, dedup: bool) -> None:
        self.bus = bus
        self.queue = qdef
        self.handler = handler
        self.prefetch = prefetch
        self.seen = SeenIds() if dedup else None
        self.channel: Any = None  # owned by the I/O thread
        self.consumer_tag: str | None = None
        self._work: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._settle: deque = deque()
        self._settle_lock = threading.Lock()
        self._settle_scheduled = False
        self._stop = threading.Event()
        self.consuming = threading.Event()
        self.thread = threading.Thread(target=self._worker, name=f"consumer-{qdef.name}", daemon=True)
        self.thread.start()

    # --------------------------------------------------------------- I/O thread side
    def open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, ch: Any) -> None:
        if self._stop.is_set():
            ch.close()
            return
        self.channel = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._start_consuming(ch))

    def _start_consuming(self, ch: Any) -> None:
        self.consumer_tag = ch.basic_consume(self.queue.name, self._on_message, auto_ack=False)
        self.consuming.set()
        log.debug("consuming %s", self.queue.name)

    def _on_channel_closed(self, ch: Any, reason: Exception) -> None:
        self.consuming.clear()
        if self.channel is ch:
            self.channel = None
        if not self._stop.is_set() and not self.bus._closing:
            log.warning("consumer channel for %s closed: %s", self.queue.name, reason)
            self.bus._restart_connection()

    def _on_message(self, ch: Any, method: pika.spec.Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
        self._work.put((ch, method, props, body))

    def _do_settle(self) -> None:
        with self._settle_lock:
            items = list(self._settle)
            self._settle.clear()
            self._settle_scheduled = False
        for ch, tag, outcome in items:
            if not ch.is_open:
                continue  # channel gone: the broker redelivers; dedup makes it harmless
            if outcome == "retry":
                ch.basic_nack(tag, requeue=True)
            else:
                ch.basic_ack(tag)

    # --------------------------------------------------------------- worker side
    def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                ch, method, props, body = self._work.get(timeout=0.2)
            except queue_mod.Empty:
                continue
            if not ch.is_open:
                continue  # delivered on a dead channel: it will come again
            delivery = Delivery(
                queue=self.queue.name, routing_key=method.routing_key, exchange=method.exchange,
                redelivered=bool(method.redelivered), headers=dict(props.headers or {}), reply_to=props.reply_to,
                correlation_id=props.correlation_id, message_id=props.message_id,
            )
            outcome = process_delivery(self.bus, body, delivery, self.handler, self.seen)
            if outcome == "retry":
                time.sleep(0.2)  # back off before the broker hands it out again
            with self._settle_lock:
                self._settle.append((ch, method.delivery_tag, outcome))
                schedule = not self._settle_scheduled
                self._settle_scheduled = True
            if schedule and not self.bus._call_soon(self._do_settle):
                with self._settle_lock:
                    self._settle.clear()  # connection gone; unacked messages are redelivered
                    self._settle_scheduled = False

    def cancel(self) -> None:
        self._stop.set()
        ch = self.channel

        def _close() -> None:
            if ch is not None and ch.is_open:
                ch.close()

        self.bus._call_soon(_close)
        self.thread.join(timeout=5)
        with contextlib.suppress(ValueError):
            self.bus._subs.remove(self)


class RabbitBus(Bus):
    def __init__(self, url: str, service: str = "depthpilot", *, heartbeat: int | None = None,
                 prefetch: int = 200, max_pending: int = 200_000, reconnect_max_delay: float = 2.0,
                 extra_queues: tuple[QueueDef, ...] = ()) -> None:
        super().__init__(service)
        self.url = url
        self.params = pika.URLParameters(url)
        if heartbeat is not None:
            self.params.heartbeat = heartbeat
        self.params.blocked_connection_timeout = 60
        self.params.client_properties = {"connection_name": f"{service}@{m.instance_name()}"}
        self.prefetch = prefetch
        self.max_pending = max_pending
        self.reconnect_max_delay = reconnect_max_delay
        self._extra_queues: dict[str, QueueDef] = {q.name: q for q in extra_queues}

        self._lock = threading.Lock()
        self._outbox: deque[_Pending] = deque()
        self._market_outbox: deque[tuple[str, str, bytes, pika.BasicProperties]] = deque(maxlen=100_000)
        self._flush_scheduled = False
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._next_tag = 0
        self._subs: list[_RabbitSubscription] = []
        self._rpc_pending: dict[str, Future] = {}
        self._reply_queue: str | None = None
        self._reply_ready = threading.Event()

        self._conn: pika.SelectConnection | None = None
        self._market_ch: Any = None
        self._state_ch: Any = None
        self._state_ready = False
        self._ready = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None
        self.last_connected_at: float | None = None
        self.last_disconnected_at: float | None = None

    # ================================================================ lifecycle
    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def start(self, wait: float | None = 10.0) -> "RabbitBus":
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

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self.flush(timeout)
        self._closing = True
        for s in list(self._subs):
            s._stop.set()
        conn = self._conn

        def _close() -> None:
            if conn is not None and conn.is_open:
                conn.close()
            elif conn is not None:
                conn.ioloop.stop()

        if conn is None or not self._call_soon(_close):
            pass
        self._thread.join(timeout)
        for s in list(self._subs):
            s.thread.join(timeout=2)
        self._subs.clear()
        self._thread = None

    def _io_main(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                self._declare_topology()
                conn = pika.SelectConnection(self.params, on_open_callback=self._on_open,
                                             on_open_error_callback=self._on_open_error,
                                             on_close_callback=self._on_close)
            except TopologyError as exc:
                self._fatal = exc
                log.critical("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - broker unreachable: back off and retry
                self._sleep_backoff(attempt, exc)
                attempt += 1
                continue
            self._conn = conn
            try:
                conn.ioloop.start()
            except Exception:  # noqa: BLE001 - never let the I/O thread die
                log.exception("AMQP I/O loop crashed; reconnecting")
            was_ready = self._ready.is_set()
            self._on_disconnected()
            if self._closing:
                break
            if was_ready:
                attempt = 0
            self._count("reconnects")
            self._sleep_backoff(attempt, None)
            attempt += 1
        self._conn = None

    def _sleep_backoff(self, attempt: int, exc: BaseException | None) -> None:
        delay = min(self.reconnect_max_delay, 0.1 * (2 ** attempt)) * (0.5 + random.random() / 2)
        if exc is not None:
            log.warning("RabbitMQ at %s unreachable (%s: %s); retrying in %.2fs", redact_url(self.url),
                        type(exc).__name__, exc, delay)
        time.sleep(delay)

    def _on_open_error(self, conn: pika.SelectConnection, err: BaseException) -> None:
        log.warning("AMQP connection failed: %s", err)
        conn.ioloop.stop()

    def _on_close(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        if not self._closing:
            log.warning("AMQP connection closed: %s", reason)
        conn.ioloop.stop()

    def _restart_connection(self) -> None:
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.close()

    def _on_disconnected(self) -> None:
        self._ready.clear()
        self._reply_ready.clear()
        self.last_disconnected_at = time.monotonic()
        self._state_ready = False
        self._market_ch = self._state_ch = None
        with self._lock:
            # unconfirmed state messages go back first, in their original order
            self._outbox.extendleft(reversed(list(self._unconfirmed.values())))
            self._unconfirmed.clear()
            self._flush_scheduled = False
            dropped = len(self._market_outbox)
            self._market_outbox.clear()
        if dropped:
            self._count("market_dropped", dropped)
        for s in self._subs:
            s.channel = None
            s.consuming.clear()
        for fut in list(self._rpc_pending.values()):
            if not fut.done():
                fut.set_exception(RpcTimeout("connection lost while waiting for a reply"))

    def _on_open(self, conn: pika.SelectConnection) -> None:
        self.last_connected_at = time.monotonic()
        conn.channel(on_open_callback=self._on_market_channel)
        conn.channel(on_open_callback=self._on_state_channel)
        for s in self._subs:
            if not s._stop.is_set():
                s.open(conn)

    def _on_market_channel(self, ch: Any) -> None:
        self._market_ch = ch
        ch.add_on_close_callback(self._on_pub_channel_closed)
        ch.queue_declare("", exclusive=True, auto_delete=True, callback=self._on_reply_queue)

    def _on_reply_queue(self, frame: Any) -> None:
        self._reply_queue = frame.method.queue
        self._market_ch.basic_consume(self._reply_queue, self._on_reply, auto_ack=True)
        self._reply_ready.set()

    def _on_state_channel(self, ch: Any) -> None:
        self._state_ch = ch
        ch.add_on_close_callback(self._on_pub_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._next_tag = 0
        self._state_ready = True
        self._ready.set()
        self._flush()

    def _on_pub_channel_closed(self, ch: Any, reason: Exception) -> None:
        if not self._closing:
            log.error("publish channel closed: %s", reason)
            self._restart_connection()

    def _call_soon(self, fn: Any) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.ioloop.add_callback_threadsafe(fn)
            return True
        except Exception:  # noqa: BLE001 - loop already closed: caller keeps its data buffered
            return False

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

    # ================================================================ publishing
    def publish(self, msg: m.Message, routing_key: str | None = None, *,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None) -> Future | None:
        route = route_for(type(msg))
        msg.stamp("published")
        body = m.encode(msg)
        rk = routing_key or routing_key_for(msg)
        if route.delivery is DeliveryClass.MARKET:
            props = pika.BasicProperties(content_type=m.CONTENT_TYPE, delivery_mode=1, message_id=msg.id,
                                         type=msg.type_name, headers=headers)
            self._publish_market(route.exchange, rk, body, props)
            return None
        props = pika.BasicProperties(content_type=m.CONTENT_TYPE, delivery_mode=2, message_id=msg.id,
                                     type=msg.type_name, headers=headers, reply_to=reply_to,
                                     correlation_id=correlation_id)
        return self._publish_state(_Pending(route.exchange, rk, body, props, Future()))

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, *, persistent: bool = True,
                    headers: dict[str, Any] | None = None, reply_to: str | None = None,
                    correlation_id: str | None = None) -> Future:
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1, headers=headers, reply_to=reply_to,
                                     correlation_id=correlation_id)
        return self._publish_state(_Pending(exchange, routing_key, body, props, Future(), mandatory=exchange != ""))

    def _publish_market(self, exchange: str, rk: str, body: bytes, props: pika.BasicProperties) -> None:
        if not self._ready.is_set():
            self._count("market_dropped")
            return
        with self._lock:
            evicted = len(self._market_outbox) == self._market_outbox.maxlen
            self._market_outbox.append((exchange, rk, body, props))  # a full outbox evicts its oldest
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if evicted:
            self._count("market_dropped")  # counted, so the eviction shows in the heartbeat
        self._count("published")
        if schedule:
            self._call_soon(self._flush)

    def _publish_state(self, p: _Pending) -> Future:
        with self._lock:
            if len(self._outbox) + len(self._unconfirmed) >= self.max_pending:
                raise BusBackpressure(
                    f"{len(self._outbox) + len(self._unconfirmed)} state messages await the broker "
                    f"({redact_url(self.url)}); refusing more rather than dropping them"
                )
            self._outbox.append(p)
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        self._count("published")
        if schedule:
            self._call_soon(self._flush)
        return p.future

    def _flush(self) -> None:
        """I/O thread: write buffered messages to their channels."""
        with self._lock:
            market = list(self._market_outbox)
            self._market_outbox.clear()
            state = list(self._outbox) if self._state_ready else []
            if self._state_ready:
                self._outbox.clear()
            self._flush_scheduled = False
        mch = self._market_ch
        for exchange, rk, body, props in market:
            if mch is not None and mch.is_open:
                mch.basic_publish(exchange, rk, body, props)
            else:
                self._count("market_dropped")
        sch = self._state_ch
        for i, p in enumerate(state):
            if sch is None or not sch.is_open:
                with self._lock:
                    self._outbox.extendleft(reversed(state[i:]))
                return
            sch.basic_publish(p.exchange, p.routing_key, p.body, p.props, mandatory=p.mandatory)
            self._next_tag += 1
            self._unconfirmed[self._next_tag] = p

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        ack = isinstance(method, pika.spec.Basic.Ack)
        done: list[_Pending] = []
        if method.multiple:
            while self._unconfirmed:
                first = next(iter(self._unconfirmed))
                if first > tag:
                    break
                done.append(self._unconfirmed.pop(first))
        else:
            p = self._unconfirmed.pop(tag, None)
            if p is not None:
                done.append(p)
        if ack:
            self._count("confirmed", len(done))
            for p in done:
                if not p.future.done():
                    p.future.set_result(True)
        else:
            log.warning("broker nacked %d state messages; re-publishing", len(done))
            with self._lock:
                self._outbox.extendleft(reversed(done))
            self._flush()

    def _on_return(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        log.error("unroutable state message %s to %s/%s: %s (no queue bound; check topology.py)",
                  props.message_id, method.exchange, method.routing_key, method.reply_text)
        self._count("unroutable")

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._outbox and not self._unconfirmed and not self._market_outbox:
                    return True
            time.sleep(0.005)
        return False

    def publish_and_wait(self, msg: m.Message, timeout: float = 10.0) -> None:
        fut = self.publish(msg)
        if fut is None:
            return
        try:
            fut.result(timeout)
        except TimeoutError:
            raise PublishTimeout(f"{msg.type_name} {msg.id} not confirmed within {timeout}s") from None

    def _dead_letter(self, body: bytes, headers: dict[str, Any], queue: str) -> None:
        fut = self.publish_raw(DEAD_LETTER_EXCHANGE, queue, body, headers=headers)
        try:
            fut.result(timeout=30)
        except TimeoutError:
            raise PublishTimeout("dead-letter publish not confirmed") from None
        self._count("dead_lettered")

    def _reply(self, reply: m.Message, delivery: Delivery) -> None:
        assert delivery.reply_to
        self.publish_raw("", delivery.reply_to, m.encode(reply), persistent=False,
                         correlation_id=delivery.correlation_id)

    # ================================================================ consuming
    def subscribe(self, queue: QueueDef | str, handler: Handler, *, prefetch: int | None = None,
                  dedup: bool = True) -> Subscription:
        qdef = resolve_queue(queue)
        sub = _RabbitSubscription(self, qdef, handler, prefetch or self.prefetch, dedup)
        self._subs.append(sub)
        if self._thread is None:
            return sub  # opened when the connection comes up
        try:
            self._declare_topology([qdef])
        except TopologyError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker away: declared again on reconnect
            log.warning("could not declare %s now (%s); will on reconnect", qdef.name, exc)
        conn = self._conn
        if self._ready.is_set() and conn is not None:
            self._call_soon(lambda: sub.open(conn))
        return sub

    # ================================================================ rpc
    def rpc(self, cmd: m.ControlCommand, timeout: float = 5.0) -> m.ControlReply:
        deadline = time.monotonic() + timeout
        if not self._reply_ready.wait(timeout):
            raise RpcTimeout(f"not connected to the broker; {cmd.command!r} not sent")
        fut: Future = Future()
        self._rpc_pending[cmd.correlation_id] = fut
        try:
            self.publish(cmd, reply_to=self._reply_queue, correlation_id=cmd.correlation_id)
            try:
                return fut.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RpcTimeout(f"no reply to {cmd.command!r} from {cmd.target!r} within {timeout}s") from None
        finally:
            self._rpc_pending.pop(cmd.correlation_id, None)

    def _on_reply(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        fut = self._rpc_pending.get(props.correlation_id or "")
        if fut is None or fut.done():
            return
        try:
            fut.set_result(m.decode(body))
        except m.MessageDecodeError as exc:
            fut.set_exception(exc)

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


def routing_key_for(msg: m.Message) -> str:
    return routing_key(msg)
