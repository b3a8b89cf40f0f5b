"""Engine actions -> outbox ops (:mod:`trader.outbox`), and how soon the engine snapshot must
be saved after them. Called under the engine lock: it only reads the engine and builds
messages; nothing here does I/O.

In order, per action:

* ``OrderRequest``: the intent written to the store (``upsert_order``), published as
  ``OrderIntent``, THEN handed to the execution worker (persist before send);
* ``StopMove``: the venue-side stop moved (worker), and while a position is open the position
  with its new stop stored and published;
* ``RiskAlert``: logged, stored and published as ``RiskEvent``;
* ``PositionChange``: stored (upsert by exchange, symbol, mode) and published;
* ``ClosedTrade``: stored (idempotent by trade id) and notified.

Snapshot timing (:data:`SAVE_NOW` = written as soon as the outbox has written the records
before it; :data:`SAVE_LATER`
= coalesced, at most every ``TRADER_SNAPSHOT_INTERVAL_MS``). What a restart must not get wrong
is saved at once: a position opened, closed or reversed (never re-entered, never forgotten), a
closed trade, every stop move (a restart puts the engine's stop back on the venue: a stale one
would loosen it), and halts (kill switch, daily loss, their reset). The rest - an order sent
(its intent is in the store first and a restart looks it up), a position grown or shrunk on
the same side (the venue's position wins at the restart), order acknowledgements, data halts,
other alerts - is saved with the next coalesced snapshot.
"""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from typing import Any

from depthpilot import messages as m
from trader import message_map as mm
from trader.actions import ClosedTrade, PositionChange, RiskAlert, StopMove
from trader.domain import OrderRequest
from trader.outbox import Op, Publish, Send, Write

log = logging.getLogger("trader.runtime")

SAVE_NONE, SAVE_LATER, SAVE_NOW = 0, 1, 2
HALT_ALERTS = frozenset({"kill_switch", "daily_loss_limit", "daily_loss_reset", "risk_reset"})


def _sign(q: Decimal) -> int:
    return (q > 0) - (q < 0)


def position_message(engine: Any, pc: PositionChange, mode: str) -> m.PositionUpdate:
    """PositionUpdate with the engine's mark (mid) and unrealised PnL at that mark."""
    st = engine.symbols.get(pc.symbol)
    mark = st.mark() if st is not None and pc.qty else None
    unreal = st.unrealized() if st is not None and pc.qty else Decimal(0)
    return mm.position_message(pc, mode, mark, unreal)


class ActionMapper:
    """Turns one batch of engine actions into ops; remembers each symbol's position side to
    tell an opened/closed/reversed position (saved at once) from a resized one."""

    def __init__(self, engine: Any, worker: Any, *, mode: str, source: str) -> None:
        self.engine, self.worker = engine, worker
        self.mode, self.source = mode, source
        self.sides = {sym: _sign(st.led.signed_qty) for sym, st in engine.symbols.items()}

    def ops(self, actions: list[Any], signal_id: str = "", now_ns: int = 0) -> tuple[list[Op], int]:
        out: list[Op] = []
        save = SAVE_NONE
        for a in actions:
            if isinstance(a, OrderRequest):
                intent = mm.intent_message(a, signal_id)
                what = f"intent {a.client_order_id}"
                out.append(Write("upsert_order", (intent,), {"mode": self.mode}, intent, what=what, count="intents"))
                out.append(Send(f"order {a.client_order_id}", functools.partial(self.worker.submit, a)))
                save = max(save, SAVE_LATER)
            elif isinstance(a, StopMove):
                out.append(Send(f"stop {a.symbol}", functools.partial(self.worker.set_stop, a.symbol, a.stop_price)))
                st = self.engine.symbols.get(a.symbol)
                if st is not None and st.led.qty:  # the stored/published position carries its stop
                    led = st.led
                    pc = PositionChange(
                        a.exchange,
                        a.symbol,
                        led.signed_qty,
                        led.avg_price,
                        led.realized,
                        led.fees,
                        a.stop_price,
                        a.ts_ns or now_ns,
                    )
                    pos = position_message(self.engine, pc, self.mode)
                    out.append(Write("upsert_position", (pos,), {}, pos, what=f"position {a.symbol}"))
                save = SAVE_NOW
            elif isinstance(a, RiskAlert):
                ev = mm.risk_message(a, self.source)
                level = logging.WARNING if a.severity != "info" else logging.INFO
                log.log(level, "risk %s %s: %s", a.kind, a.symbol, a.message)
                out.append(Write("insert", (ev,), {}, ev, what=f"risk event {a.kind}", count="risk_events"))
                save = max(save, SAVE_NOW if a.kind in HALT_ALERTS else SAVE_LATER)
            elif isinstance(a, PositionChange):
                pos = position_message(self.engine, a, self.mode)
                out.append(Write("upsert_position", (pos,), {}, pos, what=f"position {a.symbol}"))
                side = _sign(a.qty)
                save = max(save, SAVE_NOW if side != self.sides.get(a.symbol, 0) else SAVE_LATER)
                self.sides[a.symbol] = side
            elif isinstance(a, ClosedTrade):
                rec = mm.closed_trade_record(a)
                tid = mm.trade_id(a)
                what = f"closed trade {tid}"
                out.append(
                    Write("record_closed_trade", (tid, rec), {"mode": self.mode}, what=what, count="closed_trades")
                )
                out.append(Publish(mm.trade_notification(a, self.mode)))
                save = SAVE_NOW
        return out, save

    def fill(self, msg: m.Fill) -> Write:
        """A venue fill: stored once (append-only) and published unless the store already had it."""
        what = f"fill {msg.fill_id}"
        return Write("insert_fill", (msg,), {"mode": self.mode}, msg, skip_duplicate=True, what=what, count="fills")

    def order_update(self, upd: m.OrderUpdate) -> Write:
        what = f"order update {upd.client_order_id} {upd.status}"
        return Write("upsert_order", (upd,), {"mode": self.mode}, upd, what=what, count="order_updates")
