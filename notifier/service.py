"""The notifier service wiring: trading events from ``notifier.events`` -> formatted messages
(:mod:`notifier.format`) -> routed chats (:mod:`notifier.routing`) -> channels, delivered by
:class:`notifier.delivery.Deliverer`.

Nothing is lost: the handler returns (and the bus acks) only after every target accepted the
message; an outage blocks the consumer (so per-chat order holds) and a shutdown requeues the
message (``RetryableError``). Each event is formatted once (the outbox in the store keeps the
result, so a redelivered event does not move the trade tracker twice) and each (message,
target) pair is recorded when delivered, so a restart does not resend it.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import RetryableError
from depthpilot.service import Service
from notifier.delivery import Backoff, Channel, Deliverer, DeliveryInterrupted, PermanentDeliveryError, RateLimiter
from notifier.format import (
    OutMsg,
    RiskThrottle,
    TradeTracker,
    format_daily_summary,
    format_notification,
    format_risk,
    next_daily_run,
)
from notifier.routing import Routes, telegram_target
from notifier.watch import ServiceWatch, StatusAlert

if TYPE_CHECKING:
    from depthpilot.store import Store

log = logging.getLogger("notifier")

TRACKER_KEY = "notifier.tracker"
MUTED_KEY = "notifier.muted"
OUTBOX_TTL_S = 14 * 86400


def user_ids(spec: str) -> list[int]:
    return [int(x.split(":")[0]) for x in spec.split(",") if x.strip()]


class NotifierService(Service):
    name = "notifier"

    def setup(self) -> None:
        if self.store is None:
            raise RuntimeError("the notifier needs the store (delivered-message ids survive restarts there)")
        self.state_store: Store = self.store  # checked above: never None from here on
        s = self.settings
        self.routes = Routes.parse(s.notify_routes, user_ids(s.telegram_users))
        self.channels: dict[str, Channel] = {}
        if s.telegram_bot_token is not None and s.telegram_bot_token.get_secret_value():
            from notifier.channels import TelegramChannel

            self.channels["telegram"] = TelegramChannel(
                s.telegram_bot_token.get_secret_value(), s.telegram_api_base_url
            )
        if s.notify_webhook_url is not None and s.notify_webhook_url.get_secret_value():
            from notifier.channels import WebhookChannel

            self.channels["webhook"] = WebhookChannel(s.notify_webhook_url.get_secret_value())
        if not self.channels:
            log.warning(
                "no channel configured (TELEGRAM_BOT_TOKEN / NOTIFY_WEBHOOK_URL): events are consumed "
                "and recorded, nothing is sent"
            )
        self.deliverer = Deliverer(
            self.channels,
            RateLimiter(s.notify_per_chat_interval_s, s.notify_global_rate_per_s),
            Backoff(max_s=s.notify_retry_max_s),
            stopping=self.stopping,
        )
        db = self.state_store.db
        self.outbox, self.delivered = db.notifier_outbox, db.notifier_delivered
        for coll in (self.outbox, self.delivered):
            coll.create_index("created", expireAfterSeconds=OUTBOX_TTL_S)
        self.tracker = TradeTracker.from_dict(self.state_store.get_state(TRACKER_KEY))
        self.muted: set[str] = set((self.state_store.get_state(MUTED_KEY) or {}).get("targets", []))
        self.throttle = RiskThrottle()
        self.control = c.ControlServer()
        self.control.register(c.MuteNotifications, self._mute)
        self.skipped_unrouted = 0
        self.bus.subscribe("notifier.events", self.on_event)
        if s.notify_daily_summary_utc:
            self.spawn(self._summary_loop, "daily-summary")
        if s.notify_service_silent_s > 0:
            self.watch = ServiceWatch(s.notify_service_silent_s, ignore=(self.name,))
            self.bus.subscribe("notifier.heartbeats", self.on_heartbeat)
            self.spawn(self._watch_loop, "service-watch")

    def teardown(self) -> None:
        for ch in self.channels.values():
            close = getattr(ch, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - shutting down anyway
                    log.warning("closing a channel failed", exc_info=True)

    def stats(self) -> dict[str, float]:
        d = self.deliverer.stats if hasattr(self, "deliverer") else None
        if d is None:
            return {}
        return {
            "notify_sent": float(d.sent),
            "notify_retries": float(d.retries),
            "notify_rate_limited": float(d.rate_limited),
            "notify_failed": float(d.failed_permanently),
            "notify_muted_chats": float(len(self.muted)),
        }

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        return self.control.handle(cmd)

    # ------------------------------------------------------------------ events
    def compose(self, msg: m.Message) -> list[OutMsg]:
        if isinstance(msg, (m.OrderUpdate, m.Fill, m.PositionUpdate)):
            return self.tracker.on_event(msg)
        if isinstance(msg, m.RiskEvent):
            return [format_risk(msg)] if self.throttle.allow(msg) else []
        if isinstance(msg, m.Notification):
            if msg.level == "trade" and msg.source == "trader":
                return []  # closed trades are reported from the trader's events by the tracker
            return [format_notification(msg)]
        return []

    def _compose_once(self, msg: m.Message) -> list[OutMsg]:
        doc = self.outbox.find_one({"_id": msg.id})
        if doc is not None:
            return [OutMsg(**o) for o in doc["outs"]]
        outs = self.compose(msg)
        self.outbox.insert_one(
            {"_id": msg.id, "outs": [o.__dict__ for o in outs], "created": datetime.now(timezone.utc)}
        )
        if isinstance(msg, (m.OrderUpdate, m.Fill, m.PositionUpdate)):
            self.state_store.set_state(TRACKER_KEY, self.tracker.to_dict())
        return outs

    def on_event(self, msg: m.Message, delivery: Any) -> None:
        outs = self._compose_once(msg)
        failures: list[str] = []
        for out in outs:
            targets = self.routes.targets(out.symbol, out.level)
            if not targets:
                self.skipped_unrouted += 1
            for target in targets:
                if target in self.muted and out.level != "critical":
                    continue
                key = f"{out.key}|{target}"
                if self.delivered.find_one({"_id": key}) is not None:
                    continue  # sent before a restart / redelivery
                try:
                    self.deliverer.deliver(target, out.text)
                except DeliveryInterrupted:
                    self._hold_until_disconnected()
                    raise RetryableError("notifier stopping: the message is requeued") from None
                except PermanentDeliveryError as exc:
                    log.error("cannot deliver to %s: %s", target, exc)
                    failures.append(str(exc))
                    continue
                self.delivered.insert_one({"_id": key, "created": datetime.now(timezone.utc)})
        if failures:
            raise PermanentDeliveryError("; ".join(failures))  # -> notifier.events.dlq with the reason

    def _hold_until_disconnected(self, max_s: float = 10.0) -> None:
        """Stopping mid-delivery: keep the message unacked until the connection closes, so the
        broker returns it together with the later prefetched ones, in their original order (a
        nack would requeue it behind them and break per-chat order)."""
        deadline = time.monotonic() + max_s
        while self.bus.connected and time.monotonic() < deadline:
            time.sleep(0.05)

    # ------------------------------------------------------------------ service status
    def _publish_alerts(self, alerts: list[StatusAlert]) -> None:
        """As Notifications (stable ids): delivered through notifier.events like everything else."""
        for a in alerts:
            self.bus.publish(
                m.Notification(
                    id=a.key,
                    level=a.level,
                    text=a.text,
                    source="notifier",
                    data={"kind": "service_status"},
                )
            )

    def on_heartbeat(self, hb: m.Message, delivery: Any) -> None:
        if isinstance(hb, m.ServiceHeartbeat):
            self._publish_alerts(self.watch.on_heartbeat(hb))

    def _watch_loop(self) -> None:
        while not self.stopping.wait(min(5.0, self.settings.notify_service_silent_s / 3)):
            try:
                self._publish_alerts(self.watch.check(time.time_ns()))
            except Exception:  # noqa: BLE001 - reported; the watch keeps running
                log.exception("service watch failed")

    # ------------------------------------------------------------------ control
    def _mute(self, r: c.MuteNotifications) -> c.Ack:
        target = telegram_target(r.chat_id)
        (self.muted.add if r.muted else self.muted.discard)(target)
        self.state_store.set_state(MUTED_KEY, {"targets": sorted(self.muted)})
        return c.Ack(
            message=(
                f"notifications muted in chat {r.chat_id} (critical alerts still come)"
                if r.muted
                else f"notifications unmuted in chat {r.chat_id}"
            )
        )

    # ------------------------------------------------------------------ daily summary
    def _summary_loop(self) -> None:
        hhmm = self.settings.notify_daily_summary_utc
        while True:
            now = datetime.now(timezone.utc)
            run = next_daily_run(now, hhmm)
            if self.stopping.wait((run - now).total_seconds()):
                return
            try:
                self.send_daily_summary(run.date())
            except Exception:  # noqa: BLE001 - tomorrow's summary must still come
                log.exception("daily summary failed")

    def send_daily_summary(self, day: date, timeout_s: float = 10.0) -> None:
        """Ask the trader for today's PnL and publish the summary as a Notification with a
        per-day id (so it is delivered once, whatever restarts)."""
        try:
            reply = c.ControlClient(self.bus, requested_by="notifier", timeout_s=timeout_s).call(c.Pnl(period="today"))
            text = format_daily_summary(day, reply)
        except c.ControlError as exc:
            text = format_daily_summary(day, None, str(exc))
        self.bus.publish(
            m.Notification(
                id=f"daily-summary-{day.isoformat()}",
                level="info",
                text=text,
                source="notifier",
                data={"kind": "daily_summary"},
            )
        )


SERVICE = NotifierService
