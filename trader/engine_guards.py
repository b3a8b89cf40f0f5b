"""The trading engine's guards: the initial stop, marking open positions (trailing stop, daily
loss), closed round trips (sessions, cooldowns), the UTC day roll-over and the data-quality
halt. A mixin of :class:`trader.engine.TradingEngine`, split out to keep each module short; it
reads and writes the engine's state directly."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from trader.actions import Action, ClosedTrade, PositionChange, RiskAlert, Severity, StopMove
from trader.domain import ZERO, to_decimal
from trader.engine_state import DAY_NS, SymbolState
from trader.risk import initial_stop, trailing_stop

if TYPE_CHECKING:
    from trader.config import TraderConfig


class EngineGuards:
    cfg: "TraderConfig"
    symbols: dict[str, SymbolState]
    now: int
    day: int
    day_realized: Decimal
    halt_reason: str
    _fee_f: float
    _lim_f: float
    _day_f: float
    _day_end: int
    closed: list[ClosedTrade]

    def _close(self, st: SymbolState, reason: str, out: list[Action]) -> None: ...  # in TradingEngine

    def _alert(
        self, kind: str, st: SymbolState | None, msg: str, severity: Severity = "warning", **data: Any
    ) -> RiskAlert:
        raise NotImplementedError  # defined by TradingEngine

    def venue_stop_reason(self, symbol: str, client_order_id: str, reason: str) -> str:
        """The reason to publish for a venue report of ``client_order_id``: a venue-side stop
        order (not one of the engine's own orders; reported with reason ``stop`` or a ``stop-``
        client id) is labelled as the closed trade will be, ``trailing_stop`` once the stop
        has trailed, else ``stop``; any other report keeps ``reason``."""
        st = self.symbols.get(symbol)
        if st is None or client_order_id in st.pending:
            return reason
        if reason == "stop" or client_order_id.startswith("stop-"):  # engine.STOP_ORDER_PREFIX
            return "trailing_stop" if st.stop_kind == "trailing" else "stop"
        return reason

    def _cache_floats(self) -> None:
        """Float copies of limits for the per-book pre-checks (exact decisions stay Decimal)."""
        self._fee_f = float(self.cfg.taker_fee)
        self._lim_f = float(self.cfg.daily_loss_limit)
        self._day_f = float(self.day_realized)

    def _mark(self, st: SymbolState, out: list[Action]) -> None:
        led = st.led
        px_f = st.bid if led.side > 0 else st.ask  # the exit side
        if px_f <= 0.0:
            return
        if (px_f - st.extreme_f) * led.side > 0.0:
            st.extreme_f = px_f
            st.extreme = to_decimal(px_f)
            if st.stop is not None and not st.pending:
                new = trailing_stop(led.side, led.avg_price, st.extreme, st.stop, self.cfg, st.inst)
                if new is not None:
                    st.stop, st.stop_f, st.stop_kind = new, float(new), "trailing"
                    out.append(StopMove(st.inst.exchange, st.inst.symbol, new, "trailing", self.now))
                    out.append(
                        self._alert(
                            "stop_trailed", st, f"trailing stop to {new} (best {st.extreme})", severity="info", stop=new
                        )
                    )
        # daily loss: a float pre-check on every book, the exact Decimal decision near the limit
        q = st.qty_f
        st.unreal_f = q * ((px_f - st.avg_px_f) * led.side * st.cv_f - self._fee_f * px_f)
        if not self.halt_reason:  # a kill switch halt is never downgraded to a daily one
            tot = self._day_f + (
                st.unreal_f if len(self.symbols) == 1 else sum(s.unreal_f for s in self.symbols.values() if s.led.qty)
            )
            if tot <= -0.98 * self._lim_f and self.day_pnl() <= -self.cfg.daily_loss_limit:
                self._daily_halt(out)

    def day_pnl(self) -> Decimal:
        """Today's realised PnL after fees plus unrealised PnL net of an estimated taker exit fee."""
        return self.day_realized + sum((s.unrealized_net(self.cfg.taker_fee) for s in self.symbols.values()), ZERO)

    def _daily_halt(self, out: list[Action]) -> None:
        self.halt_reason = "daily_loss"
        out.append(
            RiskAlert(
                "daily_loss_limit",
                "critical",
                message=f"day PnL {self.day_pnl():.2f} reached the limit "
                f"-{self.cfg.daily_loss_limit}: flattening everything, entries halted until the next UTC "
                "day or a reset",
                data={"day_pnl": str(self.day_pnl())},
                ts_ns=self.now,
            )
        )
        for st in self.symbols.values():
            self._close(st, "limit", out)

    def _new_day(self, ts: int, out: list[Action]) -> None:
        first = self.day < 0
        self.day, self.day_realized = ts // DAY_NS, ZERO
        self._day_end = (self.day + 1) * DAY_NS
        self._day_f = 0.0
        if self.halt_reason == "daily_loss" and not first:
            self.halt_reason = ""
            out.append(RiskAlert("daily_loss_reset", "info", message="new UTC day: daily-loss halt lifted", ts_ns=ts))

    def _data_state(self, st: SymbolState, out: list[Action]) -> None:
        was = st.data_halt
        why = [
            w
            for w, on in (
                (f"book invalid: {st.book_reason}", not st.book_valid and st.book_ts),
                ("book stale", st.book_stale),
                ("no fresh signal", st.signal_stale),
            )
            if on
        ]
        st.data_halt = "; ".join(why)
        if st.data_halt and not was:
            out.append(self._alert("data_halt", st, f"entries halted: {st.data_halt}"))
            if self.cfg.flatten_on_data_halt:
                self._close(st, "flatten", out)
        elif was and not st.data_halt:
            out.append(self._alert("data_resumed", st, "data healthy again: entries allowed", severity="info"))

    def _protect(self, st: SymbolState, out: list[Action]) -> None:
        """Initial stop for the position from its average entry."""
        plan = initial_stop(st.led.avg_price, st.led.side, self.cfg, st.inst)
        st.stop, st.stop_f, st.stop_kind = plan.stop, float(plan.stop), "initial"
        st.liq = plan.liq
        if plan.clamped:
            out.append(
                self._alert(
                    "stop_clamped_to_liq",
                    st,
                    f"stop {plan.stop} pulled inside liquidation {plan.liq} (max-loss stop was {plan.raw})",
                    severity="info",
                )
            )
        out.append(
            self._alert(
                "stop_set",
                st,
                f"stop-loss {plan.stop} for {st.led.signed_qty} @ {st.led.avg_price:.2f} (liquidation {plan.liq:.2f})",
                severity="info",
                stop=plan.stop,
                liq=plan.liq,
            )
        )
        out.append(StopMove(st.inst.exchange, st.inst.symbol, plan.stop, "initial", self.now))

    def _trip_closed(self, st: SymbolState, trip: Any, reason: str, out: list[Action]) -> None:
        ct = ClosedTrade(
            st.inst.exchange,
            st.inst.symbol,
            "long" if trip.side > 0 else "short",
            trip.qty,
            trip.entry_price,
            trip.exit_price,
            trip.entry_ts,
            trip.exit_ts,
            trip.gross,
            trip.fees,
            trip.pnl,
            reason,
        )
        self.closed.append(ct)
        out.append(ct)
        st.trades_done += 1
        st.stop, st.stop_kind, st.stop_triggered, st.extreme, st.extreme_f = None, "", False, None, 0.0
        st.unreal_f = 0.0
        st.strat.on_closed(trip.side, reason, self.now)
        if st.n_trades is not None and st.trades_done >= st.n_trades and st.trading:
            st.trading = False
            out.append(self._alert("session_complete", st, f"{st.n_trades}-trade session complete", severity="info"))

    def _pos_change(self, st: SymbolState) -> PositionChange:
        led = st.led
        return PositionChange(
            st.inst.exchange, st.inst.symbol, led.signed_qty, led.avg_price, led.realized, led.fees, st.stop, self.now
        )
