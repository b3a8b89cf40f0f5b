"""The trading engine's control actions: start/stop a symbol (with an optional number of round
trips), flatten, pause/resume, the kill switch and its reset, ``set_param``, orders in flight
and new instruments. A mixin of :class:`trader.engine.TradingEngine` (which handles the events:
books, signals, fills, timer), split out to keep each module short; it reads and writes the
engine's state directly."""

from __future__ import annotations

from typing import Any

from trader.actions import Action, RiskAlert
from trader.config import parse_param
from trader.domain import ZERO, Instrument, OrderRequest
from trader.engine_guards import EngineGuards
from trader.engine_state import SymbolState


class EngineControl(EngineGuards):
    instruments: dict[str, Instrument]

    def start(self, symbol: str, n_trades: int | None = None) -> list[Action]:
        st = self._state(symbol)
        if n_trades is not None and n_trades < 1:
            raise ValueError(f"n_trades must be >= 1, not {n_trades}")
        st.trading, st.paused, st.n_trades, st.trades_done = True, False, n_trades, 0
        st.started_ts = self.now
        return []

    def stop(self, symbol: str = "all", flatten: bool = False) -> list[Action]:
        out: list[Action] = []
        for st in self._targets(symbol):
            st.trading = False
            if flatten:
                self._close(st, "flatten", out)
        return out

    def flatten(self, symbol: str = "all", reason: str = "flatten") -> list[Action]:
        out: list[Action] = []
        for st in self._targets(symbol):
            self._close(st, reason, out)
        return out

    def pause(self, symbol: str = "all") -> list[Action]:
        for st in self._targets(symbol):
            st.paused = True
        return []

    def resume(self, symbol: str = "all") -> list[Action]:
        for st in self._targets(symbol):
            st.paused = False
        return []

    def reset_risk(self) -> list[Action]:
        """Lift a daily-loss or kill-switch halt. The daily loss budget restarts from here (the
        day's realised PnL so far is set aside), else the next fill would halt again at once."""
        if not self.halt_reason:
            return []
        was, self.halt_reason = self.halt_reason, ""
        before, self.day_realized = self.day_realized, ZERO
        self._cache_floats()
        return [
            RiskAlert(
                "risk_reset",
                "warning",
                message=f"{was} halt lifted by a manual reset",
                data={"day_realized_before": str(before)},
                ts_ns=self.now,
            )
        ]

    def kill(self, reason: str = "kill switch") -> list[Action]:
        """Stop everything and flatten every position; entries stay halted until ``reset_risk``."""
        self.halt_reason = "kill"
        out: list[Action] = [RiskAlert("kill_switch", "critical", message=reason, ts_ns=self.now)]
        for st in self.symbols.values():
            st.trading = False
            self._close(st, "flatten", out)
        return out

    def set_param(self, name: str, value: Any) -> list[Action]:
        """Set one parameter (text is parsed); ``ValueError`` naming it when invalid. A lowered
        daily loss limit that is already exceeded halts at once."""
        self.cfg = parse_param(self.cfg, name, value)
        self._cache_floats()
        for st in self.symbols.values():
            st.strat.reconfigure(self.cfg)
        out: list[Action] = []
        if not self.halt_reason and self.day_pnl() <= -self.cfg.daily_loss_limit:
            self._daily_halt(out)
        return out

    def pending_orders(self) -> list[OrderRequest]:
        """Orders sent and not finished (after a restart: look each up on the venue and feed the
        report to ``on_order``, its fills to ``on_fill``)."""
        return [p.req for st in self.symbols.values() for p in st.pending.values()]

    def add_instrument(self, inst: Instrument) -> None:
        self.instruments[inst.symbol] = inst
        self.symbols.setdefault(inst.symbol, SymbolState(inst, self.cfg))

    # ================================================================== helpers
    def _state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            raise ValueError(f"unknown symbol {symbol!r} (known: {', '.join(sorted(self.symbols))})")
        return st

    def _targets(self, symbol: str) -> list[SymbolState]:
        return list(self.symbols.values()) if symbol in ("all", "", "*") else [self._state(symbol)]
