"""Risk arithmetic: entry sizing within the instrument's rules and exposure caps, the isolated
margin liquidation price of a linear perpetual, the initial stop (always inside liquidation),
and the trailing-stop ratchet. Pure functions over ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from trader.config import TraderConfig
from trader.domain import ZERO, Instrument

ONE = Decimal(1)


def liquidation_price(entry: Decimal, side: int, leverage: Decimal, mmr: Decimal) -> Decimal:
    """Isolated-margin liquidation price of a linear perp (fees ignored):
    long ``entry * (1 - 1/lev + mmr)``, short ``entry * (1 + 1/lev - mmr)``."""
    if leverage <= 0:
        raise ValueError(f"leverage must be > 0, not {leverage}")
    if side > 0:
        return entry * (ONE - ONE / leverage + mmr)
    return entry * (ONE + ONE / leverage - mmr)


@dataclass(frozen=True)
class StopPlan:
    stop: Decimal
    liq: Decimal
    raw: Decimal  # before the liquidation bound and tick rounding
    clamped: bool  # the max-loss stop lay beyond liquidation and was pulled inside


def initial_stop(entry: Decimal, side: int, cfg: TraderConfig, inst: Instrument) -> StopPlan:
    """Stop at ``max_loss_fraction`` of the margin from ``entry`` (price distance
    ``entry * max_loss_fraction / leverage``), pulled inside the liquidation price by
    ``liq_buffer_fraction`` of entry, rounded to the tick towards the entry (tighter, never looser)."""
    lev = cfg.leverage
    liq = liquidation_price(entry, side, lev, cfg.maintenance_margin_rate)
    dist = entry * cfg.max_loss_fraction / lev
    buf = entry * cfg.liq_buffer_fraction
    if side > 0:
        raw = entry - dist
        bound = liq + buf
        clamped = raw <= bound
        stop = inst.round_price(max(raw, bound), "sell")  # up = tighter for a long
        if stop <= liq:  # a tick coarser than the buffer
            stop = inst.round_price(liq + inst.tick_size, "sell")
        clamped = clamped or stop != inst.round_price(raw, "sell")
    else:
        raw = entry + dist
        bound = liq - buf
        clamped = raw >= bound
        stop = inst.round_price(min(raw, bound), "buy")  # down = tighter for a short
        if stop >= liq:
            stop = inst.round_price(liq - inst.tick_size, "buy")
        clamped = clamped or stop != inst.round_price(raw, "buy")
    return StopPlan(stop=stop, liq=liq, raw=raw, clamped=clamped)


def trailing_stop(
    side: int, entry: Decimal, extreme: Decimal, current: Decimal | None, cfg: TraderConfig, inst: Instrument
) -> Decimal | None:
    """The ratcheted stop after the best price ``extreme`` seen since entry, or ``None`` when the
    stop does not move. It locks ``trailing_lock_fraction`` of the maximum favourable excursion
    once that excursion reaches ``trailing_activation_fraction`` of entry; it only ever tightens."""
    if not cfg.trailing_enabled:
        return None
    mfe = (extreme - entry) * side
    if mfe <= 0 or mfe < entry * cfg.trailing_activation_fraction:
        return None
    cand = entry + side * mfe * cfg.trailing_lock_fraction
    cand = inst.round_price(cand, "sell" if side > 0 else "buy")
    if current is None or (side > 0 and cand > current) or (side < 0 and cand < current):
        return cand
    return None


@dataclass(frozen=True)
class Sizing:
    qty: Decimal  # 0 = refused
    notional: Decimal
    capped_by: str = ""  # which cap bound the size ("" = budget x leverage)
    refusal: str = ""  # why no order ("" = ok)


def size_entry(
    price: Decimal,
    cfg: TraderConfig,
    inst: Instrument,
    *,
    symbol_notional: Decimal = ZERO,
    total_exposure: Decimal = ZERO,
) -> Sizing:
    """Quantity for a new entry at about ``price``: ``budget * leverage`` of notional, capped by the
    per-order cap, the per-symbol position cap and the remaining total exposure, floored to the
    lot step. A size that breaks the instrument's rules is refused (``refusal`` says why)."""
    if price <= 0:
        return Sizing(ZERO, ZERO, refusal=f"price {price} is not positive")
    want = cfg.budget * cfg.leverage
    caps = {
        "max_order_notional": cfg.max_order_notional,
        "max_position_notional": cfg.max_position_notional - symbol_notional,
        "max_total_exposure": cfg.max_total_exposure - total_exposure,
    }
    capped_by = ""
    notional = want
    for name, cap in caps.items():
        if cap < notional:
            notional, capped_by = cap, name
    if inst.max_leverage is not None and cfg.leverage > inst.max_leverage:
        return Sizing(
            ZERO, ZERO, capped_by, f"leverage {cfg.leverage} is above {inst.symbol}'s maximum {inst.max_leverage}"
        )
    if notional <= 0:
        return Sizing(ZERO, ZERO, capped_by, f"no room left under {capped_by}")
    qty = inst.round_qty(notional / (price * inst.contract_value))
    if inst.max_qty is not None and qty > inst.max_qty:
        qty = inst.round_qty(inst.max_qty)
        capped_by = "max_qty"
    why = inst.violation(qty, price)
    if why:
        return Sizing(ZERO, ZERO, capped_by, f"{inst.exchange} {inst.symbol}: {why} (notional budget {notional})")
    return Sizing(qty, qty * price * inst.contract_value, capped_by)


__all__ = ["StopPlan", "Sizing", "initial_stop", "liquidation_price", "size_entry", "trailing_stop"]
