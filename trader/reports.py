"""The trading engine's queries (as :mod:`depthpilot.control` replies) and its persistence
(``snapshot``/``restore``). Functions over a :class:`trader.engine.TradingEngine`, bound to it as
methods, so the service forwards a control request straight to the engine."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from depthpilot.control import (
    PnlReply,
    PositionsReply,
    PositionView,
    RiskReply,
    StatusReply,
    SymbolStatus,
    TradesReply,
)
from trader.actions import ClosedTrade
from trader.config import config_from_dict, config_to_dict
from trader.domain import ZERO, Instrument, as_mode
from trader.engine_state import DAY_NS
from trader.wire import trade_view

if TYPE_CHECKING:
    from trader.engine import TradingEngine

SNAPSHOT_VERSION = 1
Period = Literal["today", "7d", "all"]


def status(eng: "TradingEngine", model_id: str = "") -> StatusReply:
    syms = []
    for s, st in sorted(eng.symbols.items()):
        left = None if st.n_trades is None else max(st.n_trades - st.trades_done, 0)
        syms.append(
            SymbolStatus(
                symbol=s,
                exchange=st.inst.exchange,
                trading=st.trading,
                paused=st.paused,
                trades_left=left,
                last_signal=st.last_signal,
                last_score=st.last_score,
                last_signal_ts=st.last_signal_ts,
                book_ok=st.book_valid and not st.book_stale,
                book_reason=st.data_halt or st.book_reason,
            )
        )
    return StatusReply(
        mode=eng.mode,
        halted=bool(eng.halt_reason),
        halt_reason=eng.halt_reason,
        symbols=syms,
        model_id=model_id,
        data={"counters": dict(eng.counters), "now": eng.now},
    )


def positions(eng: "TradingEngine") -> PositionsReply:
    out = []
    for s, st in sorted(eng.symbols.items()):
        led = st.led
        if not led.qty:
            continue
        out.append(
            PositionView(
                exchange=st.inst.exchange,
                symbol=s,
                qty=led.signed_qty,
                avg_price=led.avg_price,
                mark_price=st.mark(),
                stop_price=st.stop,
                unrealized_pnl=st.unrealized(),
                realized_pnl=led.realized,
                fees_paid=led.fees,
                opened_ts=led.trip.entry_ts,
            )
        )
    return PositionsReply(positions=out)


def pnl(eng: "TradingEngine", period: str = "today", now_ns: int | None = None) -> PnlReply:
    """Closed trades exiting in the period (PnL after fees) plus the open positions' unrealised."""
    now = now_ns if now_ns is not None else eng.now
    span: Period
    if period == "today":
        span, since = "today", (now // DAY_NS) * DAY_NS
    elif period == "7d":
        span, since = "7d", now - 7 * DAY_NS
    elif period == "all":
        span, since = "all", 0
    else:
        raise ValueError(f"period must be today, 7d or all, not {period!r}")
    trades = [t for t in eng.closed if t.exit_ts >= since]
    realized = sum((t.pnl for t in trades), ZERO)
    fees = sum((t.fees for t in trades), ZERO)
    unreal = sum((st.unrealized() for st in eng.symbols.values()), ZERO)
    return PnlReply(
        period=span,
        since_ts=since,
        realized=realized,
        fees=fees,
        unrealized=unreal,
        trades=len(trades),
        wins=sum(1 for t in trades if t.pnl > 0),
    )


def trades(eng: "TradingEngine", n: int = 10) -> TradesReply:
    return TradesReply(trades=[trade_view(t) for t in eng.closed[-n:][::-1]] if n > 0 else [])


def risk(eng: "TradingEngine") -> RiskReply:
    c = eng.cfg
    limits = {
        k: str(getattr(c, k))
        for k in (
            "budget",
            "leverage",
            "max_order_notional",
            "max_position_notional",
            "max_total_exposure",
            "daily_loss_limit",
            "max_loss_fraction",
            "maintenance_margin_rate",
            "trailing_lock_fraction",
            "max_book_age_s",
            "max_signal_age_s",
        )
    }
    usage: dict[str, str] = {"day_realized": str(eng.day_realized), "day_pnl": str(eng.day_pnl())}
    total = biggest = ZERO
    for s, st in sorted(eng.symbols.items()):
        n = st.notional()
        total += n
        biggest = max(biggest, n)
        if st.led.qty:
            usage[f"position_notional.{s}"] = str(n)
            usage[f"stop.{s}"] = str(st.stop)
        if st.data_halt:
            usage[f"data_halt.{s}"] = st.data_halt
    # usage of a limit is keyed by the limit's name (the bot renders "used / limit")
    usage["max_total_exposure"] = str(total)
    usage["max_position_notional"] = str(biggest)
    usage["daily_loss_limit"] = str(max(ZERO, -eng.day_pnl()))
    return RiskReply(limits=limits, usage=usage, halted=bool(eng.halt_reason), halt_reason=eng.halt_reason)


# --------------------------------------------------------------------------- persistence


def _trade_dict(t: ClosedTrade) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in t.__dict__.items()}


