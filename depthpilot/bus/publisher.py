"""RabbitMQ bus, part 2 of 3: publishing.

* Two publish channels: MARKET messages go out on a plain channel (transient, no confirm
  wait); STATE messages on a confirm-mode channel with *asynchronous* confirms: every
  message is tracked by delivery tag until the broker acks it, so throughput is not bound
  by a round trip per message, yet nothing is forgotten. Unconfirmed messages are
  re-published after a reconnect (consumers dedupe by message id), and publishing while
  the broker is away buffers up to ``max_pending`` then raises BusBackpressure.
* State messages are published *mandatory*: a basic.return (no queue bound) arrives before
  the ack of the same message, so the ack resolves its future with :class:`Unroutable`;
  a nack resolves it with :class:`PublishNacked` (no blind re-publish: a full
  ``reject-publish`` queue would nack forever). The fast path pays one empty-dict check.
* Market messages are not mandatory: a return would ship every body back for a route
  nobody consumes; they are dropped and counted while the broker is away.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pika
import pika.spec

from depthpilot import messages as m
from depthpilot.bus.base import BusBackpressure, PublishNacked, PublishTimeout, Unroutable
from depthpilot.bus.connection import RabbitConnection, log
from depthpilot.settings import redact_url
from depthpilot.topology import DEAD_LETTER_EXCHANGE, DeliveryClass, route_for, routing_key


@dataclass
class _Pending:
    exchange: str
    routing_key: str
    body: bytes
    props: pika.BasicProperties
    future: Future
    mandatory: bool = True


class RabbitPublisher(RabbitConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._outbox: deque[_Pending] = deque()
        self._market_outbox: deque[tuple[str, str, bytes, pika.BasicProperties]] = deque(maxlen=100_000)
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._returned: dict[str, str] = {}  # message id -> reply text of a basic.return awaiting its ack
        self._next_tag = 0
        self._market_ch: Any = None
        self._state_ch: Any = None
        self._state_ready = False

    # ================================================================ connection events (I/O thread)
    def _on_disconnected(self, conn: Any) -> None:
        super()._on_disconnected(conn)
        self._state_ready = False
        self._market_ch = self._state_ch = None
        with self._lock:
            # unconfirmed state messages go back first, in their original order
            self._outbox.extendleft(reversed(list(self._unconfirmed.values())))
            self._unconfirmed.clear()
            self._returned.clear()
            dropped = len(self._market_outbox)
            self._market_outbox.clear()
        if dropped:
            self._count("market_dropped", dropped)

    def _open_publish_channels(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_market_channel)
        conn.channel(on_open_callback=self._on_state_channel)

    def _on_market_channel(self, ch: Any) -> None:
        self._market_ch = ch
        ch.add_on_close_callback(self._on_pub_channel_closed)

    def _on_state_channel(self, ch: Any) -> None:
        self._state_ch = ch
        ch.add_on_close_callback(self._on_pub_channel_closed)
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._next_tag = 0
        self._state_ready = True
        self._on_connected()
        self._flush()  # re-arms the flush: whatever was buffered meanwhile goes out now

    def _on_pub_channel_closed(self, ch: Any, reason: Exception) -> None:
        conn = ch.connection
        if self._closing or conn.is_closing or conn.is_closed:
            return  # the connection is going: reported once by the reconnect loop
        log.warning("publish channel closed by the broker (%s); reconnecting", reason)
        self._restart_connection()

    # ================================================================ publishing (any thread)
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
        body = m.encode(msg)
        rk = routing_key or routing_key_for(msg)
        if route.delivery is DeliveryClass.MARKET:
            props = pika.BasicProperties(
                content_type=m.CONTENT_TYPE, delivery_mode=1, message_id=msg.id, type=msg.type_name, headers=headers
            )
            self._publish_market(route.exchange, rk, body, props)
            return None
        props = pika.BasicProperties(
            content_type=m.CONTENT_TYPE,
            delivery_mode=2,
            message_id=msg.id,
            type=msg.type_name,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
        return self._publish_state(_Pending(route.exchange, rk, body, props, Future()))

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
        """Publish bytes with confirms. Mandatory unless on the default exchange (rpc
        replies: a caller that gave up has no queue any more, and that is fine)."""
        mandatory = exchange != ""
        props = pika.BasicProperties(
            delivery_mode=2 if persistent else 1,
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation_id,
            message_id=f"raw.{m.new_id()}" if mandatory else None,
        )
        return self._publish_state(_Pending(exchange, routing_key, body, props, Future(), mandatory=mandatory))

    def _publish_market(self, exchange: str, rk: str, body: bytes, props: pika.BasicProperties) -> None:
        if not self._ready.is_set():
            self._count("market_dropped")
            return
        with self._lock:
            evicted = len(self._market_outbox) == self._market_outbox.maxlen
            self._market_outbox.append((exchange, rk, body, props))  # a full outbox evicts its oldest
        if evicted:
            self._count("market_dropped")  # counted, so the eviction shows in the heartbeat
        self._count("published")
        self._schedule_once("flush", self._flush)

    def _publish_state(self, p: _Pending) -> Future:
        with self._lock:
            if len(self._outbox) + len(self._unconfirmed) >= self.max_pending:
                raise BusBackpressure(
                    f"{len(self._outbox) + len(self._unconfirmed)} state messages await the broker "
                    f"({redact_url(self.url)}); refusing more rather than dropping them"
                )
            self._outbox.append(p)
        self._count("published")
        self._schedule_once("flush", self._flush)
        return p.future

    # ================================================================ I/O thread
    def _flush(self) -> None:
        """I/O thread: write buffered messages to their channels."""
        self._ran("flush")
        with self._lock:
            market = list(self._market_outbox)
            self._market_outbox.clear()
            state = list(self._outbox) if self._state_ready else []
            if self._state_ready:
                self._outbox.clear()
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
        with self._lock:
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
            if self._returned:  # rare: a basic.return came before this ack
                ok: list[_Pending] = []
                for p in done:
                    reason = self._returned.pop(p.props.message_id, None) if p.props.message_id else None
                    if reason is None:
                        ok.append(p)
                    else:
                        self._publish_failed(
                            p.future,
                            Unroutable(
                                f"unroutable {p.props.type or 'message'} {p.props.message_id}: no queue bound for "
                                f"{p.exchange}/{p.routing_key} ({reason})",
                                exchange=p.exchange,
                                routing_key=p.routing_key,
                                message_id=p.props.message_id,
                            ),
                        )
                done = ok
            self._count("confirmed", len(done))
            for p in done:
                if not p.future.done():
                    p.future.set_result(True)
        else:
            for p in done:
                if p.props.message_id:
                    self._returned.pop(p.props.message_id, None)
                self._publish_failed(
                    p.future,
                    PublishNacked(
                        f"broker nacked {p.props.type or 'message'} {p.props.message_id} to {p.exchange}/{p.routing_key} "
                        f"(e.g. a full reject-publish queue)",
                        exchange=p.exchange,
                        routing_key=p.routing_key,
                        message_id=p.props.message_id,
                    ),
                )

    def _on_return(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        if props.message_id:
            self._returned[props.message_id] = f"{method.reply_code} {method.reply_text}"

    # ================================================================ waiting
    def _outstanding(self) -> int:
        with self._lock:
            return len(self._outbox) + len(self._unconfirmed)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._outbox and not self._unconfirmed and not self._market_outbox:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _abandon_unconfirmed(self) -> int:
        """At close: fail what the broker never confirmed; returns how many."""
        with self._lock:
            left = list(self._outbox) + list(self._unconfirmed.values())
            self._outbox.clear()
            self._unconfirmed.clear()
        for p in left:
            if not p.future.done():
                p.future.set_exception(
                    PublishTimeout(
                        f"bus closed before the broker confirmed {p.props.message_id} to {p.exchange}/{p.routing_key}"
                    )
                )
        return len(left)

    def _dead_letter(self, body: bytes, headers: dict[str, Any], queue: str) -> None:
        fut = self.publish_raw(DEAD_LETTER_EXCHANGE, queue, body, headers=headers)
        try:
            fut.result(timeout=30)
        except TimeoutError:
            raise PublishTimeout("dead-letter publish not confirmed") from None
        self._count("dead_lettered")

    def _reply(self, reply: m.Message, delivery: Any) -> None:
        assert delivery.reply_to
        self.publish_raw(
            "", delivery.reply_to, m.encode(reply), persistent=False, correlation_id=delivery.correlation_id
        )


def routing_key_for(msg: m.Message) -> str:
    return routing_key(msg)
