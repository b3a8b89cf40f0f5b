"""Small builders for the trader tests: instrument, books, signals, an engine + paper harness."""

from __future__ import annotations

import os
from decimal import Decimal as D
from pathlib import Path

import numpy as np
import pytest

from depthpilot.messages import Signal
from trader.backtest import BookView, Simulator
from trader.config import TraderConfig
from trader.domain import Fees, Instrument
from trader.engine import TradingEngine
from trader.paper import PaperExchange

SYM = "BTCUSDT"
EX = "bybit"
S = 1_000_000_000  # ns per second
T0 = 1_721_347_200 * S  # 2024-07-19 00:00:00 UTC

INST = Instrument(
    EX,
    SYM,
    tick_size=D("0.1"),
    lot_step=D("0.001"),
    min_qty=D("0.001"),
    min_notional=D("5"),
    max_qty=D("100"),
    max_leverage=D("100"),
)


def need_data(rel: str) -> Path:
    """A recording under the data directory; missing -> skip, or FAIL under CI=true."""
    from depthpilot.paths import data_dir

    p = data_dir() / rel
    if not p.exists():
        msg = f"recording {p} not found (set DEPTHPILOT_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def book(
    ts: int,
    bid: float,
    ask: float,
    *,
    size: float = 5.0,
    levels: int = 5,
    tick: float = 0.1,
    valid: bool = True,
    symbol: str = SYM,
) -> BookView:
    bids = np.array([[round(bid - i * tick, 1), size] for i in range(levels)], dtype=np.float64)
    asks = np.array([[round(ask + i * tick, 1), size] for i in range(levels)], dtype=np.float64)
    return BookView(EX, symbol, ts, bids, asks, valid, "" if valid else "crossed")


def signal(ts: int, p_up: float, p_down: float, *, ttl_s: float = 10.0, symbol: str = SYM) -> Signal:
    flat = max(0.0, 1.0 - p_up - p_down)
    return Signal(
        exchange=EX,
        symbol=symbol,
        ts=ts,
        model_id="test",
        classes=["down", "flat", "up"],
        probs=[p_down, flat, p_up],
        score=p_up - p_down,
        expires_at=ts + int(ttl_s * S),
    )


UP = (0.8, 0.1)
DOWN = (0.1, 0.8)
FLAT = (0.2, 0.2)


def harness(
    cfg: TraderConfig | None = None,
    *,
    latency_ns: int = 0,
    start: bool = True,
    n_trades: int | None = None,
    balance: D = D("100000"),
) -> Simulator:
    cfg = cfg or TraderConfig(confirm_k=1, stop_cooldown_s=60, trailing_activation_fraction=D("0.001"))
    eng = TradingEngine(cfg, {SYM: INST})
    paper = PaperExchange({SYM: INST}, fees=Fees(), latency_ns=latency_ns, balance=balance)
    paper.set_leverage(SYM, cfg.leverage)
    sim = Simulator(eng, paper)
    if start:
        sim.control("start", SYM, n_trades)
    return sim


class Clock:
    """Feeds books and signals at increasing times (1 s apart by default)."""

    def __init__(self, sim: Simulator, t0: int = T0) -> None:
        self.sim, self.t = sim, t0

    def book(self, bid: float, ask: float | None = None, dt: float = 1.0, **kw):
        self.t += int(dt * S)
        return self.sim.book(book(self.t, bid, ask if ask is not None else round(bid + 0.1, 1), **kw))

    def signal(self, probs: tuple[float, float], dt: float = 0.0, **kw):
        self.t += int(dt * S)
        return self.sim.signal(signal(self.t, probs[0], probs[1], **kw))
