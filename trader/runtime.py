"""The trader's runtime: the pure :class:`~trader.engine.TradingEngine` bound to the bus, the
store and an execution worker. No strategy here: it feeds events in and carries actions out.

* One lock around the engine: signal, book, control and execution-report threads take turns.
* Actions out of the engine, in order: an ``OrderRequest`` is recorded in the store as an
  intent, published as ``OrderIntent`` and queued on the :class:`~trader.executor.ExecWorker`
  (never sent from a consumer thread); a ``StopMove`` moves the venue-side stop; a
  ``RiskAlert`` is published and stored as ``RiskEvent``; a ``PositionChange`` as
  ``PositionUpdate`` (store: upsert by (exchange, symbol, mode)); a ``ClosedTrade`` is stored
  (idempotent by trade id) and notified. Venue reports become ``OrderUpdate`` (store: upsert
  that never regresses) and ``Fill`` (append-only, deduplicated by fill id).
* State survives a restart: after every batch that changed something the engine's snapshot
  is saved in the store; on start-up (and after every reconnect) the runtime restores it and
  reconciles with the venue's positions and open orders - the venue wins on positions, and
  the engine's stop is put back on the venue.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any, Callable

import msgspec

from depthpilot import messages as m
from trader import message_map as mm
from trader.actions import ClosedTrade, PositionChange, RiskAlert, StopMove
from trader.domain import FillReport, OrderReport, OrderRequest, PositionReport
from trader.engine import TradingEngine
from trader.executor import ExecWorker
from trader.replay_order import ReplayOrder

log = logging.getLogger("trader.runtime")

DAY_NS = 86_400 * 10**9


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
        }
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
        self.worker.start()
        self.reconcile(timeout_s=reconcile_timeout_s)

    def stop(self) -> None:
        self.worker.stop()
        with self.lock:
            self._save()

    # ------------------------------------------------------------------ inputs
    def on_book(self, book: m.BookSnapshot) -> None:
        if self.replay is not None:
            with self._seq:
                self.counters["books"] += 1
                self._apply(self.replay.add_book(book.ts_exchange or book.ts_recv, book, time.monotonic()))
            return
        self.counters["books"] += 1
        self.clock.saw(book.ts_recv or book.ts_exchange)
        with self.lock:
            actions = self.engine.on_book(book)
            self.worker.book(book)
            if actions:
                self.dispatch(actions)

    def on_signal(self, sig: m.Signal) -> None:
        if self.replay is not None:
            with self._seq:
                self.counters["signals"] += 1
                self._apply([*self.replay.add_signal(sig.ts), ("signal", sig)])
            return
        self.counters["signals"] += 1
        self.clock.saw(sig.ts)
        t0 = time.perf_counter_ns()
        with self.lock:
            self.signals[sig.symbol] = sig
            actions = self.engine.on_signal(sig)
            if actions:
                self.dispatch(actions, signal_id=sig.id)
        if any(isinstance(a, OrderRequest) for a in actions):
            self.signal_to_intent_ns.append(time.perf_counter_ns() - t0)
            del self.signal_to_intent_ns[:-1000]

    def on_exec_events(self, events: list[Any]) -> None:
        """Venue reports (worker thread): stored, published, then fed to the engine."""
        now = self.clock.now()
        with self.lock:
            fresh: list[Any] = []
            for ev in events:
                if isinstance(ev, FillReport):
                    msg = mm.fill_message(ev, now)
                    if not self._new_fill(msg):  # seen before (venue re-sent it after a restart): once only
                        self.counters["duplicate_fills"] += 1
                        continue
                    self.counters["fills"] += 1
                    self._publish(msg)
                elif isinstance(ev, OrderReport):
                    upd = mm.order_update(ev, now)
                    upd.reason = self.engine.venue_stop_reason(ev.symbol, ev.client_order_id, upd.reason)
                    self.counters["order_updates"] += 1
                    self._store(lambda upd=upd: self.store.upsert_order(upd, mode=self.mode))
                    self._publish(upd)
                fresh.append(ev)
            actions = self.engine.on_events(fresh)
            self.dispatch(actions, force_save=True)

    def _new_fill(self, msg: m.Fill) -> bool:
        """Append the fill to the store; False when the store already holds it (by message id or
        by (client order id, venue fill id)). Without a store: remembered in memory."""
        key = msg.id
        if key in self._fills_seen:
            return False
        self._fills_seen[key] = None
        if len(self._fills_seen) > 100_000:
            self._fills_seen.pop(next(iter(self._fills_seen)))
        if self.store is None:
            return True
        try:
            return bool(self.store.insert_fill(msg, mode=self.mode))
        except Exception:  # noqa: BLE001 - the store is down: count it, trust the engine's own dedup
            self.counters["store_errors"] += 1
            log.exception("storing fill %s failed", msg.fill_id)
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
        engine sees the book; after every event the execution worker is drained (a barrier
        through its queue, waited for outside the engine lock), so reports of orders sent on
        one event reach the engine before the next event."""
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
                with self.lock:
                    self.dispatch(self.engine.on_book(ev))
            else:
                self.clock.saw(ev.ts)
                with self.lock:
                    self.signals[ev.symbol] = ev
                    self.dispatch(self.engine.on_signal(ev), signal_id=ev.id)
            self.worker.call(lambda _c: None).result(timeout=barrier_s)

    # ------------------------------------------------------------------ control (any thread)
    def act(self, fn: Callable[[TradingEngine], list[Any]]) -> list[Any]:
        """A control action under the engine lock; a command whose deadline passes while the lock
        is busy (a slow store write, a burst of fills) is refused, never executed late."""
        from depthpilot.control import acquire_before_deadline

        acquire_before_deadline(self.lock)
        try:
            actions = fn(self.engine)
            self.dispatch(actions, force_save=True)
            return actions
        finally:
            self.lock.release()

    # ------------------------------------------------------------------ actions out
    def dispatch(self, actions: list[Any], signal_id: str = "", force_save: bool = False) -> None:
        changed = force_save
        for a in actions:
            if isinstance(a, OrderRequest):
                intent = mm.intent_message(a, signal_id)
                self.counters["intents"] += 1
                self._store(lambda intent=intent: self.store.upsert_order(intent, mode=self.mode))
                self._publish(intent)
                self.worker.submit(a)
                changed = True
            elif isinstance(a, StopMove):
                self.worker.set_stop(a.symbol, a.stop_price)
                st = self.engine.symbols.get(a.symbol)
                if st is not None and st.led.qty:  # the stored/published position carries its stop
                    led = st.led
                    pos = self._position(
                        PositionChange(
                            a.exchange,
                            a.symbol,
                            led.signed_qty,
                            led.avg_price,
                            led.realized,
                            led.fees,
                            a.stop_price,
                            a.ts_ns or self.clock.now(),
                        )
                    )
                    self._store(lambda pos=pos: self.store.upsert_position(pos))
                    self._publish(pos)
                changed = True
            elif isinstance(a, RiskAlert):
                ev = mm.risk_message(a, self.source)
                self.counters["risk_events"] += 1
                log.log(
                    logging.WARNING if a.severity != "info" else logging.INFO,
                    "risk %s %s: %s",
                    a.kind,
                    a.symbol,
                    a.message,
                )
                self._store(lambda ev=ev: self.store.insert(ev))
                self._publish(ev)
                changed = True
            elif isinstance(a, PositionChange):
                pos = self._position(a)
                self._store(lambda pos=pos: self.store.upsert_position(pos))
                self._publish(pos)
                changed = True
            elif isinstance(a, ClosedTrade):
                self.counters["closed_trades"] += 1
                rec = mm.closed_trade_record(a)
                self._store(lambda a=a, rec=rec: self.store.record_closed_trade(mm.trade_id(a), rec, mode=self.mode))
                self._publish(mm.trade_notification(a, self.mode))
                changed = True
        if changed:
            self._save()

    def _position(self, pc: PositionChange) -> m.PositionUpdate:
        """PositionUpdate with the engine's mark (mid) and unrealised PnL at that mark."""
        st = self.engine.symbols.get(pc.symbol)
        mark = st.mark() if st is not None and pc.qty else None
        unreal = st.unrealized() if st is not None and pc.qty else Decimal(0)
        return mm.position_message(pc, self.mode, mark, unreal)

    def _exec_error(self, kind: str, symbol: str, message: str) -> None:
        self.dispatch(
            [RiskAlert(kind, "warning", self.exchange if symbol else "", symbol, message, ts_ns=self.clock.now())]
        )

    def _publish(self, msg: m.Message) -> None:
        try:
            self.bus.publish(msg)  # state class: persistent, confirmed asynchronously by the bus
        except Exception:  # noqa: BLE001 - counted and logged; the store still has it
            self.counters["publish_errors"] += 1
            log.exception("publishing %s failed", msg.type_name)

    def _store(self, write: Callable[[], Any]) -> None:
        if self.store is None:
            return
        try:
            write()
        except Exception:  # noqa: BLE001 - counted and logged: trading goes on, the bus has the message
            self.counters["store_errors"] += 1
            log.exception("storing trading state failed")

    SNAPSHOT_TRADES = 1000  # closed trades kept in the saved engine state (all of them are in the store)

    def _save(self) -> None:
        if self.store is not None:
            snap = self.engine.snapshot()
            snap["closed"] = snap.get("closed", [])[-self.SNAPSHOT_TRADES :]  # bounded: saved after every change
            self._store(lambda: self.store.set_state(self.state_key, snap))

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self, timeout_s: float = 15.0) -> None:
        """Venue truth after a (re)start or a reconnect: open orders the store or the engine still
        waits for are looked up by client order id; venue positions are fed to the engine (the
        venue wins); the engine's stops are put back on the venue."""
        self.counters["reconciles"] += 1
        with self.lock:
            symbols = sorted(self.engine.symbols)
            waiting = {cid for st in self.engine.symbols.values() for cid in st.pending}
        if self.store is not None:
            waiting |= {
                o["client_order_id"] for o in self.store.open_orders(mode=self.mode) if o.get("symbol") in symbols
            }
        orders = {cid: self._sym_of(cid) for cid in waiting}

        def fetch(client: Any) -> tuple[list[PositionReport], list[OrderReport], list[OrderReport]]:
            pos = client.positions(symbols)
            found = [r for cid, sym in orders.items() if sym and (r := client.lookup(sym, cid)) is not None]
            return pos, found, client.open_orders()

        venue_pos, found, open_orders = self.worker.call(fetch).result(timeout=timeout_s)
        missing = set(orders) - {r.client_order_id for r in found}
        with self.lock:
            reports: list[Any] = list(found)
            for cid in missing:  # never reached the venue: close the books on it (engine and store)
                st = self.engine.symbols.get(orders[cid] or "")
                p = st.pending.get(cid) if st else None
                o = None if p is not None or self.store is None else self.store.order(cid)
                if p is not None:
                    reports.append(
                        OrderReport(
                            cid,
                            p.req.exchange,
                            p.req.symbol,
                            p.req.side,
                            p.req.qty,
                            "rejected",
                            reason="not found at the venue after a restart",
                        )
                    )
                elif o is not None:
                    reports.append(
                        OrderReport(
                            cid,
                            o["exchange"],
                            o["symbol"],
                            o["side"],
                            o["qty"],
                            "rejected",
                            reason="not found at the venue after a restart",
                        )
                    )
            if reports:
                self.on_exec_events(reports)
            known = set(orders) | {cid for st in self.engine.symbols.values() for cid in st.pending}
            strangers = [o for o in open_orders if o.client_order_id not in known]
            if strangers:  # someone else's orders on our account: say so, leave them alone
                self.dispatch(
                    [
                        RiskAlert(
                            "unknown_open_order",
                            "warning",
                            self.exchange,
                            o.symbol,
                            f"open order {o.client_order_id or o.exchange_order_id} on {self.exchange} "
                            f"was not placed by this trader ({o.side} {o.qty})",
                            ts_ns=self.clock.now(),
                        )
                        for o in strangers
                    ]
                )
            by_sym = {p.symbol: p for p in venue_pos}
            now = self.clock.now()
            for sym in symbols:
                rep = by_sym.get(sym) or PositionReport(self.exchange, sym, Decimal(0), Decimal(0), ts_ns=now)
                self.dispatch(self.engine.on_position(rep))
                st = self.engine.symbols[sym]
                if st.led.qty and st.stop is not None and rep.stop_price != st.stop:
                    self.worker.set_stop(sym, st.stop)
            self._save()
        log.info(
            "reconciled with %s: %d venue positions, %d open venue orders, %d orders looked up (%d missing)",
            self.exchange,
            len(venue_pos),
            len(open_orders),
            len(orders),
            len(missing),
        )

    def _sym_of(self, cid: str) -> str:
        for sym, st in self.engine.symbols.items():
            if cid in st.pending:
                return sym
        o = self.store.order(cid) if self.store is not None else None
        return o.get("symbol", "") if o else ""
