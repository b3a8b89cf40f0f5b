"""From depthpilot settings to the trader's pure configuration, and which execution to use.
Pure: settings in, dataclasses and strings out (no I/O, no environment reading).

Execution selection (paper by default, real orders only when asked twice):

* ``DEPTHPILOT_MODE=paper`` (the default): the paper exchange, whatever keys are set. Keys
  present with no mode set still mean paper (the service logs that it ignores them).
* ``DEPTHPILOT_MODE=testnet``: the venue adapter (``TRADER_VENUE``: ``bybit`` by default, or a
  ccxt exchange id such as ``binanceusdm``) on the testnet, with ``BYBIT_API_KEY``/``BYBIT_API_SECRET``
  (the venue's keys, whichever venue it is).
* ``DEPTHPILOT_MODE=live``: real money; settings validation already refuses to start without
  the keys AND ``DEPTHPILOT_LIVE_TRADING_CONFIRM=yes``; :func:`execution_plan` checks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trader.config import TraderConfig
from trader.domain import Fees, Mode, as_mode


def trader_config(s: Any) -> TraderConfig:
    """Settings (``TRADER_*``, ``RISK_*``) -> :class:`TraderConfig`."""
    from decimal import Decimal

    leverage = min(Decimal(s.trader_leverage), Decimal(str(s.risk_max_leverage)))
    return TraderConfig(
        entry_threshold=float(s.trader_entry_threshold),
        confirm_k=int(s.trader_confirm_k),
        smoothing_alpha=float(s.trader_smoothing_alpha),
        exit_on_neutral=bool(s.trader_exit_on_neutral),
        stop_cooldown_s=float(s.trader_stop_cooldown_s),
        budget=Decimal(s.trader_budget),
        leverage=leverage,
        max_order_notional=Decimal(s.trader_max_order_notional),
        max_position_notional=Decimal(str(s.risk_max_position_usd)),
        max_total_exposure=Decimal(s.trader_max_total_exposure),
        max_loss_fraction=Decimal(s.trader_max_loss_fraction),
        trailing_activation_fraction=Decimal(s.trader_trailing_activation),
        trailing_lock_fraction=Decimal(s.trader_trailing_lock),
        daily_loss_limit=Decimal(str(s.risk_max_daily_loss_usd)),
        max_book_age_s=float(s.book_max_staleness_s),
        max_signal_age_s=float(s.trader_max_signal_age_s),
        taker_fee=Decimal(s.trader_taker_fee),
    )


def fees(s: Any) -> Fees:
    return Fees(taker=s.trader_taker_fee, maker=s.trader_maker_fee)


@dataclass(frozen=True)
class ExecutionPlan:
    mode: Mode
    venue: str  # "paper" / "bybit" / "ccxt"
    exchange: str  # the exchange name orders and positions carry
    note: str = ""  # something the service should log (keys ignored in paper mode...)


def execution_plan(s: Any) -> ExecutionPlan:
    mode = as_mode(getattr(s.mode, "value", s.mode))
    has_keys = s.bybit_api_key is not None and s.bybit_api_secret is not None
    if mode == "paper":
        exchange = s.trader_exchange or s.exchanges[0]
        note = (
            "exchange API keys are set but DEPTHPILOT_MODE is paper: paper trading, no real orders" if has_keys else ""
        )
        return ExecutionPlan("paper", "paper", exchange, note)
    if not has_keys:
        raise ValueError(f"DEPTHPILOT_MODE={mode} needs BYBIT_API_KEY and BYBIT_API_SECRET")
    if mode == "live" and s.live_trading_confirm != "yes":
        raise ValueError("DEPTHPILOT_MODE=live needs DEPTHPILOT_LIVE_TRADING_CONFIRM=yes")
    venue = s.trader_venue
    exchange = s.trader_exchange or venue  # the books it marks with must carry this exchange name
    return ExecutionPlan(mode, venue, exchange, f"{mode.upper()} trading on {exchange} via {venue}")
