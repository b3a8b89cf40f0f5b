"""Trading events -> chat messages (pure: messages in, text out; no I/O, no clock).

:class:`TradeTracker` follows each position through the trader's ``OrderUpdate`` / ``Fill`` /
``PositionUpdate`` events and emits an *open* message when a position appears and a *close*
message when it goes flat: side, size, entry/exit, PnL after fees, and the reason of the
order that closed it (signal / stop / trailing stop / limit / manual). PnL comes from the
trade's own fills (exact Decimal); if the fills were not seen (e.g. the notifier started
mid-trade) it falls back to the position's cumulative ``realized_pnl - fees_paid`` deltas.
Money fields may be Decimal (messages v2) or float (v1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from depthpilot import messages as m

ZERO = Decimal(0)
REASONS = {
    "signal": "signal",
    "stop": "stop loss",
    "trailing_stop": "trailing stop",
    "limit": "take-profit limit",
    "manual": "manual",
    "flatten": "manual (flatten)",
}
LEVEL_ICON = {"info": "", "trade": "💱", "warning": "⚠️", "error": "❗", "critical": "🚨"}


def dec(v: Any) -> Decimal:
    if v is None:
        return ZERO
    if isinstance(v, Decimal):
        return v
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def num(v: Any) -> str:
    """A price/size as given, without float noise or trailing zeros."""
    d = dec(v)
    s = format(d.normalize(), "f")
    return s


def usd(v: Any) -> str:
    d = dec(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return ("+" if d > 0 else "") + f"{d:,}"


def reason_text(r: str) -> str:
    return REASONS.get(r, r or "unknown")


@dataclass
class OutMsg:
    """One message to send. ``key`` is stable for the event (dedup across redeliveries)."""

    key: str
    text: str
    level: str = "info"
    symbol: str = ""


@dataclass
class _Trade:
    side: int  # +1 long, -1 short
    mode: str = ""
    qty_in: Decimal = ZERO
    notional_in: Decimal = ZERO
    qty_out: Decimal = ZERO
    notional_out: Decimal = ZERO
    fees: Decimal = ZERO
    open_reason: str = ""
    close_reason: str = ""
    base_realized: Decimal = ZERO  # the position's cumulative realized PnL / fees before this trade
    base_fees: Decimal = ZERO
    entry_avg: Decimal = ZERO

    _DEC = ("qty_in", "notional_in", "qty_out", "notional_out", "fees", "base_realized", "base_fees", "entry_avg")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "_Trade":
        kwargs: dict[str, Any] = {k: (Decimal(v) if k in cls._DEC else v) for k, v in d.items()}
        return cls(**kwargs)


@dataclass
class _Book:
    qty: Decimal = ZERO  # from PositionUpdate
    fill_qty: Decimal = ZERO  # from fills
    realized: Decimal = ZERO  # cumulative, from PositionUpdate
    fees_paid: Decimal = ZERO
    trade: _Trade | None = None  # the open trade
    done: list[_Trade] = field(default_factory=list)  # closed by fills, waiting for the flat PositionUpdate


def _sgn(d: Decimal) -> int:
    return (d > 0) - (d < 0)


class TradeTracker:
    def __init__(self) -> None:
        self.books: dict[tuple[str, str], _Book] = {}
        self.reasons: dict[str, str] = {}  # client order id -> reason (bounded)

    # ------------------------------------------------------------------ events
    def on_event(self, msg: m.Message) -> list[OutMsg]:
        if isinstance(msg, m.OrderUpdate):
            return self.on_order(msg)
        if isinstance(msg, m.Fill):
            self.on_fill(msg)
            return []
        if isinstance(msg, m.PositionUpdate):
            return self.on_position(msg)
        return []

    def on_order(self, u: m.OrderUpdate) -> list[OutMsg]:
        if u.reason and u.status in ("new", "accepted", "partially_filled", "filled"):
            self.reasons[u.client_order_id] = u.reason
            if len(self.reasons) > 5000:
                self.reasons.pop(next(iter(self.reasons)))
        if u.status == "rejected":
            side = u.side.value if isinstance(u.side, m.Side) else str(u.side)
            return [
                OutMsg(
                    u.id,
                    f"❗ ORDER REJECTED {side.upper()} {num(u.qty)} {u.symbol} on {u.exchange}: "
                    f"{u.reason or 'no reason given'}",
                    "error",
                    u.symbol,
                )
            ]
        return []

    def on_fill(self, f: m.Fill) -> None:
        b = self.books.setdefault((f.exchange, f.symbol), _Book())
        sign = 1 if f.side in (m.Side.BUY, "buy") else -1
        qty, px, fee = dec(f.qty), dec(f.price), dec(f.fee)
        if qty <= 0:
            return
        reason = self.reasons.get(f.client_order_id, "")
        before = b.fill_qty
        after = before + sign * qty
        close_part = min(qty, abs(before)) if before != 0 and sign != _sgn(before) else ZERO
        open_part = qty - close_part
        if close_part and b.trade is not None:
            t = b.trade
            t.qty_out += close_part
            t.notional_out += close_part * px
            t.fees += fee * close_part / qty
            t.close_reason = reason or t.close_reason
            if after == 0 or _sgn(after) != t.side:
                b.done.append(t)
                b.trade = None
        if open_part:
            if b.trade is None:
                b.trade = _Trade(side=sign, open_reason=reason, base_realized=b.realized, base_fees=b.fees_paid)
            t = b.trade
            t.qty_in += open_part
            t.notional_in += open_part * px
            t.fees += fee * open_part / qty
            t.open_reason = t.open_reason or reason
        b.fill_qty = after

    def on_position(self, p: m.PositionUpdate) -> list[OutMsg]:
        b = self.books.setdefault((p.exchange, p.symbol), _Book())
        prev, new = b.qty, dec(p.qty)
        out: list[OutMsg] = []
        if prev != 0 and (new == 0 or _sgn(new) != _sgn(prev)):
            out.append(self._close(p, b, prev))
        if new != 0 and (prev == 0 or _sgn(new) != _sgn(prev)):
            out.append(self._open(p, b, new))
        b.qty, b.realized, b.fees_paid = new, dec(p.realized_pnl), dec(p.fees_paid)
        return out

    # ------------------------------------------------------------------ messages
    def _open(self, p: m.PositionUpdate, b: _Book, new: Decimal) -> OutMsg:
        side = _sgn(new)
        if b.trade is None or b.trade.side != side:  # the fills have not been seen (yet)
            b.trade = _Trade(side=side, base_realized=b.realized, base_fees=b.fees_paid)
        t = b.trade
        t.mode = p.mode
        t.entry_avg = dec(p.avg_price)
        text = (
            f"🟢 OPEN {'LONG' if side > 0 else 'SHORT'} {num(abs(new))} {p.symbol} @ {num(p.avg_price)} "
            f"[{p.mode}, {p.exchange}]\nreason: {reason_text(t.open_reason)}"
        )
        if p.stop_price is not None:
            text += f" · stop {num(p.stop_price)}"
        return OutMsg(f"{p.id}:open", text, "trade", p.symbol)

    def _close(self, p: m.PositionUpdate, b: _Book, prev: Decimal) -> OutMsg:
        size = abs(prev)
        if b.done:
            t: _Trade | None = b.done.pop(0)
            exact = t is not None and t.qty_in == size and t.qty_out == size
        else:
            t, b.trade = b.trade, None  # closed before its fills arrived (or they were never seen)
            exact = False
        if t is None:
            t = _Trade(side=_sgn(prev), base_realized=b.realized, base_fees=b.fees_paid, entry_avg=dec(p.avg_price))
        entry = t.notional_in / t.qty_in if t.qty_in and exact else (t.entry_avg or dec(p.avg_price))
        exit_px: Decimal | None = None
        if exact:
            exit_px = t.notional_out / t.qty_out
            gross = (t.notional_out - t.notional_in) * t.side
            fees = t.fees
        else:  # the position's cumulative figures (realized_pnl is before fees)
            gross = dec(p.realized_pnl) - t.base_realized
            fees = dec(p.fees_paid) - t.base_fees
        pnl = gross - fees
        pct = f" ({(pnl / (entry * size) * 100).quantize(Decimal('0.01')):+}%)" if entry and size else ""
        icon = "✅" if pnl > 0 else "🔻"
        side = "LONG" if prev > 0 else "SHORT"
        exit_s = num(exit_px) if exit_px is not None else (num(p.mark_price) if p.mark_price is not None else "?")
        text = (
            f"{icon} CLOSE {side} {num(size)} {p.symbol} {num(entry)} → {exit_s} [{t.mode or p.mode}, {p.exchange}]"
            f"\nPnL {usd(pnl)} USDT after {usd(fees).lstrip('+')} fees{pct} · reason: {reason_text(t.close_reason)}"
        )
        return OutMsg(f"{p.id}:close", text, "trade", p.symbol)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "reasons": dict(list(self.reasons.items())[-1000:]),
            "books": [
                {
                    "exchange": ex,
                    "symbol": sym,
                    "qty": str(b.qty),
                    "fill_qty": str(b.fill_qty),
                    "realized": str(b.realized),
                    "fees_paid": str(b.fees_paid),
                    "trade": b.trade.to_dict() if b.trade else None,
                    "done": [t.to_dict() for t in b.done],
                }
                for (ex, sym), b in self.books.items()
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TradeTracker":
        tr = cls()
        if not d:
            return tr
        tr.reasons = dict(d.get("reasons", {}))
        for bd in d.get("books", []):
            tr.books[(bd["exchange"], bd["symbol"])] = _Book(
                qty=Decimal(bd["qty"]),
                fill_qty=Decimal(bd["fill_qty"]),
                realized=Decimal(bd["realized"]),
                fees_paid=Decimal(bd["fees_paid"]),
                trade=_Trade.from_dict(bd["trade"]) if bd.get("trade") else None,
                done=[_Trade.from_dict(t) for t in bd.get("done", [])],
            )
        return tr


# ---------------------------------------------------------------------- other events


def format_risk(e: m.RiskEvent) -> OutMsg:
    where = " ".join(x for x in (e.exchange, e.symbol) if x)
    icon = LEVEL_ICON.get(e.severity, "⚠️")
    text = (
        f"{icon} {e.severity.upper()} {e.kind}"
        + (f" ({where})" if where else "")
        + (f" from {e.source}" if e.source else "")
    )
    if e.message:
        text += f"\n{e.message}"
    level = "critical" if e.severity == "critical" else ("error" if e.severity == "warning" else "info")
    return OutMsg(e.id, text, level, e.symbol)


def format_notification(n: m.Notification) -> OutMsg:
    icon = LEVEL_ICON.get(n.level, "")
    head = f"{icon} {n.title}".strip()
    text = head + (f"\n{n.text}" if n.text else "") if n.title else f"{icon} {n.text}".strip()
    return OutMsg(n.id, text, n.level, str(n.data.get("symbol", "")))


class RiskThrottle:
    """Book-health and similar warnings repeat; one message per (kind, exchange, symbol) per
    ``window_ns`` (by event time). Critical events always pass."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self.last: dict[tuple[str, str, str], int] = {}

    def allow(self, e: m.RiskEvent) -> bool:
        if e.severity == "critical":
            return True
        if e.severity == "info":
            return False
        k = (e.kind, e.exchange, e.symbol)
        last = self.last.get(k)
        if last is not None and 0 <= e.ts - last < self.window_ns:
            return False
        self.last[k] = e.ts
        return True


def format_daily_summary(day: date, pnl: Any | None, error: str = "") -> str:
    """``pnl`` is a control ``PnlReply`` (or None when the trader did not answer)."""
    if pnl is None:
        return f"📊 Daily summary {day.isoformat()}: the trader did not answer ({error or 'no reply'})."
    win = f", {pnl.wins}/{pnl.trades} won" if pnl.trades else ""
    return (
        f"📊 Daily summary {day.isoformat()}\nrealized {usd(pnl.realized)} {pnl.currency} after "
        f"{usd(pnl.fees).lstrip('+')} fees · unrealized {usd(pnl.unrealized)}\n{pnl.trades} trades{win}"
    )


def next_daily_run(now: datetime, hhmm: str) -> datetime:
    """The next time ``hh:mm`` UTC strictly after ``now`` (a tz-aware UTC datetime)."""
    from datetime import timedelta

    h, mi = (int(x) for x in hhmm.split(":"))
    run = now.replace(hour=h, minute=mi, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)
