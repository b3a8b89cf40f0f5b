"""A small stand-in for the trader's control side (tests only): a ControlServer over a tiny
paper state, answering the ``trader.control`` queue (and ``notifier.control`` for /mute).

Like the service base should, it never executes a command past its ``expires_at``: such a
command is recorded in ``expired`` and dropped without a reply.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.bus import connect_bus
from depthpilot.topology import control_queue

D = Decimal


class PaperResponder:
    def __init__(self, amqp_url: str) -> None:
        self.bus = connect_bus(amqp_url, "trader")
        self.seen: list[m.ControlCommand] = []  # executed (or at least dispatched)
        self.expired: list[m.ControlCommand] = []
        self.lock = threading.Lock()
        self.trading: set[str] = set()
        self.paused: set[str] = set()
        self.params: dict[str, str] = {}
        self.halted = True
        self.muted: dict[int, bool] = {}
        self.positions: dict[str, c.PositionView] = {
            "BTCUSDT": c.PositionView(
                exchange="bybit",
                symbol="BTCUSDT",
                qty=D("0.010"),
                avg_price=D("50000.0"),
                mark_price=D("50500.0"),
                stop_price=D("49500"),
                unrealized_pnl=D("5.00"),
            ),
        }
        self.realized = D("0")
        self.closed: list[c.TradeView] = []
        s = c.ControlServer()
        s.register(c.StartTrading, self.start)
        s.register(c.StopTrading, self.stop)
        s.register(c.Flatten, self.flatten)
        s.register(c.PauseEntries, lambda r: self._flag(self.paused, r.symbol, True, "paused"))
        s.register(c.ResumeEntries, lambda r: self._flag(self.paused, r.symbol, False, "resumed"))
        s.register(c.ResetRisk, self.reset_risk)
        s.register(c.SetParameter, self.set_param)
        s.register(c.Status, self.status)
        s.register(c.Positions, lambda r: c.PositionsReply(positions=list(self.positions.values())))
        s.register(
            c.Balance,
            lambda r: c.BalanceReply(
                mode="paper", currency="USDT", equity=D("10005.00") + self.realized, available=D("9500.00")
            ),
        )
        s.register(
            c.Pnl,
            lambda r: c.PnlReply(
                period=r.period,
                since_ts=1_700_000_000_000_000_000,
                realized=self.realized,
                fees=D("0.55"),
                unrealized=D("5.00"),
                trades=len(self.closed),
                wins=sum(t.pnl > 0 for t in self.closed),
            ),
        )
        s.register(c.RecentTrades, lambda r: c.TradesReply(trades=self.closed[-r.n :]))
        s.register(
            c.RiskLimits,
            lambda r: c.RiskReply(
                limits={"max_position_usd": "1000", "daily_loss_usd": "100"},
                usage={"max_position_usd": "505.00", "daily_loss_usd": "0"},
                halted=self.halted,
                halt_reason="daily loss" if self.halted else "",
            ),
        )
        s.register(c.MuteNotifications, self.mute)
        self.server = s

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> "PaperResponder":
        self.bus.start()
        self.bus.subscribe(control_queue("trader"), self._on_control)
        self.bus.subscribe(control_queue("notifier"), self._on_control)
        return self

    def close(self) -> None:
        self.bus.close()

    def wait_seen(self, n: int, timeout: float = 5.0) -> list[m.ControlCommand]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.seen) >= n:
                    return list(self.seen)
            time.sleep(0.02)
        raise AssertionError(f"responder saw {len(self.seen)} commands, expected {n}")

    def _on_control(self, cmd: m.Message, delivery: Any) -> m.ControlReply | None:
        assert isinstance(cmd, m.ControlCommand)
        with self.lock:
            if cmd.expires_at and time.time_ns() > cmd.expires_at:
                self.expired.append(cmd)
                return None  # past its deadline: never executed, nobody waits for the reply
            self.seen.append(cmd)
        try:
            result = self.server.handle(cmd)
        except (c.ControlRejected, ValueError) as exc:
            return m.ControlReply(correlation_id=cmd.correlation_id, source="trader", ok=False, error=str(exc))
        if result is None:
            return m.ControlReply(
                correlation_id=cmd.correlation_id, source="trader", ok=False, error=f"unknown command {cmd.command!r}"
            )
        return m.ControlReply(correlation_id=cmd.correlation_id, source="trader", ok=True, result=result)

    # ------------------------------------------------------------------ handlers
    def start(self, r: c.StartTrading) -> c.Ack:
        if r.symbol not in ("BTCUSDT", "ETHUSDT"):
            raise c.ControlRejected(f"unknown symbol {r.symbol}")
        self.trading.add(r.symbol)
        return c.Ack(message=f"trading {r.symbol}" + (f" for {r.n_trades} trades" if r.n_trades else ""))

    def _close(self, symbol: str) -> list[str]:
        out = []
        for sym in [s for s in self.positions if symbol in ("all", s)]:
            p = self.positions.pop(sym)
            exit_px = p.mark_price or p.avg_price
            fees = D("0.55")
            pnl = (exit_px - p.avg_price) * p.qty - fees
            self.realized += pnl
            self.closed.append(
                c.TradeView(
                    exchange=p.exchange,
                    symbol=sym,
                    side="long" if p.qty > 0 else "short",
                    qty=abs(p.qty),
                    entry_price=p.avg_price,
                    exit_price=exit_px,
                    entry_ts=1,
                    exit_ts=time.time_ns(),
                    pnl=pnl,
                    fees=fees,
                    exit_reason="manual",
                )
            )
            out.append(f"{sym} closed at {exit_px} ({pnl:+} USDT)")
        return out

    def stop(self, r: c.StopTrading) -> c.Ack:
        self.trading -= {s for s in self.trading if r.symbol in ("all", s)}
        closed = self._close(r.symbol) if r.flatten else []
        return c.Ack(message=f"stopped {r.symbol}" + (("; " + ", ".join(closed)) if closed else "; positions kept"))

    def flatten(self, r: c.Flatten) -> c.Ack:
        closed = self._close(r.symbol)
        return c.Ack(message="; ".join(closed) or "nothing to flatten")

    def _flag(self, s: set[str], symbol: str, on: bool, word: str) -> c.Ack:
        (s.add if on else s.discard)(symbol)
        return c.Ack(message=f"entries {word} on {symbol}")

    def reset_risk(self, r: c.ResetRisk) -> c.Ack:
        self.halted = False
        return c.Ack(message="risk halt lifted")

    def set_param(self, r: c.SetParameter) -> c.Ack:
        if r.name not in ("max_position_usd", "trailing_lock_fraction"):
            raise c.ControlRejected(f"unknown parameter {r.name}")
        self.params[r.name] = r.value
        return c.Ack(message=f"{r.name} = {r.value}")

    def status(self, r: c.Status) -> c.StatusReply:
        syms = [
            c.SymbolStatus(
                symbol=s,
                exchange="bybit",
                trading=s in self.trading,
                paused=s in self.paused,
                last_signal="up",
                last_score=0.42,
                book_ok=True,
            )
            for s in ("BTCUSDT", "ETHUSDT")
        ]
        return c.StatusReply(
            mode="paper",
            halted=self.halted,
            halt_reason="daily loss" if self.halted else "",
            symbols=syms,
            model_id="book-default",
        )

    def mute(self, r: c.MuteNotifications) -> c.Ack:
        self.muted[r.chat_id] = r.muted
        return c.Ack(message=("muted" if r.muted else "unmuted") + f" chat {r.chat_id}")
