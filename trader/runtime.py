"""The trader's runtime: the pure :class:`~trader.engine.TradingEngine` bound to the bus, the
store and an execution worker. No strategy here: it feeds events in and carries actions out.

* One lock around the engine: signal, book, control and execution-report threads take turns.
  Under it only the engine's pure calls and turning their actions into ops
  (:mod:`trader.runtime_ops`); the ops are queued on the :class:`~trader.outbox.Outbox`, whose
  single writer thread stores, publishes and hands orders to the
  :class:`~trader.executor.ExecWorker` in the engine's order, after the lock is released. A
  slow MongoDB or a blocked broker never stalls books, signals or control commands.
* An ``OrderRequest`` is recorded in the store as an intent before the worker sends it (crash
  recovery looks it up by client order id). Venue reports become ``OrderUpdate`` (store: upsert
  that never regresses) and ``Fill`` (append-only; a fill seen before - by this process, or
  stored before the start - reaches the engine once).
* State survives a restart: the engine's snapshot is saved coalesced (at most every
  ``snapshot_interval_s``), at once after the changes a restart must not miss (see
  :mod:`trader.runtime_ops`), after every control command and on stop. On start-up (and after
  every reconnect) the runtime restores it and reconciles with the venue
  (:mod:`trader.reconcile`) - the venue wins on positions, the engine's stop goes back on it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from decimal import Decimal
from typing import Any, Callable

import msgspec

from depthpilot import messages as m
from trader import message_map as mm
from trader.actions import RiskAlert
from trader.domain import FillReport, OrderReport, OrderRequest
from trader.engine import TradingEngine
from trader.executor import ExecWorker
from trader.outbox import Outbox, Send
from trader.replay_order import ReplayOrder
from trader.runtime_ops import SAVE_LATER, SAVE_NOW, ActionMapper

log = logging.getLogger("trader.runtime")

DAY_NS = 86_400 * 10**9
FILLS_REMEMBERED = 100_000  # fill ids kept for de-duplication (seeded from the store at start)


class EventClock:
    """The trader's "now": the latest event time seen, advanced by the wall clock in between,
    so a replayed recording (event times in the past) and live data share one rule."""

    def __init__(self) -> None:
        self._event = 0
        self._mono = time.monotonic()

    def saw(self, ts_ns: int) -> None:
        if ts_ns > self._event:
            self._event, self._mono = ts_ns, time.monotonic()

    def now(self) -> int:
        if not self._event:
            return time.time_ns()
        return self._event + int((time.monotonic() - self._mono) * 1e9)


class TraderRuntime:
    SNAPSHOT_TRADES = 1000  # closed trades kept in the saved engine state (all of them are in the store)

    def __init__(
        self,
        engine: TradingEngine,
        client: Any,
        *,
        bus: Any,
        store: Any | None,
        mode: str,
        exchange: str,
        poll_interval_s: float = 0.05,
        state_key: str | None = None,
        source: str = "trader",
        replay_hold_s: float | None = None,
        snapshot_interval_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.client = client
        self.bus = bus
        self.store = store
        self.mode = mode
        self.exchange = exchange
        self.source = source
        self.state_key = state_key or f"trader:{mode}:{exchange}"
        self.lock = threading.RLock()
        self.clock = EventClock()
        self.worker = ExecWorker(client, self.on_exec_events, self._exec_error, poll_interval_s=poll_interval_s)
        self.signals: dict[str, m.Signal] = {}
        self.counters = {
            "signals": 0,
            "books": 0,
            "intents": 0,
            "fills": 0,
            "order_updates": 0,
            "risk_events": 0,
            "closed_trades": 0,
            "publish_errors": 0,
            "store_errors": 0,
            "reconciles": 0,
            "duplicate_fills": 0,
        }  # intents, fills, order updates, risk events, closed trades: counted once written (outbox)
        self.outbox = Outbox(
            store,
            bus,
            engine_lock=self.lock,
            snapshot=self._snapshot,
            state_key=self.state_key,
            interval_s=snapshot_interval_s,
            counters=self.counters,
        )
        self.mapper = ActionMapper(engine, self.worker, mode=mode, source=source)
        self._fills_seen: dict[str, None] = {}
        self.signal_to_intent_ns: list[int] = []
        # replay clock: events in event-time order, one at a time, as a backtest applies them
        self.replay = ReplayOrder(hold_s=replay_hold_s) if replay_hold_s is not None else None
        self._seq = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def load_engine(cls, store: Any | None, key: str, make: Callable[[], TradingEngine]) -> TradingEngine:
        """The engine saved under ``key`` in the store, or a fresh one."""
        snap = store.get_state(key) if store is not None else None
        if snap:
            try:
                eng = TradingEngine.restore(snap)
                log.info(
                    "trader state restored from the store (%s): %d symbols, %d closed trades",
                    key,
                    len(eng.symbols),
                    len(eng.closed),
                )
                return eng
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "stored trader state %s is unusable (%s); starting fresh and reconciling with the venue", key, exc
                )
        return make()

    def start(self, reconcile_timeout_s: float = 15.0) -> None:
        self._seed_fills()
        self.outbox.start()
        self.worker.start()
        self.reconcile(timeout_s=reconcile_timeout_s)
        self.outbox.flush(reconcile_timeout_s)  # what the reconciliation decided is stored before trading

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the worker, then write everything queued and the final snapshot (at once)."""
        self.worker.stop()
        with self.lock:
            self.outbox.mark_dirty(urgent=True)
        self.outbox.close(timeout_s)

    def problems(self) -> list[str]:
        """What the health check should say about the runtime's own threads ([] when fine)."""
        out = []
        if self.worker.failure or not self.worker.alive:
            out.append(self.worker.failure or "execution worker is not running")
        if problem := self.outbox.problem():
            out.append(problem)
        return out

    def _seed_fills(self) -> None:
        """The ids of the fills stored before this start: a fill the venue re-sends after a restart
        is recognised without asking the store on the hot path."""
        if self.store is None:
            return
        for f in reversed(self.store.fills(mode=self.mode, limit=FILLS_REMEMBERED)):
            if f.get("id"):
                self._fills_seen[f["id"]] = None

    # ------------------------------------------------------------------ inputs
    def on_book(self, book: m.BookSnapshot) -> None:
        if self.replay is not None:
            with self._seq:
                self.counters["books"] += 1
                self._apply(self.replay.add_book(book.ts_exchange or book.ts_recv, book, time.monotonic()))
            return
        self.clock.saw(book.ts_recv or book.ts_exchange)
        with self.lock:
            actions = self.engine.on_book(book)
            self.worker.book(book)
            if actions:
                self.dispatch(actions)
        self.counters["books"] += 1

    def on_signal(self, sig: m.Signal) -> None:
        if self.replay is not None:
            with self._seq:
                self.counters["signals"] += 1
                self._apply([*self.replay.add_signal(sig.ts), ("signal", sig)])
            return
        self.clock.saw(sig.ts)
        t0 = time.perf_counter_ns()
        with self.lock:
            self.signals[sig.symbol] = sig
            actions = self.engine.on_signal(sig)
            if actions:
                self.dispatch(actions, signal_id=sig.id)
        self.counters["signals"] += 1
        if any(isinstance(a, OrderRequest) for a in actions):
            self.signal_to_intent_ns.append(time.perf_counter_ns() - t0)
            del self.signal_to_intent_ns[:-1000]

    def on_exec_events(self, events: list[Any]) -> None:
        """Venue reports (worker thread): fed to the engine; their records queued in order (each
        report's record before the actions it caused)."""
        now = self.clock.now()
        with self.lock:
            fresh: list[Any] = []
            ops: list[Any] = []
            for ev in events:
                if isinstance(ev, FillReport):
                    msg = mm.fill_message(ev, now)
                    if not self._new_fill(msg.id):  # seen before (venue re-sent it): once only
                        self.counters["duplicate_fills"] += 1
                        continue
                    ops.append(self.mapper.fill(msg))
                elif isinstance(ev, OrderReport):
                    upd = mm.order_update(ev, now)
                    upd.reason = self.engine.venue_stop_reason(ev.symbol, ev.client_order_id, upd.reason)
                    ops.append(self.mapper.order_update(upd))
                fresh.append(ev)
            self.outbox.put(ops)
            self.dispatch(self.engine.on_events(fresh), save=SAVE_LATER)

    def _new_fill(self, fill_msg_id: str) -> bool:
        """False when this fill was seen before (by this process or stored before the start)."""
        if fill_msg_id in self._fills_seen:
            return False
        self._fills_seen[fill_msg_id] = None
        if len(self._fills_seen) > FILLS_REMEMBERED:
            self._fills_seen.pop(next(iter(self._fills_seen)))
        return True

    def tick(self) -> None:
        """Periodic: the engine's timer (day roll-over, stale data halts). On the replay clock the
        timer runs on event time (:mod:`trader.replay_order`); here only held books are released."""
        if self.replay is not None:
            with self._seq:
                self._apply(self.replay.due(time.monotonic()))
            return
        with self.lock:
            actions = self.engine.on_timer(self.clock.now())
            if actions:
                self.dispatch(actions)

    def _apply(self, events: list[tuple[str, Any]], barrier_s: float = 30.0) -> None:
        """Replay clock (caller holds ``_seq``): each event as the backtest's ``Simulator`` applies
        it. A book goes to the paper exchange first and its fills reach the engine before the
        engine sees the book; after every event the outbox and then the execution worker are
        drained (barriers waited for outside the engine lock), so orders decided on one event
        are sent, and their reports reach the engine, before the next event."""
        for kind, ev in events:
            if kind == "timer":
                with self.lock:
                    self.dispatch(self.engine.on_timer(ev))
            elif kind == "book":
                ts, ev = ev
                ev = msgspec.structs.replace(ev, ts_recv=ts)  # the engine and paper judge books by event time
                self.clock.saw(ts)
                if self.worker.book(ev):
                    self.worker.call(lambda _c: None).result(timeout=barrier_s)
                    self.outbox.barrier(barrier_s)
                with self.lock:
                    self.dispatch(self.engine.on_book(ev))
            else:
                self.clock.saw(ev.ts)
                with self.lock:
                    self.signals[ev.symbol] = ev
                    self.dispatch(self.engine.on_signal(ev), signal_id=ev.id)
            self.outbox.barrier(barrier_s)
            self.worker.call(lambda _c: None).result(timeout=barrier_s)

    # ------------------------------------------------------------------ control (any thread)
    def act(self, fn: Callable[[TradingEngine], list[Any]]) -> list[Any]:
        """A control action under the engine lock; a command whose deadline passes while the lock
        is busy (a burst of fills) is refused, never executed late. Its records and the snapshot
        are written at once, after the lock is released."""
        from depthpilot.control import acquire_before_deadline

        acquire_before_deadline(self.lock)
        try:
            actions = fn(self.engine)
            self.dispatch(actions, save=SAVE_NOW)
            return actions
        finally:
            self.lock.release()

    # ------------------------------------------------------------------ actions out
    def dispatch(self, actions: list[Any], signal_id: str = "", save: int = 0) -> None:
        """Queue the ops for ``actions`` on the outbox and mark the snapshot dirty (``save``: at
        least this urgency). The caller holds the engine lock, which keeps the engine's order."""
        with self.lock:
            ops, need = self.mapper.ops(actions, signal_id, self.clock.now())
            self.outbox.put(ops)
            need = max(need, save)
            if need:
                self.outbox.mark_dirty(urgent=need >= SAVE_NOW)

    def venue_stop(self, symbol: str, price: Decimal | None) -> None:
        """Put a stop on the venue, in order after what is already queued (caller holds the lock)."""
        self.outbox.put([Send(f"stop {symbol}", functools.partial(self.worker.set_stop, symbol, price))])

    def _exec_error(self, kind: str, symbol: str, message: str) -> None:
        with self.lock:
            self.dispatch(
                [RiskAlert(kind, "warning", self.exchange if symbol else "", symbol, message, ts_ns=self.clock.now())]
            )

    def _snapshot(self) -> dict[str, Any]:
        """The engine's state to save (the outbox calls it under the engine lock)."""
        snap = self.engine.snapshot()
        snap["closed"] = snap.get("closed", [])[-self.SNAPSHOT_TRADES :]
        return snap

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self, timeout_s: float = 15.0) -> None:
        """Venue truth after a (re)start or a reconnect (:func:`trader.reconcile.reconcile`)."""
        from trader.reconcile import reconcile

        reconcile(self, timeout_s)
