"""The trader's strategy and risk parameters: one dataclass, every field named and defaulted.

Pure: no environment reading here (the service maps settings onto :class:`TraderConfig`).
Money and price fractions are ``Decimal``; durations are seconds (``float``).
:func:`parse_param` turns a text value (``set_param name value``) into a validated new config,
or raises ``ValueError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class TraderConfig:
    # ------------------------------------------------------------ strategy (signal -> decision)
    up_class: str = "up"  # class names in Signal.classes
    down_class: str = "down"
    use_signal_decision: bool = False  # take Signal.decision (the predictor's smoothing) as the reading
    smoothing_alpha: float = 1.0  # EMA weight of the newest probabilities (1.0 = no smoothing)
    entry_threshold: float = 0.55  # smoothed P(up) / P(down) needed for a directional reading
    confirm_k: int = 2  # the last K readings must agree before an entry / a signal exit
    exit_on_opposite: bool = True
    exit_on_neutral: bool = False  # also exit when K neutral readings agree
    block_same_direction_reentry: bool = True  # after a close, wait for an opposite/neutral reading
    stop_cooldown_s: float = 300.0  # after a stop-loss, no re-entry in that direction for this long
    allow_long: bool = True
    allow_short: bool = True

    # ------------------------------------------------------------ sizing / leverage
    budget: Decimal = Decimal("100")  # margin per entry, in the settle currency
    leverage: Decimal = Decimal("3")
    max_order_notional: Decimal = Decimal("1000")  # per-order notional cap
    max_position_notional: Decimal = Decimal("1000")  # per symbol (RISK_MAX_POSITION_USD)
    max_total_exposure: Decimal = Decimal("2000")  # sum over symbols

    # ------------------------------------------------------------ stops
    max_loss_fraction: Decimal = Decimal("0.5")  # of the margin, sets the initial stop distance
    maintenance_margin_rate: Decimal = Decimal("0.005")  # isolated-margin liquidation model
    liq_buffer_fraction: Decimal = Decimal("0.001")  # the stop stays this far (of entry) inside liq
    trailing_enabled: bool = True
    trailing_activation_fraction: Decimal = Decimal("0.002")  # MFE (of entry) before trailing starts
    trailing_lock_fraction: Decimal = Decimal("0.5")  # share of the MFE the stop locks in

    # ------------------------------------------------------------ daily loss / data quality
    daily_loss_limit: Decimal = Decimal("100")  # realised + unrealised after fees, UTC day (RISK_MAX_DAILY_LOSS_USD)
    max_book_age_s: float = 5.0  # older book = stale: no entries, signals ignored
    max_signal_age_s: float = 60.0  # no fresh signal for this long = data halt (no entries)
    flatten_on_data_halt: bool = False
    taker_fee: Decimal = Decimal("0.00055")  # estimate of the exit fee in the daily-loss check

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("trader config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p: list[str] = []
        if not 0.0 < self.smoothing_alpha <= 1.0:
            p.append(f"smoothing_alpha={self.smoothing_alpha} must be in (0, 1]")
        if not 0.0 < self.entry_threshold <= 1.0:
            p.append(f"entry_threshold={self.entry_threshold} must be in (0, 1]")
        if self.confirm_k < 1:
            p.append(f"confirm_k={self.confirm_k} must be >= 1")
        for name in (
            "budget",
            "leverage",
            "max_order_notional",
            "max_position_notional",
            "max_total_exposure",
            "daily_loss_limit",
        ):
            if getattr(self, name) <= 0:
                p.append(f"{name}={getattr(self, name)} must be > 0")
        for name in ("max_loss_fraction", "trailing_lock_fraction"):
            v = getattr(self, name)
            if not Decimal(0) < v <= Decimal(1):
                p.append(f"{name}={v} must be in (0, 1]")
        for name in ("maintenance_margin_rate", "liq_buffer_fraction", "trailing_activation_fraction", "taker_fee"):
            if getattr(self, name) < 0:
                p.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.maintenance_margin_rate >= 1 / self.leverage if self.leverage > 0 else False:
            p.append(f"maintenance_margin_rate={self.maintenance_margin_rate} must be below 1/leverage")
        for name in ("stop_cooldown_s", "max_book_age_s", "max_signal_age_s"):
            if getattr(self, name) < 0:
                p.append(f"{name}={getattr(self, name)} must be >= 0")
        return p

    def as_text(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


_FIELDS = {f.name: f for f in fields(TraderConfig)}


def _parse(name: str, kind: str, text: str) -> Any:
    t = text.strip()
    if kind == "bool":
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: {text!r} is not a boolean (true/false)")
    if kind == "int":
        try:
            return int(t)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not an integer") from None
    if kind == "float":
        try:
            return float(t)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number") from None
    if kind == "Decimal":
        try:
            v = Decimal(t)
        except InvalidOperation:
            raise ValueError(f"{name}: {text!r} is not a decimal number") from None
        if not v.is_finite():
            raise ValueError(f"{name}: {text!r} is not finite")
        return v
    return t


def parse_param(cfg: TraderConfig, name: str, value: str | Any) -> TraderConfig:
    """A copy of ``cfg`` with ``name`` set from ``value`` (text or typed); ``ValueError`` naming
    the parameter when it is unknown, unparsable or out of range."""
    f = _FIELDS.get(name)
    if f is None:
        raise ValueError(f"unknown parameter {name!r} (known: {', '.join(sorted(_FIELDS))})")
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    v = _parse(name, kind, value) if isinstance(value, str) else value
    try:
        return replace(cfg, **{name: v})
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def config_to_dict(cfg: TraderConfig) -> dict[str, str]:
    return cfg.as_text()


def config_from_dict(d: dict[str, str]) -> TraderConfig:
    """Inverse of :func:`config_to_dict` (unknown keys are ignored, missing ones default)."""
    kw = {}
    for k, v in d.items():
        f = _FIELDS.get(k)
        if f is not None:
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            kw[k] = _parse(k, kind, str(v))
    return TraderConfig(**kw)


__all__ = ["TraderConfig", "parse_param", "config_to_dict", "config_from_dict"]
