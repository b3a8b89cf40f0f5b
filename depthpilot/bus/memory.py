"""In-process bus with the RabbitMQ bus's semantics (routing, acks, redelivery, bounded
market queues with drop-head, delivery limit, DLQ with reasons, rpc), so the whole pipeline
runs in one process (``make run``) and unit tests stay fast.

Messages travel as encoded bytes, exactly as over the broker, so the decode/DLQ path is the
same code.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from depthpilot import messages as m
from depthpilot.bus.base import (
    Bus,
    Delivery,
    Handler,
    RpcTimeout,
    SeenIds,
    Subscription,
    Unroutable,
    dlq_headers,
    expire_by,
    log,
    resolve_queue,
)
from depthpilot.bus.dispatch import process_delivery
from depthpilot.topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGES,
    QUEUES,
    DeliveryClass,
    QueueDef,
    route_for,
    routing_key,
    topic_matches,
)


@dataclass
class _Envelope:
    body: bytes
    exchange: str
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    redelivered: bool = False
    delivery_count: int = 0


class _MemQueue:
    def __init__(self, qdef: QueueDef | None, name: str) -> None:
        self.qdef = qdef
        self.name = name
        self.items: deque[_Envelope] = deque()
        self.cond = threading.Condition()
        self.dropped = 0

    def put(self, env: _Envelope, front: bool = False) -> int:
        """Enqueue; returns how many messages drop-head pushed out."""
        dropped = 0
        with self.cond:
            if front:
                self.items.appendleft(env)
            else:
                self.items.append(env)
                q = self.qdef
                if q is not None and q.delivery is DeliveryClass.MARKET and q.max_length is not None:
                    while len(self.items) > q.max_length:
                        self.items.popleft()  # drop-head
                        dropped += 1
                    self.dropped += dropped
            self.cond.notify()
        return dropped

    def get(self, timeout: float) -> _Envelope | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            return self.items.popleft() if self.items else None


class MemoryBroker:
    """Process-wide broker state shared by every MemoryBus on the same ``memory://`` URL."""

    _registry: dict[str, "MemoryBroker"] = {}
    _registry_lock = threading.Lock()

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.queues: dict[str, _MemQueue] = {}
        self.bindings: list[tuple[str, str, str]] = []  # (exchange, pattern, queue)
        self.exchanges = {e.name for e in EXCHANGES}

    @classmethod
    def get(cls, name: str = "default") -> "MemoryBroker":
        with cls._registry_lock:
            if name not in cls._registry:
                cls._registry[name] = MemoryBroker()
            return cls._registry[name]

    @classmethod
    def reset(cls, name: str = "default") -> None:
        with cls._registry_lock:
            cls._registry.pop(name, None)

    def declare(self, qdef: QueueDef) -> _MemQueue:
        with self.lock:
            q = self.queues.get(qdef.name)
            if q is None:
                q = self.queues[qdef.name] = _MemQueue(qdef, qdef.name)
                for key in qdef.bindings:
                    self.bindings.append((qdef.exchange, key, qdef.name))
            if qdef.dlq not in self.queues:
                self.queues[qdef.dlq] = _MemQueue(None, qdef.dlq)
                self.bindings.append((DEAD_LETTER_EXCHANGE, qdef.name, qdef.dlq))
            return q

    def declare_private(self, name: str) -> _MemQueue:
        with self.lock:
            return self.queues.setdefault(name, _MemQueue(None, name))

    def route(self, env: _Envelope) -> tuple[int, int]:
        """Deliver to every matching queue: (queues reached, messages dropped by drop-head)."""
        with self.lock:
            if env.exchange == "":
                targets = [env.routing_key] if env.routing_key in self.queues else []
            elif env.exchange == DEAD_LETTER_EXCHANGE:
                targets = [q for ex, key, q in self.bindings if ex == env.exchange and key == env.routing_key]
            else:
                targets = [
                    q for ex, key, q in self.bindings if ex == env.exchange and topic_matches(key, env.routing_key)
                ]
            queues = [self.queues[t] for t in dict.fromkeys(targets)]
        dropped = 0
        for i, q in enumerate(queues):
            dropped += q.put(env if i == 0 else _Envelope(**{**env.__dict__, "headers": dict(env.headers)}))
        return len(queues), dropped


