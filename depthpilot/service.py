"""What every service shares: start-up (settings, logging, bus, store), heartbeats, the
control queue, graceful shutdown. A service subclasses :class:`Service`, wires its pure
logic to the bus in ``setup()`` and answers its own control commands in
``handle_command()``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from depthpilot import messages as m
from depthpilot.bus import Bus, connect_bus
from depthpilot.redact import mask_secrets, register_secrets
from depthpilot.settings import ConfigError, Settings, load_settings, redact_url
from depthpilot.topology import control_queue

log = logging.getLogger("depthpilot.service")


class SecretFilter(logging.Filter):
    """Masks known secret values in every log record (belt and braces: secrets are
    SecretStr and never formatted on purpose); the values are those registered with
    :func:`depthpilot.redact.register_secrets`, which chat replies are masked with too."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        register_secrets(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_secrets(msg)
        if masked != msg:
            record.msg, record.args = masked, ()
        return True


def setup_logging(settings: Settings) -> None:
    secrets = [
        v.get_secret_value()
        for v in (
            settings.telegram_bot_token,
            settings.bybit_api_key,
            settings.bybit_api_secret,
            settings.telegram_webhook_secret,
            settings.notify_webhook_url,
        )
        if v is not None
    ]
    for url in (settings.amqp_url, settings.mongo_url):
        red = redact_url(url)
        if red != url:
            secrets.append(url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[-1])
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for h in root.handlers:
        h.addFilter(SecretFilter(secrets))
    root.setLevel(settings.log_level)
    logging.getLogger("pika").setLevel(logging.WARNING)


