"""RabbitMQ bus, part 3 of 3: consuming and rpc.

* Handlers run on one worker thread per subscription, so a slow handler never stalls
  heartbeats (the failure of pika #1104/#418 where a long callback inside a
  BlockingConnection loses the broker). Acks travel back to the I/O thread in batches
  (``_do_settle``), queued with ``_schedule_once`` so a settle queued on a connection that
  closed before running it cannot block the settles of the next connection; when a
  connection opens, every subscription's pending settle runs (``_rearm``).
* Stall detection: a consumer whose unacked count sits at its prefetch limit without an
  ack going out for ``stall_after`` seconds is *stalled*: a WARNING, ``stats.consumer_stalls``
  (+1 per episode), ``stats.consumers_stalled`` (gauge), and a line in
  ``health_problems()``. Checked every second on the I/O thread and on every
  ``health_problems()`` call.
"""

from __future__ import annotations

import contextlib
import queue as queue_mod
import threading
import time
from concurrent.futures import Future
from typing import Any

import pika
import pika.spec

from depthpilot import messages as m
from depthpilot.bus.base import Delivery, Handler, RpcTimeout, SeenIds, Subscription, expire_by, resolve_queue
from depthpilot.bus.connection import TopologyError, log
from depthpilot.bus.dispatch import process_delivery
from depthpilot.bus.publisher import RabbitPublisher
from depthpilot.topology import QueueDef


def is_stalled(unacked: int, prefetch: int, idle_s: float, after_s: float) -> bool:
    """A consumer is stalled when its unacked count sits at the prefetch limit and nothing
    was acked for ``after_s`` seconds (``idle_s`` = time since it reached the limit or
    last acked, whichever is later)."""
    return prefetch > 0 and unacked >= prefetch and idle_s >= after_s