class _MemSubscription(Subscription):
    def __init__(self, bus: "MemoryBus", queue: _MemQueue, qdef: QueueDef, handler: Handler, dedup: bool) -> None:
        self.bus = bus
        self.mq = queue
        self.queue = qdef
        self.handler = handler
        self.seen = SeenIds() if dedup else None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"mem-consumer-{qdef.name}", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            env = self.mq.get(timeout=0.1)
            if env is None:
                continue
            env.delivery_count += 1
            delivery = Delivery(
                queue=self.queue.name,
                routing_key=env.routing_key,
                exchange=env.exchange,
                redelivered=env.redelivered,
                headers=env.headers,
                reply_to=env.reply_to,
                correlation_id=env.correlation_id,
                message_id=env.message_id,
            )
            outcome = process_delivery(self.bus, env.body, delivery, self.handler, self.seen)
            if outcome == "retry":
                limit = self.queue.delivery_limit
                if limit is not None and env.delivery_count > limit:
                    self.bus._dead_letter(
                        env.body, dlq_headers("delivery_limit", "retried too often", delivery), self.queue.name
                    )
                    continue
                env.redelivered = True
                time.sleep(0.05)
                self.mq.put(env, front=True)


class MemoryBus(Bus):
    def __init__(self, url: str = "memory://", service: str = "depthpilot") -> None:
        super().__init__(service)
        name = url.split("://", 1)[1] or "default"
        self.broker = MemoryBroker.get(name)
        self._subs: list[_MemSubscription] = []
        self._reply_queue = f"rpc.reply.{service}.{m.new_id()[:8]}"
        self._pending_rpc: dict[str, Future] = {}
        self._rpc_lock = threading.Lock()
        self._reply_thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._started = False

    @property
    def connected(self) -> bool:
        return self._started and not self._closed.is_set()

    def start(self) -> "MemoryBus":
        if not self._started:
            self._started = True
            self.broker.declare_private(self._reply_queue)
            self._reply_thread = threading.Thread(target=self._reply_loop, name="mem-rpc-replies", daemon=True)
            self._reply_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> int:
        """Nothing is ever left unconfirmed in memory: returns 0."""
        self._closed.set()
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._reply_thread:
            self._reply_thread.join(timeout)
        return 0

    def declare(self, qdef: QueueDef) -> None:
        self.broker.declare(qdef)

    def declare_all(self) -> None:
        for q in QUEUES.values():
            self.broker.declare(q)

    # ------------------------------------------------------------------ publish
    def publish(
        self,
        msg: m.Message,
        routing_key: str | None = None,
        *,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> Future | None:
        route = route_for(type(msg))
        msg.stamp("published")
        env = _Envelope(
            m.encode(msg),
            route.exchange,
            routing_key or routing_key_for(msg),
            dict(headers or {}),
            reply_to,
            correlation_id,
            msg.id,
        )
        reached, dropped = self.broker.route(env)
        self._count("published")
        if route.delivery is DeliveryClass.STATE:
            fut: Future = Future()
            if reached:
                self._count("confirmed")
                fut.set_result(True)
            else:
                self._publish_failed(
                    fut,
                    Unroutable(
                        f"unroutable {msg.type_name} {msg.id}: no queue bound for {route.exchange}/{env.routing_key}",
                        exchange=route.exchange,
                        routing_key=env.routing_key,
                        message_id=msg.id,
                    ),
                )
            return fut
        if not reached:
            self._count("market_unroutable")
        if dropped:
            self._count("market_overflow", dropped)
        return None

    def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        persistent: bool = True,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> Future:
        reached, _dropped = self.broker.route(
            _Envelope(body, exchange, routing_key, dict(headers or {}), reply_to, correlation_id)
        )
        self._count("published")
        fut: Future = Future()
        if reached or exchange == "":  # like RabbitBus: the default exchange is not published mandatory
            self._count("confirmed")
            fut.set_result(True)
        else:
            self._publish_failed(
                fut,
                Unroutable(
                    f"unroutable raw message: no queue bound for {exchange}/{routing_key}",
                    exchange=exchange,
                    routing_key=routing_key,
                ),
            )
        return fut

    def _dead_letter(self, body: bytes, headers: dict[str, Any], queue: str) -> None:
        self.publish_raw(DEAD_LETTER_EXCHANGE, queue, body, headers=headers).result()
        self._count("dead_lettered")

    def _reply(self, reply: m.Message, delivery: Delivery) -> None:
        assert delivery.reply_to
        self.publish_raw("", delivery.reply_to, m.encode(reply), correlation_id=delivery.correlation_id)

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    # ------------------------------------------------------------------ consume
    def subscribe(
        self, queue: QueueDef | str, handler: Handler, *, prefetch: int | None = None, dedup: bool = True
    ) -> Subscription:
        if not self._started:
            self.start()
        qdef = resolve_queue(queue)
        mq = self.broker.declare(qdef)
        sub = _MemSubscription(self, mq, qdef, handler, dedup)
        self._subs.append(sub)
        return sub

    # ------------------------------------------------------------------ rpc
    def rpc(self, cmd: m.ControlCommand, timeout: float = 5.0) -> m.ControlReply:
        if not self._started:
            self.start()
        expire_by(cmd, timeout)
        fut: Future = Future()
        with self._rpc_lock:
            self._pending_rpc[cmd.correlation_id] = fut
        try:
            sent = self.publish(cmd, reply_to=self._reply_queue, correlation_id=cmd.correlation_id)
            if sent is not None and sent.exception() is not None:  # nobody serves that target
                raise RpcTimeout(f"{cmd.command!r} to {cmd.target!r} was not delivered: {sent.exception()}")
            try:
                return fut.result(timeout)
            except TimeoutError:
                raise RpcTimeout(f"no reply to {cmd.command!r} from {cmd.target!r} within {timeout}s") from None
        finally:
            with self._rpc_lock:
                self._pending_rpc.pop(cmd.correlation_id, None)

    def _reply_loop(self) -> None:
        q = self.broker.queues[self._reply_queue]
        while not self._closed.is_set():
            env = q.get(timeout=0.1)
            if env is None:
                continue
            try:
                reply = m.decode(env.body)
            except m.MessageDecodeError as exc:
                log.error("undecodable rpc reply dropped: %s", exc)
                continue
            with self._rpc_lock:
                fut = self._pending_rpc.get(env.correlation_id or "")
            if fut is not None and not fut.done():
                fut.set_result(reply)

    # ------------------------------------------------------------------ admin
    def queue_depth(self, queue: str) -> int:
        q = self.broker.queues.get(queue)
        return len(q.items) if q else 0

    def get_dead_letters(self, queue: str, max_count: int = 100) -> list[tuple[bytes, dict[str, Any]]]:
        q = self.broker.queues.get(f"{queue}.dlq")
        out: list[tuple[bytes, dict[str, Any]]] = []
        while q is not None and q.items and len(out) < max_count:
            env = q.items.popleft()
            out.append((env.body, env.headers))
        return out

    def purge(self, queue: QueueDef | str) -> None:
        if isinstance(queue, QueueDef) or queue in QUEUES:
            queue = self.broker.declare(resolve_queue(queue)).name
        q = self.broker.queues.get(queue)
        if q:
            with q.cond:
                q.items.clear()


def routing_key_for(msg: m.Message) -> str:
    return routing_key(msg)
