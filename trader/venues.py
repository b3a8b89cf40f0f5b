"""Builds the execution client the plan asks for: the paper exchange (default) or a venue
adapter (Bybit v5 / ccxt, testnet or live). Also rebuilds the paper exchange's book of
positions from the store after a restart (the paper venue lives in the trader's process, so
its truth is the fills the trader stored).

Paper instruments: the paper exchange trades any symbol the trader sees books for, with the
rules of a linear USDT perpetual as used for BTCUSDT on Bybit (tick 0.1, lot 0.001, min 0.001,
min notional 5 USDT) unless the venue is asked. They are what the paper fills are rounded to;
override per need with ``TRADER_PAPER_TICK`` / ``TRADER_PAPER_LOT``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from trader.domain import Instrument
from trader.settings_map import ExecutionPlan, fees

log = logging.getLogger("trader.venues")


def paper_instrument(
    exchange: str, symbol: str, tick: Decimal = Decimal("0.1"), lot: Decimal = Decimal("0.001")
) -> Instrument:
    return Instrument(
        exchange=exchange,
        symbol=symbol,
        tick_size=tick,
        lot_step=lot,
        min_qty=lot,
        min_notional=Decimal("5"),
        max_leverage=Decimal("100"),
    )


def build_client(plan: ExecutionPlan, settings: Any, symbols: list[str]) -> tuple[Any, dict[str, Instrument]]:
    """(client, instruments of ``symbols``). Venue instruments are loaded from the venue."""
    if plan.venue == "paper":
        from trader.paper import PaperExchange

        insts = {
            s: paper_instrument(plan.exchange, s, settings.trader_paper_tick, settings.trader_paper_lot)
            for s in symbols
        }
        paper = PaperExchange(
            insts,
            fees=fees(settings),
            latency_ns=int(settings.trader_paper_latency_ms * 1e6),
            balance=Decimal(settings.trader_paper_balance),
            exchange=plan.exchange,
        )
        return paper, insts
    from trader.execution import make_execution_client

    bybit = plan.venue == "bybit"
    client = make_execution_client(
        venue=plan.venue,
        mode=plan.mode,
        api_key=settings.bybit_api_key,
        api_secret=settings.bybit_api_secret,
        base_url=settings.bybit_base_url if bybit else settings.ccxt_api_base_url,
        private_ws_url=(settings.bybit_private_ws_url or None) if bybit else None,
    )
    insts = client.instruments(symbols)
    return client, insts


def restore_paper(client: Any, store: Any, mode: str) -> int:
    """Replay the stored fills of ``mode`` into a fresh paper exchange (oldest first) and put
    back the stored stop of each open position. Returns the number of fills replayed."""
    if store is None or not hasattr(client, "ledgers"):
        return 0
    fills = list(reversed(store.fills(mode=mode, limit=1_000_000)))
    n = 0
    for f in fills:
        led = client.ledgers.get(f["symbol"])
        if led is None:
            continue
        led.apply(f["side"], Decimal(f["qty"]), Decimal(f["price"]), Decimal(f["fee"]), int(f.get("ts") or 0))
        n += 1
    for sym in client.ledgers:
        client._sync_cash(sym)
        break
    for p in store.positions(mode=mode):
        sym = p["symbol"]
        if sym in client.ledgers and client.ledgers[sym].qty and p.get("stop_price") is not None:
            client.set_stop(sym, Decimal(p["stop_price"]))
    if n:
        log.info("paper exchange rebuilt from %d stored fills", n)
    return n
