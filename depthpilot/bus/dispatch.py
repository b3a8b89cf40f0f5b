"""Handling of one delivery, shared by both bus implementations: decode, dedup, call the
handler, reply, dead-letter with a reason. Returns what to do with the delivery."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from depthpilot import messages as m
from depthpilot.bus.base import BusError, Delivery, Handler, RetryableError, SeenIds, dlq_headers, log

if TYPE_CHECKING:
    from depthpilot.bus.base import Bus

Outcome = Literal["ack", "retry", "dead", "dup"]


def process_delivery(bus: "Bus", body: bytes, delivery: Delivery, handler: Handler, seen: SeenIds | None) -> Outcome:
    """Process one delivery. "ack"/"dead"/"dup" mean the caller acks; "retry" means nack+requeue.

    A dead-letter publish that fails (broker gone) turns into "retry": the original stays
    unacked and is redelivered, so nothing is lost."""
    bus._count("consumed")
    if seen is not None and delivery.message_id and delivery.message_id in seen:
        bus._count("duplicates")
        return "dup"
    try:
        msg = m.decode(body)
    except m.MessageDecodeError as exc:
        return _dead(bus, body, "decode_error", str(exc), delivery)
    if seen is not None and msg.id in seen:
        bus._count("duplicates")
        return "dup"
    msg.stamp(f"recv.{delivery.queue}")
    try:
        reply = handler(msg, delivery)
    except RetryableError as exc:
        log.warning("handler on %s asked for retry of %s: %s", delivery.queue, msg.id, exc)
        bus._count("retried")
        return "retry"
    except Exception as exc:  # noqa: BLE001 - any handler failure is dead-lettered with its reason
        log.exception("handler on %s failed for %s %s", delivery.queue, msg.type_name, msg.id)
        return _dead(bus, body, "handler_error", f"{type(exc).__name__}: {exc}", delivery)
    if seen is not None:
        seen.add(msg.id)
    bus._count("handled")
    if reply is not None and delivery.reply_to:
        try:
            bus._reply(reply, delivery)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a lost reply must not kill the consumer; the caller times out
            log.exception("could not send reply on %s", delivery.queue)
    return "ack"


def _dead(bus: "Bus", body: bytes, reason: str, error: str, delivery: Delivery) -> Outcome:
    log.error("dead-lettering message from %s (%s): %s", delivery.queue, reason, error)
    try:
        bus._dead_letter(body, dlq_headers(reason, error, delivery), delivery.queue)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - keep the message: it will be redelivered and dead-lettered later
        # a bus error (broker away, DLQ missing) is expected here: one line; anything else gets its traceback
        log.error(
            "dead-letter publish failed (%s: %s); leaving message on %s for redelivery",
            type(exc).__name__,
            exc,
            delivery.queue,
            exc_info=None if isinstance(exc, BusError) else exc,
        )
        time.sleep(0.5)
        return "retry"
    return "dead"
