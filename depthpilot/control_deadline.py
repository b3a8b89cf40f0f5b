"""Deadlines on the answering side of the control layer, and its errors (re-exported by
:mod:`depthpilot.control`, where callers import them).

A service runs every handler inside :func:`command_deadline`; code that must wait before it
acts (a lock, a venue query) waits through :func:`acquire_before_deadline`,
:func:`held_before_deadline` or :func:`time_left_s`, so a command whose caller has given up is
refused (:class:`CommandExpired`), never executed late.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ControlError(RuntimeError):
    """A control request failed; ``str(exc)`` is one line for the user."""


class ControlTimeout(ControlError):
    """No reply before the deadline. The command carries that deadline, so the service will not
    execute it later."""


class ControlRejected(ControlError):
    """The service answered with an error (unknown symbol, risk halt, bad parameter...)."""


# --------------------------------------------------------------------------- deadlines (answering side)

# the deadline (ns, wall clock) of the command the current thread is executing; None outside one
_DEADLINE: contextvars.ContextVar[int | None] = contextvars.ContextVar("control_deadline_ns", default=None)


class CommandExpired(ControlRejected):
    """The command's deadline passed before it could be executed: nothing was done."""


@contextmanager
def command_deadline(expires_at_ns: int) -> Iterator[None]:
    """Marks the current thread as executing a command due by ``expires_at_ns`` (the service
    sets it around every handler), so code that must wait first can honour it."""
    token = _DEADLINE.set(int(expires_at_ns))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def acquire_before_deadline(lock: threading.Lock | threading.RLock) -> None:
    """Take ``lock`` for a command's action, never past the running command's deadline: on
    time-out it raises :class:`CommandExpired` without the lock held, so a command whose caller
    has given up is never executed later. Outside a command it simply waits for the lock."""
    deadline = _DEADLINE.get()
    if deadline is None:
        lock.acquire()
        return
    remaining_s = (deadline - time.time_ns()) / 1e9
    if remaining_s <= 0 or not lock.acquire(timeout=remaining_s):
        raise CommandExpired("expired: the deadline passed while waiting to execute; nothing was done")
    if time.time_ns() > deadline:
        lock.release()
        raise CommandExpired("expired: the deadline passed while waiting to execute; nothing was done")


def time_left_s(cap_s: float) -> float:
    """Seconds a command may still wait (its deadline, at most ``cap_s``; ``cap_s`` outside a
    command): the bound for a venue query made on its behalf."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return cap_s
    return max(0.0, min(cap_s, (deadline - time.time_ns()) / 1e9))


@contextmanager
def held_before_deadline(lock: threading.Lock | threading.RLock) -> Iterator[None]:
    """``with held_before_deadline(lock):`` - :func:`acquire_before_deadline`, released on exit
    (for queries: a reply the caller has stopped waiting for is not computed)."""
    acquire_before_deadline(lock)
    try:
        yield
    finally:
        lock.release()
