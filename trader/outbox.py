"""The trader's outbox: what the engine decided that touches the outside world - store writes,
bus publishes, hand-offs to the execution worker - carried out by ONE writer thread, in the
order the engine produced it, after the engine lock has been released. A slow MongoDB or a
blocked broker publish therefore never stalls book, signal or control handling.

* Items are queued under the engine lock (a non-blocking append, so the queue order is the
  engine's order across all threads) and processed one at a time, each op in order:
  :class:`Write` (a store method, then optionally its message published), :class:`Publish`,
  :class:`Send` (a hand-off to the execution worker, e.g. ``submit``). An OrderIntent's write
  is an op before its ``Send``: the intent is in the store before the order goes to the venue
  (crash recovery looks it up by client order id).
* A failing write is never dropped: it goes to an ordered backlog, retried with exponential
  back-off (``retry_base_s`` doubling up to ``retry_max_s``); while the backlog is not empty
  later writes queue behind it (the store sees them in order). Publishes and sends do not wait
  for a failing store: an order still goes out (as before), its intent follows when the store
  is back. :meth:`problem` says so for the health check; ``store_errors`` counts attempts.
  A write the store refuses as invalid (:class:`~depthpilot.store_docs.StoreError`) is not
  retried: logged as an error naming the record, counted in ``store_rejected``.
* The engine snapshot is coalesced: :meth:`mark_dirty` after a change, and the writer saves the
  newest snapshot at most every ``interval_s``; when marked ``urgent`` (see
  :mod:`trader.runtime_ops` for which changes are) as soon as the writer has caught up with
  the records queued before it (under a backlog of records: at least every ``interval_s``),
  and on :meth:`flush`. It is taken under the engine lock (a pure call), written outside it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from depthpilot import messages as m
from depthpilot.store_docs import StoreError

log = logging.getLogger("trader.outbox")


@dataclass(frozen=True)
class Write:
    """``store.<method>(*args, **kwargs)``; then ``publish`` goes on the bus (also when the write
    is deferred to the backlog). With ``skip_duplicate`` a False result (the store already held
    the record) means it is not published again. ``count`` names the counter to increment when
    it has been carried out, so a counter never runs ahead of the store."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    publish: m.Message | None = None
    skip_duplicate: bool = False
    what: str = ""
    count: str = ""  # the counter that counts it, once it is stored (or queued for a retry)


@dataclass(frozen=True)
class Publish:
    msg: m.Message


@dataclass(frozen=True)
class Send:
    """A non-blocking hand-off (``ExecWorker.submit`` / ``set_stop``), kept in the engine's order."""

    what: str
    call: Callable[[], Any]


Op = Write | Publish | Send
_STOP = object()
BEHIND_BATCHES = 1000  # queued batches above which the health check says the outbox is behind