class _RabbitSubscription(Subscription):
    def __init__(self, bus: "RabbitConsumer", qdef: QueueDef, handler: Handler, prefetch: int, dedup: bool) -> None:
        self.bus = bus
        self.queue = qdef
        self.handler = handler
        self.prefetch = prefetch
        self.seen = SeenIds() if dedup else None
        self.channel: Any = None  # owned by the I/O thread
        self.consumer_tag: str | None = None
        self._opened_gen = -1
        self._work: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._settle: list[tuple[Any, int, str]] = []
        self._settle_lock = threading.Lock()
        self._unacked = 0  # delivered on the current channel and not yet acked (I/O thread)
        self._last_progress = time.monotonic()
        self._stall_lock = threading.Lock()
        self.stalled = False
        self._stop = threading.Event()
        self.consuming = threading.Event()
        self.thread = threading.Thread(target=self._worker, name=f"consumer-{qdef.name}", daemon=True)
        self.thread.start()

    # --------------------------------------------------------------- I/O thread side
    def open(self, conn: pika.SelectConnection) -> None:
        if self._stop.is_set() or self._opened_gen == self.bus._gen:
            return  # already opening on this connection
        self._opened_gen = self.bus._gen
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, ch: Any) -> None:
        if self._stop.is_set():
            ch.close()
            return
        self.channel = ch
        self._unacked = 0
        self._last_progress = time.monotonic()
        ch.add_on_close_callback(self._on_channel_closed)
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._start_consuming(ch))

    def _start_consuming(self, ch: Any) -> None:
        if self._stop.is_set():
            ch.close()
            return
        self.consumer_tag = ch.basic_consume(self.queue.name, self._on_message, auto_ack=False)
        self.consuming.set()
        log.debug("consuming %s", self.queue.name)

    def _on_channel_closed(self, ch: Any, reason: Exception) -> None:
        self.consuming.clear()
        if self.channel is ch:
            self.channel = None
            self._unacked = 0
        conn = ch.connection
        if self._stop.is_set() or self.bus._closing or conn.is_closing or conn.is_closed:
            return  # the whole connection is going: the reconnect loop reports it once
        log.warning("consumer channel for %s closed by the broker (%s); reconnecting", self.queue.name, reason)
        self.bus._restart_connection()

    def _on_message(self, ch: Any, method: pika.spec.Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
        if ch is self.channel:
            self._unacked += 1
            if self._unacked == self.prefetch:
                self._last_progress = time.monotonic()  # reached the limit: the stall clock starts
        self._work.put((ch, method, props, body))

    def _do_settle(self) -> None:
        self.bus._ran(self)
        with self._settle_lock:
            items, self._settle = self._settle, []
        acked = 0
        for ch, tag, outcome in items:
            if not ch.is_open:
                continue  # channel gone: the broker redelivers; dedup makes it harmless
            if outcome == "retry":
                ch.basic_nack(tag, requeue=True)
            else:
                ch.basic_ack(tag)
            if ch is self.channel:
                acked += 1
        if acked:
            self._unacked = max(0, self._unacked - acked)
            self._last_progress = time.monotonic()

    def check_stall(self, now: float | None = None) -> bool:
        """Update and return the stalled flag (any thread)."""
        now = time.monotonic() if now is None else now
        idle = now - self._last_progress
        stalled = self.consuming.is_set() and is_stalled(self._unacked, self.prefetch, idle, self.bus.stall_after)
        with self._stall_lock:
            if stalled == self.stalled:
                return stalled
            self.stalled = stalled
        if stalled:
            self.bus._count("consumer_stalls")
            self.bus._count("consumers_stalled")
            log.warning(
                "consumer on %s stalled: %d unacked (prefetch limit %d), nothing acked for %.0fs",
                self.queue.name,
                self._unacked,
                self.prefetch,
                idle,
            )
        else:
            self.bus._count("consumers_stalled", -1)
            log.info("consumer on %s progressing again", self.queue.name)
        return stalled

    # --------------------------------------------------------------- worker side
    def _worker(self) -> None:
        while not self._stop.is_set():
            try:
                ch, method, props, body = self._work.get(timeout=0.2)
            except queue_mod.Empty:
                continue
            try:
                self._handle(ch, method, props, body)
            except Exception:  # noqa: BLE001 - the worker must outlive any bug; the message is redelivered
                log.exception("consumer worker on %s failed on a delivery", self.queue.name)

    def _handle(self, ch: Any, method: pika.spec.Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
        if not ch.is_open:
            return  # delivered on a dead channel: it will come again
        delivery = Delivery(
            queue=self.queue.name,
            routing_key=method.routing_key,
            exchange=method.exchange,
            redelivered=bool(method.redelivered),
            headers=dict(props.headers or {}),
            reply_to=props.reply_to,
            correlation_id=props.correlation_id,
            message_id=props.message_id,
        )
        outcome = process_delivery(self.bus, body, delivery, self.handler, self.seen)
        if outcome == "retry":
            time.sleep(0.2)  # back off before the broker hands it out again
        with self._settle_lock:
            self._settle.append((ch, method.delivery_tag, outcome))
        self.bus._schedule_once(self, self._do_settle)

    def cancel(self) -> None:
        self._stop.set()

        def _close() -> None:  # reads the channel on the I/O thread: a reconnect may have replaced it
            ch = self.channel
            if ch is not None and ch.is_open:
                ch.close()

        self.bus._call_soon(_close)
        self.thread.join(timeout=5)
        with contextlib.suppress(ValueError):
            self.bus._subs.remove(self)
        if self.stalled:
            self.stalled = False
            self.bus._count("consumers_stalled", -1)


class RabbitConsumer(RabbitPublisher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rpc_pending: dict[str, Future] = {}
        self._reply_queue: str | None = None
        self._reply_ready = threading.Event()

    # ================================================================ connection events (I/O thread)
    def _open_subscriptions(self, conn: pika.SelectConnection) -> None:
        for s in list(self._subs):
            s.open(conn)

    def _rearm(self) -> None:
        super()._rearm()
        for s in list(self._subs):
            s._do_settle()  # settles left from the old connection: dropped (their channel is gone)

    def _on_disconnected(self, conn: Any) -> None:
        super()._on_disconnected(conn)
        self._reply_ready.clear()
        for s in self._subs:
            s.channel = None
            s.consuming.clear()
            s._unacked = 0
        for fut in list(self._rpc_pending.values()):
            if not fut.done():
                fut.set_exception(RpcTimeout("connection lost while waiting for a reply"))

    def _on_market_channel(self, ch: Any) -> None:
        super()._on_market_channel(ch)
        ch.queue_declare("", exclusive=True, auto_delete=True, callback=self._on_reply_queue)

    def _on_reply_queue(self, frame: Any) -> None:
        self._reply_queue = frame.method.queue
        self._market_ch.basic_consume(self._reply_queue, self._on_reply, auto_ack=True)
        self._reply_ready.set()

    # ================================================================ consuming
    def subscribe(
        self, queue: QueueDef | str, handler: Handler, *, prefetch: int | None = None, dedup: bool = True
    ) -> Subscription:
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

        def _open() -> None:
            conn = self._conn
            if conn is not None and conn.is_open:
                sub.open(conn)  # no-op when _on_open already opened it on this connection

        self._call_soon(_open)
        return sub

    def stalled_consumers(self) -> list[str]:
        now = time.monotonic()
        return [s.queue.name for s in list(self._subs) if s.check_stall(now)]

    # ================================================================ rpc
    def rpc(self, cmd: m.ControlCommand, timeout: float = 5.0) -> m.ControlReply:
        """Send ``cmd`` and wait for its reply. ``cmd.expires_at`` is set (or clamped) to
        now + ``timeout``, so the target never runs a command after we gave up."""
        deadline = time.monotonic() + timeout
        expire_by(cmd, timeout)
        if not self._reply_ready.wait(timeout):
            raise RpcTimeout(f"not connected to the broker; {cmd.command!r} not sent")
        fut: Future = Future()
        self._rpc_pending[cmd.correlation_id] = fut
        try:
            sent = self.publish(cmd, reply_to=self._reply_queue, correlation_id=cmd.correlation_id)

            def _undelivered(f: Future) -> None:  # e.g. Unroutable: nobody serves that target
                exc = f.exception()
                if exc is not None and not fut.done():
                    fut.set_exception(RpcTimeout(f"{cmd.command!r} to {cmd.target!r} was not delivered: {exc}"))

            if sent is not None:
                sent.add_done_callback(_undelivered)
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
