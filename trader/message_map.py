"""What the service adds to :mod:`trader.wire` (the pure action/report -> message mapping):
deterministic message ids and store records. Exact Decimals throughout.

* ``OrderRequest`` -> :class:`~depthpilot.messages.OrderIntent` (the intent id is derived from
  the client order id, so a re-sent intent is the same message and deduplicated downstream);
* ``OrderReport`` -> ``OrderUpdate``; ``FillReport`` -> ``Fill`` (message id derived from the
  venue's fill id, so a fill seen twice - poll and reconcile - is stored once);
* ``PositionChange`` -> ``PositionUpdate``; ``RiskAlert`` -> ``RiskEvent``;
* ``ClosedTrade`` -> a closed-trade record for the store (fields of ``control.TradeView``).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from depthpilot import messages as m
from trader import wire
from trader.actions import ClosedTrade, PositionChange, RiskAlert
from trader.domain import FillReport, OrderReport, OrderRequest, as_mode


def _id(*parts: object) -> str:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()


def intent_message(req: OrderRequest, signal_id: str = "") -> m.OrderIntent:
    msg = wire.order_intent(req, signal_id)
    msg.id = _id("intent", req.client_order_id)
    return msg


def order_update(rep: OrderReport, ts_ns: int) -> m.OrderUpdate:
    msg = wire.order_update(rep)
    msg.ts = rep.ts_ns or ts_ns
    msg.id = _id("order", rep.client_order_id, rep.status, rep.filled_qty, msg.ts)
    return msg


def fill_message(f: FillReport, ts_ns: int) -> m.Fill:
    msg = wire.fill(f)
    msg.ts = f.ts_ns or ts_ns
    msg.id = _id("fill", f.exchange, f.fill_id or f"{f.client_order_id}:{f.qty}:{f.price}:{f.ts_ns}")
    return msg


def position_message(
    pc: PositionChange, mode: str, mark: Decimal | None = None, unrealized: Decimal = Decimal(0)
) -> m.PositionUpdate:
    return wire.position_update(pc, as_mode(mode), unrealized, mark)


def risk_message(a: RiskAlert, source: str = "trader") -> m.RiskEvent:
    return wire.risk_event(a, source)


def trade_id(t: ClosedTrade) -> str:
    return _id("trade", t.exchange, t.symbol, t.side, t.entry_ts, t.exit_ts, t.qty, t.exit_price)


def closed_trade_record(t: ClosedTrade) -> dict[str, Any]:
    return {
        "exchange": t.exchange,
        "symbol": t.symbol,
        "side": t.side,
        "qty": t.qty,
        "entry_price": t.entry_price,
        "exit_price": t.exit_price,
        "entry_ts": t.entry_ts,
        "exit_ts": t.exit_ts,
        "gross_pnl": t.gross_pnl,
        "pnl": t.pnl,
        "fees": t.fees,
        "exit_reason": t.exit_reason,
    }


def trade_notification(t: ClosedTrade, mode: str) -> m.Notification:
    sign = "+" if t.pnl >= 0 else ""
    return m.Notification(
        level="trade",
        source="trader",
        title=f"{t.symbol} {t.side} closed ({t.exit_reason})",
        text=f"{t.qty} {t.symbol} {t.entry_price} -> {t.exit_price}: {sign}{t.pnl} after {t.fees} fees [{mode}]",
        data={"pnl": str(t.pnl), "fees": str(t.fees), "mode": mode},
    )


def signal_problem(sig: m.Signal) -> str:
    """Why a signal cannot be acted on as data ('' when it can): the service dead-letters it
    with this reason instead of feeding it to the engine."""
    import math

    if len(sig.classes) != len(sig.probs):
        return f"signal {sig.id}: {len(sig.classes)} classes but {len(sig.probs)} probabilities"
    if not all(isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in sig.probs):
        return f"signal {sig.id}: probabilities must be finite numbers in [0, 1], got {sig.probs}"
    if not math.isfinite(sig.score):
        return f"signal {sig.id}: score is not finite"
    return ""
