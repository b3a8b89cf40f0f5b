"""What ``run-all`` shows while the demo trades: the latest signals (direction and score), open
positions, closed trades and PnL after fees, asked from the trader over the control layer
(the same requests the CLI and the Telegram bot send). On a terminal it is a rich table
refreshed in place; otherwise periodic one-line summaries; at the end a summary of trades."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from rich.console import Group
from rich.table import Table

from depthpilot import control as c


@dataclass
class TradingView:
    status: c.StatusReply | None = None
    positions: list[c.PositionView] = field(default_factory=list)
    pnl: c.PnlReply | None = None
    trades: list[c.TradeView] = field(default_factory=list)
    error: str = ""


R = TypeVar("R", bound=c.Reply)


def _ask(client: c.ControlClient, req: c.Request, reply_type: type[R], timeout_s: float) -> R:
    """``client.call`` with the reply's type: ``call`` converts the answer to the request's
    reply type (``c.REPLY_FOR``), so any other type is a mismatch of these two tables."""
    rep = client.call(req, timeout_s)
    if not isinstance(rep, reply_type):
        raise c.ControlError(f"{req.COMMAND}: expected {reply_type.__name__}, got {type(rep).__name__}")
    return rep


def fetch(client: c.ControlClient, timeout_s: float = 2.0, n_trades: int = 5) -> TradingView:
    v = TradingView()
    try:
        v.status = _ask(client, c.Status(), c.StatusReply, timeout_s)
        v.positions = _ask(client, c.Positions(), c.PositionsReply, timeout_s).positions
        v.pnl = _ask(client, c.Pnl(period="all"), c.PnlReply, timeout_s)
        v.trades = _ask(client, c.RecentTrades(n=n_trades), c.TradesReply, timeout_s).trades
    except c.ControlError as exc:
        v.error = str(exc)
    return v


def _q(x: Decimal | None, places: int = 4) -> str:
    return "" if x is None else str(x.quantize(Decimal(1).scaleb(-places)))


def _t(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S") if ns else ""


def line(v: TradingView) -> str:
    """One line for logs / non-terminals."""
    if v.error or v.status is None:
        return f"trader | {v.error or 'no answer'}"
    sigs = ", ".join(
        f"{s.symbol} {s.last_signal or '-'}" + (f" {s.last_score:+.2f}" if s.last_score is not None else "")
        for s in v.status.symbols
    )
    pos = (
        ", ".join(f"{p.symbol} {p.qty:+} @ {_q(p.avg_price, 2)} (uPnL {_q(p.unrealized_pnl)})" for p in v.positions)
        or "flat"
    )
    p = v.pnl
    pnl = (
        f"trades: {p.trades} | wins: {p.wins} | pnl after fees: {_q(p.realized)} USDT | fees: {_q(p.fees)}" if p else ""
    )
    halt = f" | HALTED {v.status.halt_reason}" if v.status.halted else ""
    return f"trader ({v.status.mode}) | signals: {sigs} | positions: {pos} | {pnl}{halt}"


def render(v: TradingView, pipeline: str) -> Any:
    """A rich renderable for the live view."""
    parts: list[Any] = [pipeline]
    if v.error or v.status is None:
        parts.append(f"[yellow]trader: {v.error or 'no answer yet'}[/yellow]")
        return Group(*parts)
    sig = Table(
        "symbol",
        "trading",
        "signal",
        "score",
        "at",
        "book",
        title=f"trader ({v.status.mode})" + (f" [red]HALTED {v.status.halt_reason}[/red]" if v.status.halted else ""),
    )
    for s in v.status.symbols:
        arrow = {"up": "[green]up[/green]", "down": "[red]down[/red]"}.get(s.last_signal, s.last_signal or "-")
        sig.add_row(
            s.symbol,
            "yes" if s.trading else "no",
            arrow,
            "" if s.last_score is None else f"{s.last_score:+.3f}",
            _t(s.last_signal_ts),
            "ok" if s.book_ok else (s.book_reason or "no book"),
        )
    parts.append(sig)
    pos = Table("symbol", "qty", "avg", "mark", "stop", "unrealized", title="open positions")
    for p in v.positions:
        pos.add_row(
            p.symbol, str(p.qty), _q(p.avg_price, 2), _q(p.mark_price, 2), _q(p.stop_price, 2), _q(p.unrealized_pnl)
        )
    parts.append(pos if v.positions else "open positions: none")
    tr = Table("exit", "symbol", "side", "qty", "entry", "exit", "pnl", "reason", title="recent trades")
    for t in v.trades:
        tr.add_row(
            _t(t.exit_ts),
            t.symbol,
            t.side,
            str(t.qty),
            _q(t.entry_price, 2),
            _q(t.exit_price, 2),
            _q(t.pnl),
            t.exit_reason,
        )
    parts.append(tr if v.trades else "recent trades: none yet")
    if v.pnl is not None:
        parts.append(
            f"PnL after fees: [bold]{_q(v.pnl.realized)} {v.pnl.currency}[/bold] over {v.pnl.trades} trades "
            f"({v.pnl.wins} won), fees {_q(v.pnl.fees)}, unrealized {_q(v.pnl.unrealized)}"
        )
    return Group(*parts)


def summary(v: TradingView) -> str:
    """The end-of-run summary line (``summary | trades: N | ... | pnl after fees: X USDT``)."""
    if v.pnl is None:
        return f"summary | trader: {v.error or 'no answer'}"
    p = v.pnl
    return (
        f"summary | trades: {p.trades} | wins: {p.wins} | pnl after fees: {_q(p.realized)} {p.currency} | "
        f"fees: {_q(p.fees)} | unrealized: {_q(p.unrealized)} | open positions: {len(v.positions)}"
    )
