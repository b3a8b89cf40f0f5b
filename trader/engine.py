"""The trading engine: one pure event processor for live trading and backtests.

Events go in, in time order (``on_book``, ``on_signal``, ``on_order``/``on_fill``/``on_position``,
``on_timer``, control calls); a list of :mod:`trader.actions` comes out. No I/O, no threads, no
wall clock: "now" is the latest event time the engine has seen (``on_timer(now)`` advances it
when no data arrives). The service submits the returned ``OrderRequest``s through its
``ExecutionClient`` and feeds the reports back; the backtest does the same with
:class:`trader.paper.PaperExchange`.

Queries (``status``, ``positions``, ``pnl``, ``trades``, ``risk``) return the reply types of
:mod:`depthpilot.control`; ``snapshot()``/``restore()`` rebuild the whole state after a restart
(open position, its stop and trailing extreme, the day's PnL, halts, sessions).

This module handles the events; the control calls (start/stop/flatten/pause/resume, kill and
``reset_risk``, ``set_param``) live in :mod:`trader.engine_control` and the guards (stops,
daily loss, data halts, day roll-over) in :mod:`trader.engine_guards`, both mixed in.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from trader import reports
from trader.actions import Action, ClosedTrade, RiskAlert, Severity
from trader.config import TraderConfig
from trader.domain import (
    ZERO,
    FillReport,
    Instrument,
    Mode,
    OrderReport,
    OrderRequest,
    PositionReport,
    Side,
    to_decimal,
)
from trader.engine_control import EngineControl
from trader.engine_state import DAY_NS, PendingOrder, SymbolState, book_ts
from trader.ledger import PositionLedger
from trader.risk import size_entry

FILL_IDS_KEPT = 2000  # per symbol, for de-duplicating redelivered fills (persisted)
STOP_ORDER_PREFIX = "stop-"  # client ids of venue-side stop orders (paper emulation, adapters)


class BookLike(Protocol):
    exchange: str
    symbol: str
    bids: Any  # float64 (n, 2), best first
    asks: Any
    valid: bool


class TradingEngine(EngineControl):
    def __init__(self, config: TraderConfig, instruments: dict[str, Instrument], *, mode: Mode = "paper") -> None:
        self.cfg = config
        self.mode: Mode = mode
        self.instruments = dict(instruments)
        self.symbols: dict[str, SymbolState] = {s: SymbolState(i, config) for s, i in self.instruments.items()}
        self.now = 0
        self.day = -1
        self._day_end = 0  # first ns of the next UTC day
        self.day_realized = ZERO  # after fees, current UTC day
        self.halt_reason = ""  # "" / "daily_loss" / "kill"
        self.closed: list[ClosedTrade] = []
        self.seq = 0
        self._cache_floats()
        self.counters: dict[str, int] = {
            "signals": 0,
            "ignored_expired": 0,
            "ignored_bad_book": 0,
            "ignored_unknown_symbol": 0,
            "orders": 0,
            "refused": 0,
        }

    # ================================================================== data events
    def on_book(self, book: BookLike, ts: int | None = None) -> list[Action]:
        """A new order book (``BookSnapshot`` or alike; ``ts`` defaults to its ``ts`` or
        ``ts_recv``): keeps the marks, moves the trailing stop, checks the daily loss limit and
        book validity. Fast path when flat and nothing changes."""
        st = self.symbols.get(book.symbol)
        if st is None:
            return []
        if ts is None:
            ts = book_ts(book)
        out: list[Action] = []
        if ts > self.now:
            self.now = ts
            if ts >= self._day_end:
                self._new_day(ts, out)
        st.book = book
        st.book_ts = ts
        if st.trading and not st.started_ts:
            st.started_ts = ts
        bids, asks = book.bids, book.asks
        st.bid = float(bids[0, 0]) if len(bids) else 0.0
        st.ask = float(asks[0, 0]) if len(asks) else 0.0
        valid = book.valid and st.bid > 0.0 and st.ask > 0.0
        if valid != st.book_valid:
            st.book_valid = valid
            st.book_reason = "" if valid else (getattr(book, "reason", "") or "empty side")
            self._data_state(st, out)
        if st.led.qty:
            if st.retry_exit and not st.pending:
                reason, st.retry_exit = st.retry_exit, ""
                self._close(st, reason, out)
            self._mark(st, out)
        return out

    def on_signal(self, sig: Any, now_ns: int | None = None) -> list[Action]:
        """A model signal. Ignored (and counted) when expired, for an unknown symbol, or while
        the symbol's book is invalid or older than ``max_book_age_s``."""
        self.counters["signals"] += 1
        now = max(self.now, now_ns or 0, sig.ts)  # the service passes its clock; a backtest the event time
        self.now = now
        st = self.symbols.get(sig.symbol)
        if st is None:
            self.counters["ignored_unknown_symbol"] += 1
            return []
        if sig.expires_at < now:
            self.counters["ignored_expired"] += 1
            return []
        if not st.book_valid or not st.book_ts or now - st.book_ts > self.cfg.max_book_age_s * 1e9:
            self.counters["ignored_bad_book"] += 1
            return []
        out: list[Action] = []
        reading = st.strat.read(sig.classes, sig.probs, getattr(sig, "decision", ""))
        st.last_signal, st.last_score, st.last_signal_ts = reading, sig.score, now
        if st.signal_stale:
            st.signal_stale = False
            self._data_state(st, out)
        if st.pending:
            return out
        d = st.strat.decide(st.led.side, now)
        if d is None:
            return out
        if d.kind == "exit":
            self._close(st, "signal", out)
        else:
            self._enter(st, d.side, out)
        return out

    def on_timer(self, now_ns: int) -> list[Action]:
        """Advance the clock: UTC day roll-over, stale book / no fresh signal data halts."""
        out: list[Action] = []
        if now_ns > self.now:
            self.now = now_ns
        if self.now // DAY_NS != self.day:
            self._new_day(self.now, out)
        for st in self.symbols.values():
            stale_book = bool(st.book_ts) and self.now - st.book_ts > self.cfg.max_book_age_s * 1e9
            since = max(st.last_signal_ts, st.started_ts)
            stale_sig = st.trading and since > 0 and self.now - since > self.cfg.max_signal_age_s * 1e9
            if stale_book != st.book_stale or stale_sig != st.signal_stale:
                st.book_stale, st.signal_stale = stale_book, stale_sig
                self._data_state(st, out)
        return out

    # ================================================================== execution reports
    def on_fill(self, f: FillReport) -> list[Action]:
        st = self.symbols.get(f.symbol)
        out: list[Action] = []
        if st is None or f.fill_id and f.fill_id in st.fill_ids:
            return out
        if f.fill_id:
            st.fill_ids[f.fill_id] = None
            if len(st.fill_ids) > FILL_IDS_KEPT:
                del st.fill_ids[next(iter(st.fill_ids))]
        if f.ts_ns > self.now:
            self.now = f.ts_ns
        ts = f.ts_ns or self.now
        was_side = st.led.side
        realized, trips = st.led.apply(f.side, f.qty, f.price, f.fee, ts)
        self.day_realized += realized - f.fee
        self._day_f = float(self.day_realized)
        st.sync_pos()
        p = st.pending.get(f.client_order_id)
        if p is not None:
            p.filled += f.qty
            reason = p.reason
        elif f.client_order_id.startswith(STOP_ORDER_PREFIX) or st.stop_triggered:
            reason = "trailing_stop" if st.stop_kind == "trailing" else "stop"
        else:
            reason = "manual"
        for trip in trips:
            self._trip_closed(st, trip, reason if p is None or p.purpose == "exit" else "manual", out)
        if st.led.side != was_side and st.led.qty:  # opened
            st.extreme = f.price
            st.extreme_f = float(f.price)
        out.append(self._pos_change(st))
        if p is not None and p.done():
            self._finish(st, p, out)
        elif p is None and st.led.qty and st.stop is None:
            self._protect(st, out)
        if not self.halt_reason and self.day_realized <= -self.cfg.daily_loss_limit:
            self._daily_halt(out)
        return out

    def on_order(self, rep: OrderReport) -> list[Action]:
        st = self.symbols.get(rep.symbol)
        out: list[Action] = []
        if st is None:
            return out
        p = st.pending.get(rep.client_order_id)
        if p is None:
            if rep.reason == "stop" or rep.client_order_id.startswith(STOP_ORDER_PREFIX):
                st.stop_triggered = True
            return out
        if rep.status == "rejected":
            out.append(
                self._alert("order_rejected", st, f"{rep.client_order_id} rejected: {rep.reason}", severity="warning")
            )
        if rep.terminal:
            p.terminal, p.report_filled = True, rep.filled_qty
            if rep.status != "filled" and rep.filled_qty < p.req.qty and rep.filled_qty > 0:
                out.append(
                    self._alert(
                        "partial_fill",
                        st,
                        f"{rep.client_order_id} filled {rep.filled_qty} of {p.req.qty} ({rep.status}: {rep.reason})",
                        severity="info",
                    )
                )
            if p.done():
                self._finish(st, p, out)
        return out

    def on_position(self, rep: PositionReport) -> list[Action]:
        """The venue's position: when it disagrees with the fills (and no order is in flight) the
        venue wins; a position without a stop gets one (restart, manual trade)."""
        st = self.symbols.get(rep.symbol)
        out: list[Action] = []
        if st is None or st.pending:
            return out
        if rep.qty != st.led.signed_qty:
            out.append(
                self._alert(
                    "position_mismatch",
                    st,
                    f"venue position {rep.qty} @ {rep.avg_price}, engine had {st.led.signed_qty}; adopting the venue's",
                    severity="warning",
                )
            )
            st.led = PositionLedger.adopt(rep.qty, rep.avg_price, st.inst.contract_value, rep.ts_ns or self.now)
            st.sync_pos()
            st.stop, st.stop_kind = None, ""
            st.extreme = rep.avg_price if rep.qty else None
            st.extreme_f = float(rep.avg_price) if rep.qty else 0.0
            out.append(self._pos_change(st))
        if st.led.qty:
            if rep.stop_price is not None and st.stop is None:
                st.stop, st.stop_f, st.stop_kind = rep.stop_price, float(rep.stop_price), "initial"
            if st.stop is None:
                self._protect(st, out)
        return out

    def on_events(self, events: list[Any]) -> list[Action]:
        out: list[Action] = []
        for ev in events:
            if isinstance(ev, FillReport):
                out += self.on_fill(ev)
            elif isinstance(ev, OrderReport):
                out += self.on_order(ev)
            elif isinstance(ev, PositionReport):
                out += self.on_position(ev)
        return out

    # ================================================================== queries
    status = reports.status
    positions = reports.positions
    pnl = reports.pnl
    trades = reports.trades
    risk = reports.risk
    snapshot = reports.snapshot

    @classmethod
    def restore(cls, d: dict[str, Any]) -> TradingEngine:
        return reports.restore(cls, d)

    # ================================================================== internals
    def _alert(
        self, kind: str, st: SymbolState | None, msg: str, severity: Severity = "warning", **data: Any
    ) -> RiskAlert:
        return RiskAlert(
            kind,
            severity,
            st.inst.exchange if st else "",
            st.inst.symbol if st else "",
            msg,
            {k: str(v) for k, v in data.items()},
            self.now,
        )

    def _order(self, st: SymbolState, side: Side, qty: Decimal, purpose: str, reason: str) -> OrderRequest:
        self.seq += 1
        cid = f"dp-{st.inst.symbol[:12]}-{self.now // 1_000_000}-{self.seq}"
        req = OrderRequest(
            cid,
            st.inst.exchange,
            st.inst.symbol,
            side,
            qty,
            "market",
            None,
            purpose == "exit",
            reason,
            self.now,
        )
        st.pending[cid] = PendingOrder(req, purpose, reason)
        self.counters["orders"] += 1
        return req

    def _entry_blocked(self, st: SymbolState) -> str:
        if self.halt_reason:
            return f"trading halted ({self.halt_reason})"
        if not st.trading:
            return "not started"
        if st.paused:
            return "paused"
        if st.data_halt:
            return f"data halt ({st.data_halt})"
        if st.n_trades is not None and st.trades_done >= st.n_trades:
            return f"session of {st.n_trades} trades complete"
        return ""

    def _enter(self, st: SymbolState, side: int, out: list[Action]) -> None:
        if self._entry_blocked(st):
            return
        px = to_decimal(st.ask if side > 0 else st.bid)
        total = sum((s.notional() for s in self.symbols.values()), ZERO)
        sz = size_entry(px, self.cfg, st.inst, symbol_notional=st.notional(), total_exposure=total)
        if sz.refusal:
            self.counters["refused"] += 1
            out.append(self._alert("order_refused", st, f"entry refused: {sz.refusal}", price=px))
            return
        if sz.capped_by:
            out.append(
                self._alert(
                    "size_capped",
                    st,
                    f"entry size capped by {sz.capped_by} to {sz.qty}",
                    severity="info",
                    notional=sz.notional,
                )
            )
        out.append(self._order(st, "buy" if side > 0 else "sell", sz.qty, "entry", "signal"))

    def _close(self, st: SymbolState, reason: str, out: list[Action]) -> None:
        if any(p.purpose == "exit" for p in st.pending.values()):
            return
        if any(p.purpose == "entry" for p in st.pending.values()):
            st.close_after = reason  # close what the entry fills once it is done
            return
        if not st.led.qty:
            return
        out.append(self._order(st, "sell" if st.led.side > 0 else "buy", st.led.qty, "exit", reason))

    def _finish(self, st: SymbolState, p: PendingOrder, out: list[Action]) -> None:
        del st.pending[p.req.client_order_id]
        if p.purpose == "entry":
            if st.led.qty:
                self._protect(st, out)
            if st.close_after:
                reason, st.close_after = st.close_after, ""
                self._close(st, reason, out)
        elif st.led.qty:  # an exit that left a rest (thin book, partial fill): retry on the next book
            st.exit_misses = 0 if p.filled else st.exit_misses + 1
            if st.exit_misses <= 3:
                st.retry_exit = p.reason
            else:
                st.exit_misses = 0
                out.append(
                    self._alert(
                        "exit_incomplete",
                        st,
                        f"exit left {st.led.signed_qty} open: no liquidity on 4 books in a row; flatten again to retry",
                        severity="critical",
                    )
                )
        else:
            st.exit_misses = 0
