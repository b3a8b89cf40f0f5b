"""Venue truth after a (re)start or a broker/venue reconnect, for :class:`trader.runtime.TraderRuntime`.

Open orders the store or the engine still waits for are looked up at the venue by client order
id (on the execution worker); the ones it does not know never reached it and are closed as
rejected (engine and store); venue positions are fed to the engine (the venue wins) and the
engine's stops are put back on the venue; open orders nobody here placed are reported, left
alone. Store reads happen before the engine lock is taken; writes go through the outbox.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from trader.actions import RiskAlert
from trader.domain import OrderReport, PositionReport

if TYPE_CHECKING:
    from trader.runtime import TraderRuntime

log = logging.getLogger("trader.runtime")

NOT_FOUND = "not found at the venue after a restart"


def reconcile(rt: TraderRuntime, timeout_s: float = 15.0) -> None:
    rt.counters["reconciles"] += 1
    with rt.lock:
        symbols = sorted(rt.engine.symbols)
        pending = {cid: sym for sym, st in rt.engine.symbols.items() for cid in st.pending}
    stored: dict[str, dict[str, Any]] = {}  # open in the store, not (or no longer) pending in the engine
    if rt.store is not None:
        rt.outbox.barrier(timeout_s)  # the intents already decided are in the store first
        for o in rt.store.open_orders(mode=rt.mode):
            if o.get("symbol") in symbols and o["client_order_id"] not in pending:
                stored[o["client_order_id"]] = o
    orders = {**{cid: str(o.get("symbol", "")) for cid, o in stored.items()}, **pending}

    def fetch(client: Any) -> tuple[list[PositionReport], list[OrderReport], list[OrderReport]]:
        pos = client.positions(symbols)
        found = [r for cid, sym in orders.items() if sym and (r := client.lookup(sym, cid)) is not None]
        return pos, found, client.open_orders()

    venue_pos, found, open_orders = rt.worker.call(fetch).result(timeout=timeout_s)
    missing = set(orders) - {r.client_order_id for r in found}
    with rt.lock:
        reports: list[Any] = list(found)
        for cid in missing:  # never reached the venue: close the books on it (engine and store)
            st = rt.engine.symbols.get(orders[cid] or "")
            p = st.pending.get(cid) if st else None
            o = None if p is not None else stored.get(cid)
            if p is not None:
                reports.append(
                    OrderReport(cid, p.req.exchange, p.req.symbol, p.req.side, p.req.qty, "rejected", reason=NOT_FOUND)
                )
            elif o is not None:
                reports.append(
                    OrderReport(cid, o["exchange"], o["symbol"], o["side"], o["qty"], "rejected", reason=NOT_FOUND)
                )
        if reports:
            rt.on_exec_events(reports)
        known = set(orders) | {cid for st in rt.engine.symbols.values() for cid in st.pending}
        strangers = [o for o in open_orders if o.client_order_id not in known]
        if strangers:  # someone else's orders on our account: say so, leave them alone
            rt.dispatch(
                [
                    RiskAlert(
                        "unknown_open_order",
                        "warning",
                        rt.exchange,
                        o.symbol,
                        f"open order {o.client_order_id or o.exchange_order_id} on {rt.exchange} "
                        f"was not placed by this trader ({o.side} {o.qty})",
                        ts_ns=rt.clock.now(),
                    )
                    for o in strangers
                ]
            )
        by_sym = {p.symbol: p for p in venue_pos}
        now = rt.clock.now()
        for sym in symbols:
            rep = by_sym.get(sym) or PositionReport(rt.exchange, sym, Decimal(0), Decimal(0), ts_ns=now)
            rt.dispatch(rt.engine.on_position(rep))
            st = rt.engine.symbols[sym]
            if st.led.qty and st.stop is not None and rep.stop_price != st.stop:
                rt.venue_stop(sym, st.stop)
        rt.outbox.mark_dirty(urgent=True)
    log.info(
        "reconciled with %s: %d venue positions, %d open venue orders, %d orders looked up (%d missing)",
        rt.exchange,
        len(venue_pos),
        len(open_orders),
        len(orders),
        len(missing),
    )
