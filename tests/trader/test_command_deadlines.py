"""Command deadlines on the trader's answering side: a command or query that waits for the engine
past its deadline is refused, never executed late (depthpilot.control_deadline)."""

from __future__ import annotations

import time

import pytest

from depthpilot import control as c
from depthpilot import messages as m


def _reply_while_engine_busy(svc, command: str, args: dict, deadline_s: float = 0.3):
    """The reply to ``command`` due in ``deadline_s`` while the engine lock is held elsewhere (as
    a slow store write would hold it); the lock is released only after the reply (or 5 s)."""
    import threading

    cmd = m.ControlCommand(
        target="trader", command=command, args=args, expires_at=time.time_ns() + int(deadline_s * 1e9)
    )
    replies: list = []
    lock = svc.runtime.lock
    lock.acquire()
    try:
        t = threading.Thread(target=lambda: replies.append(svc._on_control(cmd, None)))
        t.start()
        t.join(5)
        assert not t.is_alive(), f"{command} waited past its deadline"
    finally:
        lock.release()
    (reply,) = replies
    return reply


def test_command_waiting_for_a_busy_engine_past_its_deadline_is_refused_not_run_late(paper_trader):
    """The deadline is checked on arrival AND while the command waits for the engine lock (held
    here as a slow store write would hold it): past the deadline it is refused, and releasing the
    lock afterwards never runs it."""

    svc, _ = paper_trader
    rt = svc.runtime
    reply = _reply_while_engine_busy(svc, c.StartTrading.COMMAND, {"symbol": "BTCUSDT"})
    assert not reply.ok and "CommandExpired" in reply.error and "nothing was done" in reply.error
    time.sleep(0.2)
    assert not rt.engine.symbols["BTCUSDT"].trading  # never executed, not even after the lock came free
    # the same command in time is executed
    ok = svc._on_control(
        m.ControlCommand(target="trader", command=c.StartTrading.COMMAND, args={"symbol": "BTCUSDT"}), None
    )
    assert ok.ok and rt.engine.symbols["BTCUSDT"].trading


@pytest.mark.parametrize(
    "command, args",
    [
        (c.Status.COMMAND, {}),
        (c.Positions.COMMAND, {}),
        (c.Pnl.COMMAND, {"period": "today"}),
        (c.RiskLimits.COMMAND, {}),
    ],
)
def test_query_waiting_for_a_busy_engine_past_its_deadline_is_refused(paper_trader, command, args):
    """Queries read the engine under its lock too: past the deadline they are refused while
    waiting, not answered after the caller has given up."""
    svc, _ = paper_trader
    reply = _reply_while_engine_busy(svc, command, args)
    assert not reply.ok and "CommandExpired" in reply.error
    ok = svc._on_control(m.ControlCommand(target="trader", command=command, args=args), None)
    assert ok.ok, ok.error


def test_time_left_s_is_bounded_by_the_running_command():
    assert c.time_left_s(10.0) == 10.0  # no command running: the cap
    with c.command_deadline(time.time_ns() + 2 * 10**9):
        assert 1.0 < c.time_left_s(10.0) <= 2.0
        assert c.time_left_s(0.5) == 0.5
    with c.command_deadline(time.time_ns() - 1):
        assert c.time_left_s(10.0) == 0.0


def test_acquire_before_deadline_outside_and_inside_a_command():
    import threading

    lock = threading.Lock()
    c.acquire_before_deadline(lock)  # no command running: waits as `with lock` would
    assert lock.locked()
    with c.command_deadline(time.time_ns() + 100_000_000), pytest.raises(c.CommandExpired):
        c.acquire_before_deadline(lock)  # held elsewhere until after the deadline
    lock.release()
    with c.command_deadline(time.time_ns() - 1), pytest.raises(c.CommandExpired):
        c.acquire_before_deadline(lock)  # already past: not taken even though free
    assert not lock.locked()
    with c.command_deadline(time.time_ns() + 10**9):
        c.acquire_before_deadline(lock)
    assert lock.locked()
