"""Per-symbol state of the trading engine (plain data, persisted by ``snapshot``/``restore``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trader.config import TraderConfig
from trader.domain import ZERO, Instrument, OrderRequest, to_decimal
from trader.ledger import PositionLedger
from trader.strategy import Strategy

DAY_NS = 86_400 * 1_000_000_000


def book_ts(book: Any) -> int:
    """Event time of a book: ``ts`` if it has one, else ``ts_recv`` (when it was seen)."""
    ts = getattr(book, "ts", None)
    return int(ts) if ts is not None else int(book.ts_recv)


@dataclass
class PendingOrder:
    req: OrderRequest
    purpose: str  # "entry" / "exit"
    reason: str
    filled: Decimal = ZERO
    terminal: bool = False
    report_filled: Decimal = ZERO

    def done(self) -> bool:
        """All fills in: the whole quantity, or as much as the terminal report says."""
        return self.filled >= self.req.qty or (self.terminal and self.filled >= self.report_filled)


class SymbolState:
    def __init__(self, inst: Instrument, cfg: TraderConfig) -> None:
        self.inst = inst
        self.cv_f = float(inst.contract_value)
        self.strat = Strategy(cfg)
        self.led = PositionLedger(contract_value=inst.contract_value)
        # session / control
        self.trading = False
        self.paused = False
        self.n_trades: int | None = None
        self.trades_done = 0
        self.started_ts = 0
        # market data
        self.book: Any = None
        self.book_ts = 0
        self.bid = 0.0
        self.ask = 0.0
        self.book_valid = False
        self.book_reason = "no book yet"
        self.book_stale = False
        self.signal_stale = False
        self.data_halt = ""
        self.last_signal = ""
        self.last_score: float | None = None
        self.last_signal_ts = 0
        # orders / stops
        self.pending: dict[str, PendingOrder] = {}
        self.close_after = ""  # close once the entry in flight is done (flatten during an entry)
        self.retry_exit = ""  # re-send the rest of a partly filled exit on the next book
        self.exit_misses = 0
        self.fill_ids: dict[str, None] = {}  # recent venue fill ids, oldest first
        self.stop: Decimal | None = None
        self.stop_f = 0.0
        self.stop_kind = ""  # "initial" / "trailing"
        self.stop_triggered = False
        self.liq: Decimal | None = None
        self.extreme: Decimal | None = None  # best exit-side price since entry
        self.extreme_f = 0.0
        self.unreal_f = 0.0
        self.qty_f = 0.0  # float copies of the position for the per-book pre-checks
        self.avg_px_f = 0.0

    def sync_pos(self) -> None:
        """Refresh the float copies after the ledger changed."""
        self.qty_f = float(self.led.qty)
        self.avg_px_f = float(self.led.avg_price)

    def mark(self) -> Decimal | None:
        """Exit-side price of the position (bid for a long, ask for a short), else mid."""
        if self.bid <= 0 or self.ask <= 0:
            return None
        if self.led.side > 0:
            return to_decimal(self.bid)
        if self.led.side < 0:
            return to_decimal(self.ask)
        return (to_decimal(self.bid) + to_decimal(self.ask)) / 2

    def notional(self) -> Decimal:
        if not self.led.qty:
            return ZERO
        m = self.mark() or self.led.avg_price
        return self.led.qty * m * self.inst.contract_value

    def unrealized(self) -> Decimal:
        m = self.mark()
        return self.led.unrealized(m) if (m is not None and self.led.qty) else ZERO

    def unrealized_net(self, taker_fee: Decimal) -> Decimal:
        """Unrealised PnL minus the taker fee an exit at the mark would pay."""
        m = self.mark()
        if m is None or not self.led.qty:
            return ZERO
        return self.led.unrealized(m) - taker_fee * self.led.qty * m * self.inst.contract_value

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "trading": self.trading,
            "paused": self.paused,
            "n_trades": self.n_trades,
            "trades_done": self.trades_done,
            "started_ts": self.started_ts,
            "last_signal": self.last_signal,
            "last_score": self.last_score,
            "last_signal_ts": self.last_signal_ts,
            "ledger": self.led.to_dict(),
            "strategy": self.strat.to_dict(),
            "stop": None if self.stop is None else str(self.stop),
            "stop_kind": self.stop_kind,
            "extreme": None if self.extreme is None else str(self.extreme),
            "pending": [
                {"req": _req_dict(p.req), "purpose": p.purpose, "reason": p.reason, "filled": str(p.filled)}
                for p in self.pending.values()
            ],
            "close_after": self.close_after,
            "retry_exit": self.retry_exit,
            "fill_ids": list(self.fill_ids),
        }

    def load(self, d: dict[str, Any]) -> None:
        self.trading, self.paused = bool(d.get("trading")), bool(d.get("paused"))
        self.n_trades, self.trades_done = d.get("n_trades"), int(d.get("trades_done", 0))
        self.started_ts = int(d.get("started_ts", 0))
        self.last_signal, self.last_score = d.get("last_signal", ""), d.get("last_score")
        self.last_signal_ts = int(d.get("last_signal_ts", 0))
        self.led = PositionLedger.from_dict(d["ledger"]) if "ledger" in d else self.led
        self.sync_pos()
        self.strat.load(d.get("strategy", {}))
        self.stop = None if d.get("stop") is None else Decimal(d["stop"])
        self.stop_f = float(self.stop) if self.stop is not None else 0.0
        self.stop_kind = d.get("stop_kind", "")
        self.extreme = None if d.get("extreme") is None else Decimal(d["extreme"])
        self.extreme_f = float(self.extreme) if self.extreme is not None else 0.0
        self.pending = {}
        for p in d.get("pending", []):
            req = _req_from(p["req"])
            self.pending[req.client_order_id] = PendingOrder(req, p["purpose"], p["reason"], Decimal(p["filled"]))
        self.close_after = d.get("close_after", "")
        self.retry_exit = d.get("retry_exit", "")
        self.fill_ids = dict.fromkeys(d.get("fill_ids", []))


def _req_dict(r: OrderRequest) -> dict[str, Any]:
    return {
        "client_order_id": r.client_order_id,
        "exchange": r.exchange,
        "symbol": r.symbol,
        "side": r.side,
        "qty": str(r.qty),
        "order_type": r.order_type,
        "price": None if r.price is None else str(r.price),
        "reduce_only": r.reduce_only,
        "reason": r.reason,
        "ts_ns": r.ts_ns,
    }


def _req_from(d: dict[str, Any]) -> OrderRequest:
    return OrderRequest(
        d["client_order_id"],
        d["exchange"],
        d["symbol"],
        d["side"],
        Decimal(d["qty"]),
        d.get("order_type", "market"),
        None if d.get("price") is None else Decimal(d["price"]),
        bool(d.get("reduce_only")),
        d.get("reason", ""),
        int(d.get("ts_ns", 0)),
    )
