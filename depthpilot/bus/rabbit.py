"""RabbitMQ bus on pika: :class:`RabbitBus` = connection (``connection.py``) + publishing
(``publisher.py``) + consuming and rpc (``consumer.py``). See ``base.py`` for the semantics
shared with the in-memory bus and each module's docstring for its design."""

from __future__ import annotations

import time

import pika

from depthpilot.bus.connection import TopologyError, log
from depthpilot.bus.consumer import RabbitConsumer, is_stalled
from depthpilot.bus.publisher import routing_key_for
from depthpilot.settings import redact_url

__all__ = ["RabbitBus", "TopologyError", "is_stalled", "routing_key_for"]


class RabbitBus(RabbitConsumer):
    """``RabbitBus(url, service, heartbeat=, prefetch=200, max_pending=200_000,
    reconnect_max_delay=2.0, extra_queues=(), stall_after=30.0)``."""

    def _on_open(self, conn: pika.SelectConnection) -> None:
        self._open_publish_channels(conn)
        self._open_subscriptions(conn)
        self._rearm()
        self._watchdog(conn)

    def _watchdog(self, conn: pika.SelectConnection) -> None:
        """I/O thread, every second while this connection lives: stall detection."""
        if id(self._conn) != id(conn) or not conn.is_open:  # (id: keeps mypy from narrowing conn to Optional)
            return
        self.stalled_consumers()
        conn.ioloop.call_later(min(1.0, max(0.05, self.stall_after / 4)), lambda: self._watchdog(conn))

    def health_problems(self) -> list[str]:
        problems = [
            f"consumer on {q} stalled at its prefetch limit ({self.stall_after:g}s without an ack)"
            for q in self.stalled_consumers()
        ]
        if self._thread is not None and not self._closing:
            if self._fatal is not None:
                problems.append(f"bus stopped: {self._fatal}")
            elif not self._thread.is_alive():
                problems.append("AMQP I/O thread died")
            elif not self.connected:
                since = self.last_disconnected_at
                away = f" for {time.monotonic() - since:.0f}s" if since is not None else ""
                problems.append(f"not connected to RabbitMQ at {redact_url(self.url)}{away}")
        for s in list(self._subs):
            if not s._stop.is_set() and not s.thread.is_alive():
                problems.append(f"consumer thread for {s.queue.name} died")
        outstanding = self._outstanding()
        if outstanding >= self.max_pending // 2:
            problems.append(f"{outstanding} state messages await the broker (limit {self.max_pending})")
        return problems

    def close(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` s for outstanding confirms, disconnect, and return how many
        state messages the broker never confirmed (logged at ERROR; their futures fail
        with PublishTimeout). 0 means nothing was lost."""
        if self._thread is None:
            return 0
        self.flush(timeout)
        self._stop_io(timeout)
        left = self._abandon_unconfirmed()
        if left:
            self._count("unconfirmed_at_close", left)
            log.error(
                "closing the bus with %d state messages the broker at %s never confirmed: they may be lost",
                left,
                redact_url(self.url),
            )
        return left

    def __exit__(self, *exc: object) -> None:
        self.close()