class Outbox:
    def __init__(
        self,
        store: Any | None,
        bus: Any,
        *,
        engine_lock: threading.RLock,
        snapshot: Callable[[], dict[str, Any]],
        state_key: str,
        interval_s: float = 1.0,
        counters: dict[str, int] | None = None,
        retry_base_s: float = 0.05,
        retry_max_s: float = 5.0,
        name: str = "trader-outbox",
    ) -> None:
        self.store, self.bus = store, bus
        self.state_key = state_key
        self.interval_s = interval_s
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self._lock = engine_lock
        self._take_snapshot = snapshot
        self.counters = counters if counters is not None else {}
        for k in ("store_errors", "store_rejected", "publish_errors", "send_errors", "duplicate_fills", "snapshots"):
            self.counters.setdefault(k, 0)
        self._cond = threading.Condition()
        self._items: collections.deque[Any] = collections.deque()
        self._enqueued = 0
        self._done = 0
        self._backlog: collections.deque[Write] = collections.deque()
        self._dirty = False  # set/cleared under the engine lock
        self._urgent = False
        self._last_snap = 0.0  # monotonic time of the last snapshot write
        self._retry_at = 0.0  # next store attempt while failing (backlog or snapshot)
        self._backoff = 0.0
        self._failing_since = 0.0
        self._last_error = ""
        self._busy_since = 0.0  # a store write in progress since (monotonic)
        self.failure = ""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ producer side
    def start(self) -> "Outbox":
        self._thread.start()
        return self

    def put(self, ops: list[Op]) -> None:
        """Queue one batch of ops (callers hold the engine lock, so batches keep its order)."""
        if not ops:
            return
        with self._cond:
            self._items.append(ops)
            self._enqueued += 1
            self._cond.notify_all()

    def mark_dirty(self, urgent: bool = False) -> None:
        """The engine changed (caller holds the engine lock); ``urgent``: save without waiting
        for the interval. Without a store there is nothing to save."""
        if self.store is None:
            return
        self._dirty = True
        if urgent and not self._urgent:
            self._urgent = True
            with self._cond:
                self._cond.notify_all()

    def barrier(self, timeout: float | None = None) -> bool:
        """Wait until every batch queued before this call has been processed (writes done or in
        the backlog, sends handed over). False on time-out. Never call it under the engine lock."""
        with self._cond:
            target = self._enqueued
            return self._cond.wait_for(lambda: self._done >= target or self.failure != "", timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """:meth:`barrier`, then wait until the backlog is written and the newest snapshot saved.
        False (and logged) when that did not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._dirty:
                self.mark_dirty(urgent=True)
        ok = self.barrier(timeout)
        with self._cond:
            ok = ok and self._cond.wait_for(
                lambda: not self._backlog and not self._dirty or self.failure != "",
                max(0.0, deadline - time.monotonic()),
            )
        if not ok or self.failure:
            log.error(
                "trader outbox not flushed within %.0f s: %d batches queued, %d store writes waiting, snapshot %s",
                timeout,
                self.queued(),
                len(self._backlog),
                "not saved" if self._dirty else "saved",
            )
            return False
        return True

    def close(self, timeout: float = 10.0) -> bool:
        ok = self.flush(timeout) if self._thread.is_alive() else False
        self._closed = True
        with self._cond:
            self._items.append(_STOP)
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return ok

    # ------------------------------------------------------------------ health
    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def queued(self) -> int:
        return self._enqueued - self._done

    def backlog(self) -> int:
        return len(self._backlog)

    def problem(self) -> str:
        """'' when healthy; else one line for the health check."""
        if self.failure:
            return self.failure
        if not self._closed and self._thread.ident is not None and not self._thread.is_alive():
            return "trader outbox writer is not running"
        now = time.monotonic()
        if self._failing_since:
            return (
                f"store writes failing for {now - self._failing_since:.0f} s, retrying: "
                f"{len(self._backlog)} records waiting{', snapshot not saved' if self._dirty else ''} "
                f"(last error: {self._last_error})"
            )
        busy = self._busy_since
        if busy and now - busy > 5.0:
            return f"a store write has been running for {now - busy:.0f} s ({self.queued()} batches queued behind it)"
        if self.queued() > BEHIND_BATCHES:
            return f"the store/broker is behind: {self.queued()} batches of records queued in the trader's outbox"
        return ""

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._items:
                        self._cond.wait(self._wait_s())
                    item = self._items.popleft() if self._items else None
                if item is _STOP:
                    return
                if item is not None:
                    for op in item:
                        self._op(op)
                    with self._cond:
                        self._done += 1
                        self._cond.notify_all()
                self._retry_backlog()
                self._maybe_snapshot()
        except BaseException as exc:  # noqa: BLE001 - recorded: the service reports itself degraded
            self.failure = f"trader outbox writer died: {type(exc).__name__}: {exc}"
            log.exception("trader outbox writer died")
            with self._cond:
                self._cond.notify_all()
            raise

    def _wait_s(self) -> float:
        now = time.monotonic()
        waits = [0.5]
        if self._backlog or self._failing_since:
            waits.append(self._retry_at - now)
        elif self._urgent and not self._items:
            waits.append(0.0)
        elif self._dirty:
            waits.append(self._last_snap + self.interval_s - now)
        return max(0.0, min(waits))

    def _op(self, op: Op) -> None:
        if isinstance(op, Write):
            self._write(op)
        elif isinstance(op, Publish):
            self._publish(op.msg)
        else:
            try:
                op.call()
            except Exception:  # noqa: BLE001 - counted and logged; the next op goes on
                self.counters["send_errors"] += 1
                log.exception("handing %s to the execution worker failed", op.what)

    def _write(self, w: Write) -> None:
        if self._write_once(w) and w.count:
            self.counters[w.count] = self.counters.get(w.count, 0) + 1

    def _write_once(self, w: Write) -> bool:
        """False for a duplicate the store already held (not published again)."""
        if self.store is not None:
            if self._backlog:  # the store is failing: keep the store's order, the bus gets it now
                self._backlog.append(w)
            else:
                res = self._attempt(w)
                if res is _FAILED:
                    self._backlog.append(w)
                elif res is False and w.skip_duplicate:
                    self.counters["duplicate_fills"] += 1
                    log.info("%s was already stored: not published again", w.what or w.method)
                    return False
        if w.publish is not None:
            self._publish(w.publish)
        return True

    def _attempt(self, w: Write) -> Any:
        """The write's result, :data:`_FAILED` when it should be retried (also for a refused one:
        None, logged, not retried)."""
        assert self.store is not None
        self._busy_since = time.monotonic()
        try:
            return getattr(self.store, w.method)(*w.args, **w.kwargs)
        except StoreError as exc:
            self.counters["store_rejected"] += 1
            log.error("the store refused %s (%s): %s", w.what or w.method, w.method, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - retried from the backlog, reported by problem()
            self._failed(f"{w.what or w.method}: {self._text(exc)}")
            return _FAILED
        finally:
            self._busy_since = 0.0

    @staticmethod
    def _text(exc: BaseException) -> str:
        """The error for logs and health (pymongo errors name hosts, never credentials)."""
        return f"{type(exc).__name__}: {exc}"

    def _failed(self, error: str) -> None:
        self.counters["store_errors"] += 1
        now = time.monotonic()
        if not self._failing_since:
            self._failing_since = now
            self._backoff = self.retry_base_s
            log.error("store write failed, retrying with back-off: %s", error)
        else:
            self._backoff = min(self.retry_max_s, self._backoff * 2)
            log.warning("store write failed again (retry in %.2f s): %s", self._backoff, error)
        self._last_error = error[:300]
        self._retry_at = now + self._backoff

    def _recovered(self) -> None:
        if self._failing_since:
            log.warning("store writes recovered after %.1f s", time.monotonic() - self._failing_since)
        self._failing_since = self._backoff = 0.0
        self._last_error = ""

    def _retry_backlog(self) -> None:
        if not self._backlog or time.monotonic() < self._retry_at:
            return
        while self._backlog:
            w = self._backlog[0]
            res = self._attempt(w)
            if res is _FAILED:
                return
            self._backlog.popleft()
            if res is False and w.skip_duplicate:
                self.counters["duplicate_fills"] += 1
        self._recovered()
        with self._cond:
            self._cond.notify_all()

    def _maybe_snapshot(self) -> None:
        if not self._dirty or self.store is None:
            return
        now = time.monotonic()
        if self._backlog or self._failing_since and now < self._retry_at:
            return  # the store is failing: the snapshot waits for the records before it
        due = now >= self._last_snap + self.interval_s
        if not due and (not self._urgent or self._items):
            return  # urgent: as soon as the writer has caught up (or the interval is up)
        with self._lock:  # the engine's pure snapshot call; the write happens outside
            urgent = self._urgent
            self._dirty = self._urgent = False
            snap = self._take_snapshot()
        self._busy_since = time.monotonic()
        try:
            self.store.set_state(self.state_key, snap)
        except Exception as exc:  # noqa: BLE001 - kept dirty, retried with back-off, reported
            with self._lock:
                self._dirty = True
                self._urgent = self._urgent or urgent
            self._failed(f"engine snapshot: {self._text(exc)}")
            return
        finally:
            self._busy_since = 0.0
        self.counters["snapshots"] += 1
        self._last_snap = time.monotonic()
        self._recovered()
        with self._cond:
            self._cond.notify_all()

    def _publish(self, msg: m.Message) -> None:
        try:
            self.bus.publish(msg)  # state class: persistent, confirmed asynchronously by the bus
        except Exception:  # noqa: BLE001 - counted and logged; the store has it
            self.counters["publish_errors"] += 1
            log.exception("publishing %s failed", msg.type_name)


_FAILED = object()