class Service:
    name: str = "service"
    heartbeat_interval_s: float = 5.0

    def __init__(self, settings: Settings, bus: Bus, store: Any | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.instance = m.instance_name()
        self.started_at = time.monotonic()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscriptions: list[Any] = []
        self._writers: list[Any] = []
        self.expired_commands = 0
        self.status = "starting"

    # --------------------------------------------------------------- to override
    def setup(self) -> None:
        """Subscribe handlers, start sources. Called once the bus is up."""

    def teardown(self) -> None:
        """Stop sources and flush buffers."""

    def stats(self) -> dict[str, float]:
        return {}

    def problems(self) -> list[str]:
        """Reasons this service is degraded right now (a dead feed, a stale model...), one short
        line each; empty when healthy. Heartbeats and the status reply carry them."""
        return []

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        """Return a result dict for commands this service knows, None for unknown ones."""
        return None

    # --------------------------------------------------------------- machinery
    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"{self.name}-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def flush_periodically(self, *writers: Any, every_s: float = 0.25) -> None:
        """Flush store BatchWriters when due, off the consumer threads; a failed write stays
        buffered and is retried on the next tick; a final flush happens on stop()."""
        self._writers.extend(writers)

        def loop() -> None:
            while not self.stopping.wait(every_s):
                for w in writers:
                    try:
                        w.maybe_flush()
                    except Exception:  # noqa: BLE001 - kept in the buffer, retried next tick
                        log.exception("%s: storing %s failed; will retry", self.name, w.collection)

        self.spawn(loop, "store")

    def subscribe(self, queue: Any, handler: Any, **kwargs: Any) -> Any:
        """``bus.subscribe`` that the service remembers, so ``stop()`` stops consuming first."""
        sub = self.bus.subscribe(queue, handler, **kwargs)
        self._subscriptions.append(sub)
        return sub

    @contextmanager
    def _recording_subscriptions(self) -> Iterator[None]:
        """While ``setup()`` runs, direct ``self.bus.subscribe(...)`` calls are recorded too."""
        bus_subscribe = self.bus.subscribe

        def recording(queue: Any, handler: Any, **kwargs: Any) -> Any:
            sub = bus_subscribe(queue, handler, **kwargs)
            self._subscriptions.append(sub)
            return sub

        self.bus.subscribe = recording  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.bus.subscribe  # back to the class's method

    def start(self) -> "Service":
        self.subscribe(control_queue(self.name), self._on_control)
        with self._recording_subscriptions():
            self.setup()
        self.status = "ok"
        self.spawn(self._heartbeat_loop, "heartbeat")
        log.info("%s started (%s)", self.name, self.instance)
        return self

    def stop(self) -> None:
        """Shutdown in the order that loses nothing: stop consuming (each cancel waits for the
        handler that is running) -> stop sources (``teardown``) and the service's threads ->
        flush the store writers -> wait for publisher confirms. The caller closes the bus;
        ``bus.close()`` reports what stayed unconfirmed."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.status = "stopping"
        for sub in reversed(self._subscriptions):
            try:
                sub.cancel()
            except Exception:  # noqa: BLE001 - keep shutting down; unacked messages are redelivered
                log.exception(
                    "%s: cancelling the consumer of %s failed",
                    self.name,
                    getattr(getattr(sub, "queue", None), "name", "?"),
                )
        self._subscriptions.clear()
        try:
            self.teardown()
        finally:
            for t in self._threads:
                t.join(timeout=5)
            for w in self._writers:
                try:
                    w.flush()
                except Exception:  # noqa: BLE001 - reported; the data stays in the writer's buffer
                    log.exception("%s: final flush of %s failed", self.name, w.collection)
            try:
                if not self.bus.flush(5.0):
                    log.error("%s: some published state messages are not confirmed yet", self.name)
            except Exception:  # noqa: BLE001 - reported; bus.close() counts what is left
                log.exception("%s: waiting for publisher confirms failed", self.name)

    def all_problems(self) -> list[str]:
        """The service's own problems plus the bus's (``bus.health_problems()`` when it has it)."""
        found: list[str] = []
        bus_problems = getattr(self.bus, "health_problems", None)
        for source in (bus_problems, self.problems):
            if source is None:
                continue
            try:
                found.extend(str(p) for p in (source() or []))
            except Exception as exc:  # noqa: BLE001 - a failing health probe is itself a problem
                found.append(f"health check failed: {type(exc).__name__}: {exc}")
        return found

    def heartbeat(self) -> m.ServiceHeartbeat:
        stats = {k: float(v) for k, v in self.bus.stats.as_dict().items()}
        stats["expired_commands"] = float(self.expired_commands)
        stats.update(self.stats())
        problems = self.all_problems()
        status = "degraded" if problems and self.status == "ok" else self.status
        return m.ServiceHeartbeat(
            service=self.name,
            instance=self.instance,
            status=status,  # type: ignore[arg-type]
            uptime_s=time.monotonic() - self.started_at,
            stats=stats,
            problems=problems,
        )

    def _heartbeat_loop(self) -> None:
        beat_file = os.environ.get("DEPTHPILOT_HEARTBEAT_FILE")  # the container healthcheck reads it
        while not self.stopping.wait(self.heartbeat_interval_s):
            try:
                hb = self.heartbeat()
                self.bus.publish(hb)
                if beat_file and self.bus.connected:
                    write_health_file(beat_file, hb)
            except Exception:  # noqa: BLE001 - a missed heartbeat is reported by its absence
                log.exception("heartbeat publish failed")

    def _on_control(self, cmd: m.Message, delivery: Any) -> m.ControlReply | None:
        if not isinstance(cmd, m.ControlCommand):
            raise TypeError(f"control queue got {cmd.type_name}")
        late_s = (time.time_ns() - cmd.expires_at) / 1e9
        if late_s > 0:
            # the sender has given up (and told its user so): executing now would act on a
            # command the user was told failed
            self.expired_commands += 1
            log.warning(
                "%s: dropped expired command %r from %r (%.1f s past its deadline)",
                self.name,
                cmd.command,
                cmd.requested_by or "?",
                late_s,
            )
            return m.ControlReply(correlation_id=cmd.correlation_id, source=self.name, ok=False, error="expired")
        from depthpilot.control import command_deadline

        try:
            with command_deadline(cmd.expires_at):
                result = self._execute(cmd)
        except Exception as exc:  # noqa: BLE001 - the caller gets the error as a reply
            log.exception("command %s failed", cmd.command)
            return m.ControlReply(
                correlation_id=cmd.correlation_id, source=self.name, ok=False, error=f"{type(exc).__name__}: {exc}"
            )
        if result is None:
            if cmd.target == "all":
                return None  # not ours to answer
            return m.ControlReply(
                correlation_id=cmd.correlation_id, source=self.name, ok=False, error=f"unknown command {cmd.command!r}"
            )
        return m.ControlReply(correlation_id=cmd.correlation_id, source=self.name, ok=True, result=result)

    def _execute(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        """The result of a command still within its deadline (None: not a command of ours)."""
        if cmd.command == "ping":
            return {"pong": True}
        if cmd.command != "status":
            return self.handle_command(cmd)
        hb = self.heartbeat()
        result = {
            "service": self.name,
            "instance": self.instance,
            "status": hb.status,
            "uptime_s": round(hb.uptime_s, 1),
            "stats": hb.stats,
            "problems": hb.problems,
        }
        extra = self.handle_command(cmd)
        if extra:
            result.update(extra)
        return result


def write_health_file(path: str, hb: m.ServiceHeartbeat) -> None:
    """The heartbeat as one JSON line (status, problems, time), replaced atomically: the container
    healthcheck requires it fresh AND ``"status": "ok"``, so a degraded service (a dead feed, a
    stalled consumer...) turns its container unhealthy with the reason readable in the file."""
    import json

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"service": hb.service, "status": hb.status, "problems": hb.problems, "ts": hb.ts}, f)
        f.write("\n")
    os.replace(tmp, path)


def read_health_file(path: str, max_age_s: float = 60.0) -> tuple[bool, str]:
    """(healthy, one line why) for the container healthcheck (``python -m depthpilot.service``)."""
    import json

    try:
        age = time.time() - os.path.getmtime(path)
        with open(path) as f:
            body = json.load(f)
    except (OSError, ValueError) as exc:
        return False, f"no readable heartbeat file {path}: {exc}"
    if age > max_age_s:
        return False, f"heartbeat {age:.0f} s old (> {max_age_s:g} s)"
    if body.get("status") != "ok":
        return False, f"{body.get('service', '?')} {body.get('status')}: " + "; ".join(body.get("problems") or [])
    return True, "ok"


def open_store(settings: Settings) -> Any:
    from depthpilot.store import Store

    return Store.connect(settings.mongo_url, settings.mongo_db, snapshot_ttl_s=settings.snapshot_ttl_s)


def run_service(service_cls: type[Service], argv: list[str] | None = None) -> int:
    """Entry point used by each service's ``__main__``: exits 2 with one line on bad config."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{service_cls.name}: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    bus = (
        connect_bus(
            settings.amqp_url, service_cls.name, heartbeat=settings.amqp_heartbeat_s, prefetch=settings.amqp_prefetch
        )
        if not settings.memory_bus
        else connect_bus(settings.amqp_url, service_cls.name)
    )
    try:
        bus.start()
        store = open_store(settings)
    except Exception as exc:  # noqa: BLE001 - start-up failure: one clear line, non-zero exit
        print(f"{service_cls.name}: cannot start: {exc}", file=sys.stderr)
        return 1
    svc = service_cls(settings, bus, store)
    done = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: signal %d, shutting down", service_cls.name, signum)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        svc.start()
    except Exception as exc:  # noqa: BLE001 - bad service config (spec file, model...): one line, exit 2
        log.debug("start-up failed", exc_info=True)
        print(f"{service_cls.name}: cannot start: {exc}", file=sys.stderr)
        bus.close()
        return 2
    try:
        while not done.wait(1.0):
            pass
    finally:
        svc.stop()
        unconfirmed = close_bus(bus)
    if unconfirmed:
        log.error("%s: %d published state messages were never confirmed by the broker", service_cls.name, unconfirmed)
        return 3
    return 0


