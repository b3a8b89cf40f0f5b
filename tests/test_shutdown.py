"""Shutdown order (stop consuming -> running handlers finish -> flush writers -> confirms ->
close) and degraded heartbeats."""

from __future__ import annotations

import threading
import time
from typing import Any

from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.service import Service, close_bus
from depthpilot.settings import load_settings
from depthpilot.topology import STATE_EXCHANGE, DeliveryClass, QueueDef


class _Writer:
    collection = "notes"

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.stored: list[str] = []

    def maybe_flush(self) -> None:
        pass  # only the final flush stores, so the test sees what stop() saved

    def flush(self) -> None:
        self.stored.extend(self.buffer)
        self.buffer.clear()


class _SlowConsumer(Service):
    name = "slowconsumer"

    def __init__(self, *args: Any, queue: QueueDef, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = queue
        self.writer = _Writer()
        self.in_handler = threading.Event()
        self.problem_list: list[str] = []

    def setup(self) -> None:
        self.flush_periodically(self.writer, every_s=0.05)
        self.bus.subscribe(self.queue, self._on_note)  # a direct bus.subscribe, as services do

    def _on_note(self, msg: m.Message, _d: Any) -> None:
        self.in_handler.set()
        time.sleep(0.5)
        self.writer.buffer.append(msg.id)

    def problems(self) -> list[str]:
        return list(self.problem_list)


def test_stop_lets_the_running_handler_finish_before_the_final_flush(uid: str) -> None:
    bus = connect_bus(f"memory://{uid}", "slow").start()
    q = QueueDef(f"t.slow.{uid}", STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE, delivery_limit=5)
    svc = _SlowConsumer(load_settings(), bus, None, queue=q)
    svc.start()
    try:
        msg = m.Notification(text="keep me")
        bus.publish(msg, routing_key=f"notify.{uid}")
        assert svc.in_handler.wait(5)
        svc.stop()  # called while the handler still works on the message
        assert svc.writer.stored == [msg.id], "the message handled during shutdown was not stored"
        # consuming stopped: a message published now stays in the queue for the next instance
        bus.publish(m.Notification(text="later"), routing_key=f"notify.{uid}")
        time.sleep(0.3)
        assert bus.queue_depth(q.name) == 1
    finally:
        svc.stop()
        bus.close()


def test_heartbeat_is_degraded_with_reasons(uid: str) -> None:
    bus = connect_bus(f"memory://{uid}", "hb").start()
    q = QueueDef(f"t.hb.{uid}", STATE_EXCHANGE, (f"notify.{uid}",), DeliveryClass.STATE)
    svc = _SlowConsumer(load_settings(), bus, None, queue=q)
    svc.start()
    try:
        assert svc.heartbeat().status == "ok" and svc.heartbeat().problems == []
        svc.problem_list.append("feed binance/BTCUSDT stale for 12 s")
        hb = svc.heartbeat()
        assert hb.status == "degraded" and hb.problems == ["feed binance/BTCUSDT stale for 12 s"]
        svc.problem_list.clear()
        bus.health_problems = lambda: ["3 state messages unconfirmed for 30 s"]  # type: ignore[attr-defined]
        hb = svc.heartbeat()
        assert hb.status == "degraded" and hb.problems == ["3 state messages unconfirmed for 30 s"]
        status = svc._on_control(m.ControlCommand(target=svc.name, command="status"), None)
        assert status is not None and status.result["status"] == "degraded"
        assert status.result["problems"] == ["3 state messages unconfirmed for 30 s"]
        decoded = m.decode(m.encode(hb))
        assert isinstance(decoded, m.ServiceHeartbeat) and decoded.problems == hb.problems
    finally:
        svc.stop()
        bus.close()


class _Closing:
    def __init__(self, left: int | None) -> None:
        self.left = left

    def close(self, timeout: float = 5.0) -> int | None:
        return self.left


def test_close_bus_reports_unconfirmed() -> None:
    assert close_bus(_Closing(None)) == 0  # type: ignore[arg-type]
    assert close_bus(_Closing(0)) == 0  # type: ignore[arg-type]
    assert close_bus(_Closing(7)) == 7  # type: ignore[arg-type]


def test_health_file_carries_status_and_reason(tmp_path) -> None:
    """The container healthcheck (``python -m depthpilot.service``) passes only on a fresh file
    that says ok; a degraded heartbeat fails it with the reason."""
    import os
    import subprocess
    import sys

    from depthpilot import messages as m
    from depthpilot.paths import REPO_ROOT
    from depthpilot.service import read_health_file, write_health_file

    path = str(tmp_path / "beat")
    assert read_health_file(path)[0] is False  # no file yet
    write_health_file(path, m.ServiceHeartbeat(service="collector", instance="x", status="ok"))
    assert read_health_file(path) == (True, "ok")
    env = {**os.environ, "DEPTHPILOT_HEARTBEAT_FILE": path, "PYTHONPATH": str(REPO_ROOT)}
    assert subprocess.run([sys.executable, "-m", "depthpilot.service"], env=env, capture_output=True).returncode == 0
    write_health_file(
        path,
        m.ServiceHeartbeat(
            service="collector", instance="x", status="degraded", problems=["binance BTCUSDT: feed down for 75 s"]
        ),
    )
    ok, why = read_health_file(path)
    assert not ok and "feed down for 75 s" in why
    proc = subprocess.run([sys.executable, "-m", "depthpilot.service"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "feed down" in proc.stdout
    os.utime(path, (0, 0))
    assert "old" in read_health_file(path)[1]
