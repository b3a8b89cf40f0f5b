"""Trading commands over the control layer (:class:`depthpilot.control.ControlClient`): the
CLI is a thin adapter, every command is a typed request answered by the trader service.

``depthpilot trade start BTCUSDT [--n 3]``, ``trade stop [SYMBOL|all] [--flatten]``,
``trade flatten``, ``trade pause|resume``, ``trade risk-reset``, ``trade set NAME VALUE``;
queries ``depthpilot status|positions|balance|pnl [today|7d|all]|trades [-n N]|risk`` (also
under ``trade``). Rich tables; errors are one line; exit code 0 = done, 1 = the trader refused
or did not answer in time (the command then expired and will not be executed), 2 = bad input.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table

from depthpilot import control as c
from depthpilot_cli.common import app, console, settings

trade_app = typer.Typer(no_args_is_help=True, help="Trade through the trader service (start, stop, flatten, ...)")
app.add_typer(trade_app, name="trade")


class _Out:
    """stdout console made per use, so the terminal width (or COLUMNS) is read when printing."""

    def print(self, *objects: Any, **kw: Any) -> None:
        Console().print(*objects, **kw)


out = _Out()

PNL_PERIODS: tuple[Literal["today", "7d", "all"], ...] = ("today", "7d", "all")  # c.Pnl.period
TIMEOUT = typer.Option(5.0, "--timeout", help="seconds to wait; the command expires after that")


def _call(req: c.Request, timeout: float) -> Any:
    from depthpilot.bus import connect_bus

    s = settings()
    try:
        bus = connect_bus(s.amqp_url, "cli").start()
    except Exception as exc:  # noqa: BLE001 - one line, exit 1
        console.print(f"[red]cannot reach the bus: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        return c.ControlClient(bus, requested_by="cli", timeout_s=timeout).call(req)
    except c.ControlError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)  # one line, whatever the width
        raise typer.Exit(1) from None
    finally:
        bus.close()


def _ts(ns: int | None) -> str:
    if not ns:
        return ""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _money(x: Decimal | None, places: int = 4) -> str:
    if x is None:
        return ""
    q = Decimal(1).scaleb(-places)
    return f"{x.quantize(q):,}" if abs(x) < Decimal("1e15") else str(x)


def _ack(rep: c.Ack) -> None:
    out.print(f"[green]{rep.message}[/green]")


# ------------------------------------------------------------------ actions


@trade_app.command("start")
def start(
    symbol: str = typer.Argument(..., help="e.g. BTCUSDT"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="stop after N round trips"),
    exchange: str = typer.Option("", help="venue (default: the trader's)"),
    timeout: float = TIMEOUT,
) -> None:
    """Start trading SYMBOL (optionally for N trades)."""
    _ack(_call(c.StartTrading(symbol=symbol.upper(), exchange=exchange, n_trades=n), timeout))


@trade_app.command("stop")
def stop(
    symbol: str = typer.Argument("all"),
    flatten: bool = typer.Option(False, "--flatten", help="also close positions"),
    timeout: float = TIMEOUT,
) -> None:
    """Stop entries on SYMBOL (or all); --flatten also closes the open positions."""
    _ack(_call(c.StopTrading(symbol=symbol if symbol == "all" else symbol.upper(), flatten=flatten), timeout))


@trade_app.command("flatten")
def flatten(
    symbol: str = typer.Argument("all"),
    yes: bool = typer.Option(False, "--yes", "-y", help="no confirmation"),
    timeout: float = TIMEOUT,
) -> None:
    """Close the open positions of SYMBOL (or all) at market."""
    if not yes and not typer.confirm(f"close every position of {symbol} at market?"):
        raise typer.Exit(1)
    _ack(_call(c.Flatten(symbol=symbol if symbol == "all" else symbol.upper()), timeout))


@trade_app.command("pause")
def pause(symbol: str = typer.Argument("all"), timeout: float = TIMEOUT) -> None:
    """Pause new entries (positions keep being managed)."""
    _ack(_call(c.PauseEntries(symbol=symbol if symbol == "all" else symbol.upper()), timeout))


@trade_app.command("resume")
def resume(symbol: str = typer.Argument("all"), timeout: float = TIMEOUT) -> None:
    """Resume entries."""
    _ack(_call(c.ResumeEntries(symbol=symbol if symbol == "all" else symbol.upper()), timeout))


@trade_app.command("risk-reset")
def risk_reset(yes: bool = typer.Option(False, "--yes", "-y"), timeout: float = TIMEOUT) -> None:
    """Lift a daily-loss or kill-switch halt before the next UTC day."""
    if not yes and not typer.confirm("lift the risk halt and allow entries again?"):
        raise typer.Exit(1)
    _ack(_call(c.ResetRisk(), timeout))


@trade_app.command("set")
def set_param(name: str = typer.Argument(...), value: str = typer.Argument(...), timeout: float = TIMEOUT) -> None:
    """Set one strategy/risk parameter (validated by the trader)."""
    _ack(_call(c.SetParameter(name=name, value=value), timeout))


# ------------------------------------------------------------------ queries


def status(timeout: float = TIMEOUT) -> None:
    """Trading status: mode, halts, per-symbol state and the latest signal."""
    rep: c.StatusReply = _call(c.Status(), timeout)
    halt = f"[red]HALTED: {rep.halt_reason}[/red]" if rep.halted else "[green]not halted[/green]"
    out.print(f"mode [bold]{rep.mode}[/bold], {halt}, model {rep.model_id or '-'}")
    t = Table("symbol", "exchange", "trading", "paused", "trades left", "signal", "score", "signal time", "book")
    for s in rep.symbols:
        t.add_row(
            s.symbol,
            s.exchange,
            "yes" if s.trading else "no",
            "yes" if s.paused else "no",
            "" if s.trades_left is None else str(s.trades_left),
            s.last_signal or "-",
            "" if s.last_score is None else f"{s.last_score:+.3f}",
            _ts(s.last_signal_ts),
            "ok" if s.book_ok else f"[yellow]{s.book_reason or 'no book'}[/yellow]",
        )
    out.print(t)


def positions(timeout: float = TIMEOUT) -> None:
    """Open positions with marks, stops and PnL."""
    rep: c.PositionsReply = _call(c.Positions(), timeout)
    if not rep.positions:
        out.print("no open positions")
        return
    t = Table("symbol", "exchange", "qty", "avg price", "mark", "stop", "unrealized", "realized", "fees", "opened")
    for p in rep.positions:
        t.add_row(
            p.symbol,
            p.exchange,
            str(p.qty),
            str(p.avg_price),
            str(p.mark_price or ""),
            str(p.stop_price or ""),
            _money(p.unrealized_pnl),
            _money(p.realized_pnl),
            _money(p.fees_paid),
            _ts(p.opened_ts),
        )
    out.print(t)


def balance(timeout: float = TIMEOUT) -> None:
    """Account equity and available margin."""
    rep: c.BalanceReply = _call(c.Balance(), timeout)
    out.print(
        f"{rep.mode}: equity {_money(rep.equity)} {rep.currency}, available {_money(rep.available)} {rep.currency}"
    )


def pnl(period: str = typer.Argument("today", help="today, 7d or all"), timeout: float = TIMEOUT) -> None:
    """PnL after fees for today, the last 7 days or all time."""
    if period not in PNL_PERIODS:
        console.print(f"[red]period must be today, 7d or all, not {period!r}[/red]")
        raise typer.Exit(2)
    rep: c.PnlReply = _call(c.Pnl(period=period), timeout)
    t = Table("period", "since", "realized (after fees)", "fees", "unrealized", "trades", "wins")
    t.add_row(
        rep.period,
        _ts(rep.since_ts) or "-",
        _money(rep.realized),
        _money(rep.fees),
        _money(rep.unrealized),
        str(rep.trades),
        str(rep.wins),
    )
    out.print(t)


def trades(n: int = typer.Option(10, "-n", min=1, help="how many"), timeout: float = TIMEOUT) -> None:
    """The most recent closed trades (PnL after fees)."""
    rep: c.TradesReply = _call(c.RecentTrades(n=n), timeout)
    if not rep.trades:
        out.print("no closed trades")
        return
    t = Table("exit time", "symbol", "side", "qty", "entry", "exit", "pnl", "fees", "reason")
    for x in rep.trades:
        t.add_row(
            _ts(x.exit_ts),
            x.symbol,
            x.side,
            str(x.qty),
            str(x.entry_price),
            str(x.exit_price),
            _money(x.pnl),
            _money(x.fees),
            x.exit_reason,
        )
    out.print(t)


def risk(timeout: float = TIMEOUT) -> None:
    """Risk limits and their current usage."""
    rep: c.RiskReply = _call(c.RiskLimits(), timeout)
    t = Table("limit", "value")
    for k, v in rep.limits.items():
        t.add_row(k, v)
    u = Table("usage", "value")
    for k, v in rep.usage.items():
        u.add_row(k, v)
    out.print(t, u)
    if rep.halted:
        out.print(f"[red]HALTED: {rep.halt_reason}[/red]")


for _fn in (status, positions, balance, pnl, trades, risk):
    app.command(_fn.__name__)(_fn)
    trade_app.command(_fn.__name__)(_fn)