def _trade_from(d: dict[str, Any]) -> ClosedTrade:
    dec = {"qty", "entry_price", "exit_price", "gross_pnl", "fees", "pnl"}
    fields: dict[str, Any] = {k: (Decimal(v) if k in dec else v) for k, v in d.items()}
    return ClosedTrade(**fields)


def _inst_dict(i: Instrument) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in i.__dict__.items()}


def _inst_from(d: dict[str, Any]) -> Instrument:
    dec = {"tick_size", "lot_step", "min_qty", "min_notional", "max_qty", "contract_value", "max_leverage"}
    fields: dict[str, Any] = {k: (Decimal(v) if k in dec and v is not None else v) for k, v in d.items()}
    return Instrument(**fields)


def snapshot(eng: "TradingEngine") -> dict[str, Any]:
    """JSON-able state: config, instruments, positions (FIFO lots), stops, trailing extremes,
    sessions, halts, the day's PnL and every closed trade. Store it after each action batch."""
    return {
        "version": SNAPSHOT_VERSION,
        "mode": eng.mode,
        "now": eng.now,
        "day": eng.day,
        "day_realized": str(eng.day_realized),
        "halt_reason": eng.halt_reason,
        "seq": eng.seq,
        "config": config_to_dict(eng.cfg),
        "counters": dict(eng.counters),
        "instruments": [_inst_dict(i) for i in eng.instruments.values()],
        "symbols": {s: st.to_dict() for s, st in eng.symbols.items()},
        "closed": [_trade_dict(t) for t in eng.closed],
    }


def restore(cls: "type[TradingEngine]", d: dict[str, Any]) -> "TradingEngine":
    """Rebuild an engine from :func:`snapshot`. Book validity is not restored (a restarted engine
    waits for fresh books before entering); then feed the venue's positions (``on_position``) to
    reconcile anything that happened while it was down."""
    if d.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"trader snapshot version {d.get('version')!r} is not {SNAPSHOT_VERSION}")
    insts = {i["symbol"]: _inst_from(i) for i in d["instruments"]}
    eng = cls(config_from_dict(d["config"]), insts, mode=as_mode(d.get("mode", "paper")))
    eng.now, eng.day = int(d["now"]), int(d["day"])
    eng._day_end = (eng.day + 1) * DAY_NS if eng.day >= 0 else 0
    eng.day_realized, eng.halt_reason, eng.seq = Decimal(d["day_realized"]), d["halt_reason"], int(d["seq"])
    eng.counters.update(d.get("counters", {}))
    for s, sd in d["symbols"].items():
        eng.symbols[s].load(sd)
    eng.closed = [_trade_from(t) for t in d["closed"]]
    eng._cache_floats()
    return eng
