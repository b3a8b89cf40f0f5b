"""Control replies -> chat text (pure, plain text: nothing to escape, nothing to inject)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from depthpilot import control as c


def money(v: Decimal | float | int | str | None, places: int = 2) -> str:
    if v is None:
        return "-"
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{q:,}"


def signed(v: Decimal | float | int | str, places: int = 2) -> str:
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    return ("+" if d > 0 else "") + money(d, places)


def plain(v: Decimal | float | int | str | None) -> str:
    """A price or size as given (Decimal-exact, no trailing zeros beyond the value)."""
    if v is None:
        return "-"
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    s = format(d.normalize(), "f")
    return s


def ts(ns: int) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_status(r: c.StatusReply) -> str:
    lines = [
        f"Mode: {r.mode.upper()}" + ("  HALTED: " + (r.halt_reason or "yes") if r.halted else ""),
        f"Model: {r.model_id or '-'}",
    ]
    if not r.symbols:
        lines.append("No symbols configured.")
    for s in r.symbols:
        state = "paused" if s.paused else ("trading" if s.trading else "stopped")
        if s.trading and s.trades_left is not None:
            state += f" ({s.trades_left} trades left)"
        book = "book ok" if s.book_ok else f"book NOT ok ({s.book_reason or 'unknown'})"
        sig = (
            f"signal {s.last_signal} {s.last_score:+.2f}"
            if s.last_signal and s.last_score is not None
            else (f"signal {s.last_signal}" if s.last_signal else "no signal yet")
        )
        lines.append(f"{s.symbol}@{s.exchange}: {state}, {book}, {sig}")
    return "\n".join(lines)


def render_positions(r: c.PositionsReply) -> str:
    open_ = [p for p in r.positions if p.qty != 0]
    if not open_:
        return "No open positions."
    lines = ["Open positions:"]
    for p in open_:
        side = "LONG" if p.qty > 0 else "SHORT"
        line = f"{p.symbol} {side} {plain(abs(p.qty))} @ {plain(p.avg_price)}"
        if p.mark_price is not None:
            line += f", mark {plain(p.mark_price)}"
        line += f", uPnL {signed(p.unrealized_pnl)}"
        if p.stop_price is not None:
            line += f", stop {plain(p.stop_price)}"
        lines.append(line)
    return "\n".join(lines)


def render_balance(r: c.BalanceReply) -> str:
    return f"Balance ({r.mode}): equity {money(r.equity)} {r.currency}, available {money(r.available)} {r.currency}"


def render_pnl(r: c.PnlReply) -> str:
    rate = f", {r.wins}/{r.trades} won" if r.trades else ""
    return (
        f"PnL {r.period} (since {ts(r.since_ts)}): realized {signed(r.realized)} {r.currency} after "
        f"{money(r.fees)} fees, unrealized {signed(r.unrealized)}; {r.trades} trades{rate}"
    )


def render_trades(r: c.TradesReply) -> str:
    if not r.trades:
        return "No closed trades yet."
    lines = [f"Last {len(r.trades)} trades:"]
    for t in r.trades:
        lines.append(
            f"{ts(t.exit_ts)} {t.symbol} {t.side} {plain(t.qty)} {plain(t.entry_price)} -> "
            f"{plain(t.exit_price)}: {signed(t.pnl)} after {money(t.fees)} fees"
            + (f" ({t.exit_reason})" if t.exit_reason else "")
        )
    return "\n".join(lines)


def render_risk(r: c.RiskReply) -> str:
    lines = ["Risk" + ("  HALTED: " + (r.halt_reason or "yes") if r.halted else ": ok")]
    for name, limit in r.limits.items():
        used = r.usage.get(name)
        lines.append(f"{name}: {used} / {limit}" if used is not None else f"{name}: {limit}")
    for name, used in r.usage.items():
        if name not in r.limits:
            lines.append(f"{name}: {used}")
    return "\n".join(lines)


def render_ack(r: c.Ack) -> str:
    return f"Done: {r.message}"


_RENDER: dict[type, Any] = {
    c.StatusReply: render_status,
    c.PositionsReply: render_positions,
    c.BalanceReply: render_balance,
    c.PnlReply: render_pnl,
    c.TradesReply: render_trades,
    c.RiskReply: render_risk,
    c.Ack: render_ack,
}


def render(reply: c.Reply) -> str:
    fn = _RENDER.get(type(reply))
    if fn is None:
        return str(reply)
    return fn(reply)


def render_timeout(req: c.Request, timeout_s: float) -> str:
    return (
        f"Timed out: the {req.TARGET} did not answer /{req.COMMAND} within {timeout_s:g} s. "
        "The command expired and will NOT be executed later; check /status and try again."
    )


def render_rejected(err: Exception) -> str:
    return f"Refused by the service: {err}"
