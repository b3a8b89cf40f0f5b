"""Fills modelled from candles when there are no books (a kline-only backtest). Pure.

Without an order book, every price the paper exchange sees is modelled, conservatively:

* a decision taken at a candle's close (when its signal arrives) fills at the NEXT candle's open,
  seen ``latency`` after the decision: the row "open of bar i+1" is stamped ``close_ts[i] +
  latency``, so the paper exchange's "first book at or after decision + latency" is that open;
* the market is marked at each close (a row stamped ``close_ts[i]``, before the signal of that
  close is handled);
* each row is a one-level book: bid = price x (1 - (half_spread + slippage) bps), ask = price x
  (1 + ...), rounded outwards to the tick of the kline prices, with a size far beyond any order,
  so a buy pays the half-spread and the slippage on top of the fee, and so does a sell;
* nothing happens inside a bar: a stop is seen at the next close or open, not at the bar's low.

The report says plainly that these fills are modelled from candles, not books.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from backtest.data import Books, _step
from trader.domain import Instrument

SIZE = 1e6  # one level deeper than any order: the fill price is the modelled one, never walked


@dataclass(frozen=True)
class CandleFills:
    half_spread_bps: float = 0.5
    slippage_bps: float = 1.0

    def __post_init__(self) -> None:
        for name in ("half_spread_bps", "slippage_bps"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}={v}: want a finite number >= 0")

    @property
    def cost_bps(self) -> float:
        return self.half_spread_bps + self.slippage_bps

    def describe(self, latency_ns: int) -> str:
        return (
            f"fills modelled from candles, not books: the next candle's open {latency_ns / 1e6:g} ms after the "
            f"decision, {self.half_spread_bps:g} bps half-spread + {self.slippage_bps:g} bps slippage each side "
            f"on top of the fee; no move inside a bar is seen"
        )


def candle_books(
    candles: dict[str, np.ndarray], fills: CandleFills, latency_ns: int, exchange: str, symbol: str, source: str
) -> tuple[Books, Instrument]:
    """The modelled books of a kline series (module doc) and its instrument (tick = the grid of
    the kline prices, lot step = the grid of the volumes)."""
    ts = np.asarray(candles["ts"], dtype=np.int64)
    o = np.asarray(candles["open"], dtype=np.float64)
    c = np.asarray(candles["close"], dtype=np.float64)
    if ts.size < 2:
        raise ValueError(f"{source}: {ts.size} candle(s): want at least 2")
    gap = int(np.min(np.diff(ts)))
    if latency_ns >= gap:
        raise ValueError(f"latency {latency_ns / 1e6:g} ms is not shorter than a candle ({gap / 1e6:g} ms)")
    tick = _step(np.concatenate([o, c]))
    lot = _step(np.asarray(candles["volume"], dtype=np.float64))
    n = ts.size
    row_ts = np.empty(2 * n - 1, dtype=np.int64)
    price = np.empty(2 * n - 1)
    row_ts[0::2], price[0::2] = ts, c  # the close of bar i
    row_ts[1::2], price[1::2] = ts[:-1] + latency_ns, o[1:]  # the open of bar i+1, seen latency later
    t = float(tick)
    k = fills.cost_bps / 1e4
    bid = np.floor(np.round(price * (1.0 - k) / t, 6)) * t
    ask = np.ceil(np.round(price * (1.0 + k) / t, 6)) * t
    ask = np.where(ask > bid, ask, bid + t)
    dec = max(0, -int(tick.as_tuple().exponent))
    bid, ask = np.round(bid, dec), np.round(ask, dec)
    bids = np.stack([bid, np.full(bid.shape, SIZE)], axis=1)[:, None, :]
    asks = np.stack([ask, np.full(ask.shape, SIZE)], axis=1)[:, None, :]
    books = Books(exchange, symbol, row_ts, bids, asks, np.isfinite(bid) & np.isfinite(ask) & (bid > 0), source)
    inst = Instrument(exchange, symbol, tick_size=tick, lot_step=lot, min_qty=lot, min_notional=Decimal(5))
    return books, inst
