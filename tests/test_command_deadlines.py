"""Every control command carries a deadline: a command that reaches a service after its sender
gave up is dropped (logged, counted, answered "expired"), never executed later. Shown over the
in-memory bus and the real broker, through the real ``depthpilot control`` CLI."""

from __future__ import annotations

import time
from typing import Any

import pytest
from typer.testing import CliRunner

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.service import Service
from depthpilot.settings import load_settings
from depthpilot.topology import CONTROL_TTL_MS, control_queue


class _Recorder(Service):
    """A service whose one command records that it ran."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed: list[str] = []

    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command == "open_positions":
            self.executed.append(cmd.correlation_id)
            return {"done": True}
        return None


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_command_to_a_stopped_service_is_not_executed_when_it_starts(
    bus_url: str, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from depthpilot_cli.main import app

    name = f"deadline{uid}"
    qdef = control_queue(name)
    admin = connect_bus(bus_url, "test-admin").start()
    admin.declare(qdef)  # the service is stopped, but its queue exists (as after any earlier run)
    admin.purge(qdef)
    monkeypatch.setenv("AMQP_URL", bus_url)
    svc = None
    try:
        t0 = time.monotonic()
        res = CliRunner().invoke(app, ["control", name, "open_positions", "--timeout", "1"])
        assert res.exit_code == 1, res.output
        assert "no reply" in res.output
        assert time.monotonic() - t0 < 15
        assert admin.queue_depth(qdef.name) == 1  # the command waits in the queue...
        time.sleep(0.3)  # ...past its deadline

        svc_bus = connect_bus(bus_url, name).start()
        svc = _Recorder(load_settings(AMQP_URL=bus_url), svc_bus, None)
        svc.name = name
        svc.start()
        assert _wait(lambda: svc.expired_commands == 1, 10), "the stale command was not seen and dropped"
        time.sleep(0.3)
        assert svc.executed == [], "a command whose sender had given up was executed"
        assert svc.heartbeat().stats["expired_commands"] == 1.0

        # the same command within its deadline does run: the test above can fail
        fresh = admin.rpc(
            m.ControlCommand(target=name, command="open_positions", expires_at=time.time_ns() + 5_000_000_000),
            timeout=5,
        )
        assert fresh.ok and len(svc.executed) == 1
    finally:
        if svc is not None:
            svc.stop()
            svc.bus.close()
        if hasattr(admin, "delete_queue"):
            admin.delete_queue(qdef)
        admin.close()


def test_expired_command_is_answered_expired_not_executed(uid: str) -> None:
    bus = connect_bus(f"memory://{uid}", "x").start()
    svc = _Recorder(load_settings(), bus, None)
    try:
        late = m.ControlCommand(target=svc.name, command="open_positions", expires_at=time.time_ns() - 1)
        reply = svc._on_control(late, None)
        assert reply is not None and not reply.ok and reply.error == "expired"
        assert svc.executed == [] and svc.expired_commands == 1
        ok = svc._on_control(m.ControlCommand(target=svc.name, command="open_positions"), None)
        assert ok is not None and ok.ok and len(svc.executed) == 1
    finally:
        bus.close()


def test_control_queues_have_a_broker_ttl() -> None:
    args = control_queue("trader").arguments()
    assert args["x-message-ttl"] == CONTROL_TTL_MS
    assert m.ControlCommand(target="x", command="y").expires_at > time.time_ns()


def test_healthcheck_sets_the_deadline_from_its_timeout(uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from depthpilot.bus.memory import MemoryBus
    from depthpilot.service import healthcheck_main

    seen: list[m.ControlCommand] = []

    def fake_rpc(self: MemoryBus, cmd: m.ControlCommand, timeout: float = 5.0) -> m.ControlReply:
        seen.append(cmd)
        return m.ControlReply(correlation_id=cmd.correlation_id, source="x", ok=True)

    monkeypatch.setattr(MemoryBus, "rpc", fake_rpc)
    monkeypatch.setenv("AMQP_URL", f"memory://{uid}")
    before = time.time_ns()
    assert healthcheck_main("trader", timeout_s=2.0) == 0
    assert before + 1_900_000_000 <= seen[0].expires_at <= time.time_ns() + 2_000_000_000
