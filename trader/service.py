"""The trader service wiring: signals and books from the bus into the trading engine, orders
out through the execution worker, every trading message published (state class, publisher
confirmed) and stored, the control layer answered. The logic lives in pure modules
(``trader/engine.py`` and friends); the binding in :mod:`trader.runtime`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from depthpilot import messages as m
from depthpilot.control import ControlServer
from depthpilot.service import Service
from features.freshness import clock_mode
from trader import control_handlers
from trader import message_map as mm
from trader.engine import TradingEngine
from trader.runtime import TraderRuntime
from trader.settings_map import execution_plan, trader_config
from trader.venues import build_client, restore_paper

log = logging.getLogger("trader.service")


def _start(engine: TradingEngine, sym: str) -> list[Any]:
    return engine.start(sym)


def _set_param(engine: TradingEngine, name: str, value: Any) -> list[Any]:
    return engine.set_param(name, value)


class TraderService(Service):
    name = "trader"
    tick_interval_s = 0.25

    def setup(self) -> None:
        s = self.settings
        plan = execution_plan(s)
        if plan.note:
            log.warning("%s", plan.note)
        symbols = list(dict.fromkeys([*s.symbols, *s.trader_autostart]))
        client, insts = build_client(plan, s, symbols)
        key = f"trader:{plan.mode}:{plan.exchange}"
        engine = TraderRuntime.load_engine(
            self.store, key, lambda: TradingEngine(trader_config(s), insts, mode=plan.mode)
        )
        for sym, inst in insts.items():
            if sym not in engine.symbols:
                engine.add_instrument(inst)
        if plan.venue == "paper":
            restore_paper(client, self.store, plan.mode)
        self.plan = plan
        # Bybit pushes fills/orders/positions over its private WebSocket unless a REST base URL
        # without a stream URL was given (trader.execution.make_execution_client)
        replay = clock_mode(s.pipeline_clock, s.collector_source) == "replay"
        self._has_stream = plan.venue == "bybit" and bool(s.bybit_private_ws_url or not s.bybit_base_url)
        self.runtime = rt = TraderRuntime(
            engine,
            client,
            bus=self.bus,
            store=self.store,
            mode=plan.mode,
            exchange=plan.exchange,
            poll_interval_s=s.trader_poll_interval_s,
            state_key=key,
            source=self.name,
            replay_hold_s=s.trader_replay_hold_s if replay else None,
            snapshot_interval_s=s.trader_snapshot_interval_ms / 1000,
        )
        rt.start()
        self._apply_changed_settings(trader_config(s), key)
        self.control = ControlServer()
        control_handlers.register(self.control, rt, model_id=s.predictor_model)
        for sym in s.trader_autostart:
            rt.act(partial(_start, sym=sym))
            log.info("trading %s on %s (%s) from start-up (TRADER_AUTOSTART)", sym, plan.exchange, plan.mode)
        self._reconnects = self.bus.stats.reconnects
        self._venue_up = self._venue_stream_up()
        self.bus.subscribe("trader.book", self._on_book)
        self.bus.subscribe("trader.signals", self._on_signal)
        self.spawn(self._timer, "timer")

    def _apply_changed_settings(self, cfg: Any, key: str) -> None:
        """A restored engine keeps its parameters (``trade set`` survives a restart), except those
        whose setting changed since the last start: those take the new value (logged)."""
        from trader.config import config_to_dict

        now = config_to_dict(cfg)
        if self.store is None:
            return
        before = self.store.get_state(f"{key}:settings") or {}
        changed = {k: v for k, v in now.items() if before and before.get(k) != v}
        current = config_to_dict(self.runtime.engine.cfg)
        for name, value in changed.items():
            if current.get(name) != value:
                self.runtime.act(partial(_set_param, name=name, value=value))
                log.info("setting %s changed since the last start: now %s", name, value)
        self.store.set_state(f"{key}:settings", now)

    def teardown(self) -> None:
        rt = getattr(self, "runtime", None)
        if rt is not None:
            rt.stop()

    # ------------------------------------------------------------------ consumers
    def _on_book(self, msg: m.Message, _delivery: Any) -> None:
        if not isinstance(msg, m.BookSnapshot):
            raise TypeError(f"trader.book got a {msg.type_name}")
        if msg.exchange == self.runtime.exchange and msg.symbol in self.runtime.engine.symbols:
            self.runtime.on_book(msg)

    def _on_signal(self, msg: m.Message, _delivery: Any) -> None:
        if not isinstance(msg, m.Signal):
            raise TypeError(f"trader.signals got a {msg.type_name}")
        problem = mm.signal_problem(msg)
        if problem:
            raise ValueError(problem)  # the bus dead-letters it with this reason
        if msg.exchange == self.runtime.exchange:
            self.runtime.on_signal(msg)

    def _timer(self) -> None:
        while not self.stopping.wait(self.tick_interval_s):
            try:
                self.runtime.tick()
                venue_up = self._venue_stream_up()
                if self.bus.stats.reconnects != self._reconnects or venue_up and not self._venue_up:
                    # the broker or the venue's private stream came back: venue truth again
                    self._reconnects = self.bus.stats.reconnects
                    self.runtime.reconcile()
                self._venue_up = venue_up
                self.status = "degraded" if self.problems() else "ok"
            except Exception:  # noqa: BLE001 - logged; the next tick retries, status shows it
                log.exception("trader timer failed")
                self.status = "degraded"

    def _venue_stream_up(self) -> bool:
        """True while the venue's private stream is healthy (venues without one: always)."""
        healthy = getattr(self.runtime.client, "stream_healthy", None)
        return bool(healthy()) if callable(healthy) and self._has_stream else True

    # ------------------------------------------------------------------ control, health
    def handle_command(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        if cmd.command == "status":
            return {"mode": self.plan.mode, "exchange": self.plan.exchange}
        return self.control.handle(cmd)

    def problems(self) -> list[str]:
        rt = getattr(self, "runtime", None)
        if rt is None:
            return []
        if self.stopping.is_set():
            return []
        stream = getattr(rt.client, "stream_problem", "") if self._has_stream else ""
        return rt.problems() + ([stream] if isinstance(stream, str) and stream else [])

    def stats(self) -> dict[str, float]:
        rt = getattr(self, "runtime", None)
        if rt is None:
            return {}
        out = {k: float(v) for k, v in rt.counters.items()}
        out.update({f"exec_{k}": float(v) for k, v in rt.worker.counters.items()})
        out.update(outbox_queued=float(rt.outbox.queued()), outbox_backlog=float(rt.outbox.backlog()))
        if rt.replay is not None:
            out.update({f"replay_{k}": float(v) for k, v in rt.replay.counters.items()})
        with rt.lock:
            eng = rt.engine
            out["open_positions"] = float(sum(1 for st in eng.symbols.values() if st.led.qty))
            out["closed_trades_total"] = float(len(eng.closed))
            out["pnl_total"] = float(sum((t.pnl for t in eng.closed), start=0))
        return out


SERVICE = TraderService