def close_bus(bus: Bus, timeout: float = 5.0) -> int:
    """Close ``bus`` and return how many published state messages stayed unconfirmed
    (``bus.close()`` returns that count; a bus that returns nothing counts as 0)."""
    left: Any = bus.close(timeout)
    return int(left or 0)


def healthcheck_main(service: str, timeout_s: float = 5.0) -> int:
    """Container healthcheck: the bus answers a ping from ``service`` within 5 s."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    bus = connect_bus(settings.amqp_url, f"healthcheck-{service}")
    try:
        bus.start()
        cmd = m.ControlCommand(
            target=service, command="ping", requested_by="healthcheck", expires_at=time.time_ns() + int(timeout_s * 1e9)
        )
        reply = bus.rpc(cmd, timeout=timeout_s)
        return 0 if reply.ok else 1
    except Exception as exc:  # noqa: BLE001
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()


if os.environ.get("DEPTHPILOT_DEBUG_SIGNALS"):
    import faulthandler

    faulthandler.register(signal.SIGUSR1)


if __name__ == "__main__":  # container healthcheck: python -m depthpilot.service
    _ok, _why = read_health_file(os.environ.get("DEPTHPILOT_HEARTBEAT_FILE", "/tmp/depthpilot.heartbeat"))
    print(_why)
    sys.exit(0 if _ok else 1)
