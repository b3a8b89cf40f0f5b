"""Paper execution: the default :class:`~trader.domain.ExecutionClient`, fed with real books.

* **Latency**: an order submitted with decision time ``req.ts_ns`` fills on the first book with
  ``ts >= req.ts_ns + latency_ns`` (on the current book at once when it already qualifies).
  Nothing fills on a book seen before the decision: no lookahead.
* **Matching**: market orders walk the book (:func:`trader.fills.walk_levels`), one
  :class:`FillReport` per touched level, taker fee on each (``Fees.taker``, exact ``Decimal``).
* **Own impact**: liquidity our orders take from a snapshot is gone for our next orders on the
  same snapshot (the book is not otherwise changed: other traders' reactions are not modelled).
* **Partial depth**: when the book's levels run out, what is there fills and the rest is
  cancelled: an ``OrderReport`` ``partially_filled`` then a terminal ``cancelled`` carrying
  ``filled_qty`` and the reason ``book depth exhausted`` (Bybit's ``PartiallyFilledCanceled``).
* **Limit orders**: the marketable part walks the book up to the limit price (taker); the rest
  rests and fills at its price as a maker (``Fees.maker``) once the opposite best trades
  through it (touching is not enough: a conservative queue position). ``cancel`` removes it.
* **Venue-side stop**: ``set_stop`` arms a stop on the position; it triggers when the book's best
  exit-side price crosses it (bid <= stop for a long, ask >= stop for a short) and closes the
  position with a reduce-only market order (client id ``stop-...``, reason ``stop``) on that book.
* **Idempotent** ``submit`` by ``client_order_id``; reduce-only orders are clipped to the
  position (rejected when flat); an entry needing more margin than is available is rejected.
* **Slippage** of each order against the touch (``slippage[client_order_id]``, quote currency).
* **Money**: positions (FIFO lots), realised/unrealised PnL, fees and optional funding
  (``apply_funding``) in ``Decimal``, exactly.

This module holds the exchange's state, its orders and its accounting; how orders fill on the
books (book walking, resting limits, the stop's trigger) is :mod:`trader.paper_fills`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trader.domain import (
    ZERO,
    ExecEvent,
    Fees,
    Instrument,
    OrderRejected,
    OrderReport,
    OrderRequest,
    PositionReport,
    to_decimal,
)
from trader.ledger import PositionLedger
from trader.paper_fills import DEPTH_EXHAUSTED, PaperFills
from trader.risk import liquidation_price

__all__ = ["DEPTH_EXHAUSTED", "PaperExchange"]


class PaperExchange(PaperFills):
    mode = "paper"

    def __init__(
        self,
        instruments: dict[str, Instrument],
        *,
        fees: Fees | None = None,
        latency_ns: int = 0,
        balance: Decimal = Decimal("10000"),
        settle_ccy: str = "USDT",
        mmr: Decimal = Decimal("0.005"),
        exchange: str = "",
    ) -> None:
        self.insts = dict(instruments)
        self.exchange = exchange or next((i.exchange for i in self.insts.values()), "paper")
        self.fees = fees or Fees()
        self.latency_ns = latency_ns
        self.settle_ccy = settle_ccy
        self.mmr = mmr
        self.start_balance = balance
        self.cash = balance  # start + realised - fees - funding
        self.funding_paid = ZERO
        self.leverage: dict[str, Decimal] = {}
        self.ledgers: dict[str, PositionLedger] = {
            s: PositionLedger(contract_value=i.contract_value) for s, i in self.insts.items()
        }
        self.books: dict[str, Any] = {}
        self.book_ts: dict[str, int] = {}
        self.orders: dict[str, OrderReport] = {}
        self.waiting: dict[str, list[tuple[int, OrderRequest]]] = {}  # symbol -> [(due ts, req)]
        self.stops: dict[str, Decimal] = {}
        self.stop_f: dict[str, float] = {}
        self.events: list[ExecEvent] = []
        self.n_fills = 0
        self.slippage: dict[str, Decimal] = {}  # client order id -> slippage vs the touch
        self.slippage_total = ZERO
        self._used: dict[str, list[Any]] = {}  # symbol -> [book, taken from asks, taken from bids]
        self._stop_seq = 0
        self.resting: dict[str, list[OrderRequest]] = {}  # limit orders on the book (maker)

    def apply_funding(self, symbol: str, rate: Decimal, mark: Decimal | None = None, ts_ns: int = 0) -> Decimal:
        """Funding payment at ``rate`` on the position's notional (longs pay a positive rate)."""
        led = self.ledgers[symbol]
        if not led.qty:
            return ZERO
        m = mark if mark is not None else self._mark(symbol)
        if m is None:
            raise ValueError(f"paper funding for {symbol}: no mark price (no book yet and none given)")
        pay = led.signed_qty * m * led.contract_value * rate
        self.cash -= pay
        self.funding_paid += pay
        return pay

    # ------------------------------------------------------------------ ExecutionClient
    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        missing = [s for s in symbols if s not in self.insts]
        if missing:
            raise OrderRejected(f"paper {self.exchange}: unknown symbols {missing}")
        return {s: self.insts[s] for s in symbols}

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        inst = self.insts[symbol]
        if leverage <= 0 or (inst.max_leverage is not None and leverage > inst.max_leverage):
            raise OrderRejected(f"paper {self.exchange} {symbol}: leverage {leverage} out of range", code="leverage")
        self.leverage[symbol] = leverage

    def submit(self, req: OrderRequest) -> OrderReport:
        old = self.orders.get(req.client_order_id)
        if old is not None:
            return old
        inst = self.insts.get(req.symbol)
        if inst is None:
            raise OrderRejected(f"paper {self.exchange}: unknown symbol {req.symbol}", code="symbol")
        if req.order_type == "limit" and (req.price is None or req.price <= 0 or req.price % inst.tick_size):
            raise OrderRejected(
                f"paper {self.exchange} {req.symbol}: limit price {req.price} is not a positive "
                f"multiple of the tick {inst.tick_size}",
                code="price",
            )
        px = req.price if req.order_type == "limit" else self._touch(req.symbol, req.side)
        why = inst.violation(req.qty, px if px is not None else inst.tick_size)
        if req.reduce_only and why.startswith("notional"):
            why = ""  # closing dust is allowed
        if why:
            raise OrderRejected(f"paper {self.exchange} {req.symbol}: {why}", code="rules")
        if not req.reduce_only and px is not None:
            lev = self.leverage.get(req.symbol, Decimal(1))
            need = req.qty * px * inst.contract_value / lev
            if need > self.available():
                raise OrderRejected(
                    f"paper {self.exchange} {req.symbol}: insufficient balance: margin {need:.4f} > "
                    f"available {self.available():.4f}",
                    code="balance",
                )
        rep = OrderReport(
            req.client_order_id,
            inst.exchange,
            req.symbol,
            req.side,
            req.qty,
            "accepted",
            reason=req.reason,
            ts_ns=req.ts_ns,
        )
        self.orders[req.client_order_id] = rep
        self.events.append(rep)
        due = req.ts_ns + self.latency_ns
        book = self.books.get(req.symbol)
        if book is not None and book.valid and self.book_ts[req.symbol] >= due:
            self._execute(req, book, self.book_ts[req.symbol])
        else:
            self.waiting.setdefault(req.symbol, []).append((due, req))
        return self.orders[req.client_order_id]

    def lookup(self, symbol: str, client_order_id: str) -> OrderReport | None:
        return self.orders.get(client_order_id)

    def cancel(self, symbol: str, client_order_id: str) -> OrderReport | None:
        rep = self.orders.get(client_order_id)
        if rep is None or rep.terminal:
            return rep
        self.waiting[symbol] = [(t, r) for t, r in self.waiting.get(symbol, []) if r.client_order_id != client_order_id]
        self.resting[symbol] = [r for r in self.resting.get(symbol, []) if r.client_order_id != client_order_id]
        return self._report(rep, "cancelled", rep.filled_qty, rep.avg_price, "cancelled by request", rep.ts_ns)

    def set_stop(self, symbol: str, stop_price: Decimal | None) -> None:
        if stop_price is None:
            self.stops.pop(symbol, None)
            self.stop_f.pop(symbol, None)
        else:
            self.stops[symbol] = stop_price
            self.stop_f[symbol] = float(stop_price)

    def positions(self, symbols: list[str] | None = None) -> list[PositionReport]:
        out = []
        for s in symbols or list(self.ledgers):
            led = self.ledgers[s]
            if not led.qty:
                continue
            lev = self.leverage.get(s, Decimal(1))
            m = self._mark(s)
            out.append(
                PositionReport(
                    self.insts[s].exchange,
                    s,
                    led.signed_qty,
                    led.avg_price,
                    self.stops.get(s),
                    liquidation_price(led.avg_price, led.side, lev, self.mmr),
                    lev,
                    led.unrealized(m) if m is not None else ZERO,
                    self.book_ts.get(s, 0),
                )
            )
        return out

    def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        return [r for r in self.orders.values() if not r.terminal and (symbol is None or r.symbol == symbol)]

    def balance(self) -> dict[str, Decimal]:
        return {self.settle_ccy: self.equity()}

    def poll_events(self) -> list[ExecEvent]:
        ev, self.events = self.events, []
        return ev

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ accounting
    def equity(self) -> Decimal:
        return self.cash + sum(
            (led.unrealized(m) for s, led in self.ledgers.items() if led.qty and (m := self._mark(s)) is not None), ZERO
        )

    def available(self) -> Decimal:
        used = sum(
            (
                led.cost * led.contract_value / self.leverage.get(s, Decimal(1))
                for s, led in self.ledgers.items()
                if led.qty
            ),
            ZERO,
        )
        return self.equity() - used

    def _mark(self, symbol: str) -> Decimal | None:
        b = self.books.get(symbol)
        if b is None or not len(b.bids) or not len(b.asks):
            return None
        return (to_decimal(float(b.bids[0, 0])) + to_decimal(float(b.asks[0, 0]))) / 2

    def _touch(self, symbol: str, side: str) -> Decimal | None:
        b = self.books.get(symbol)
        lv = None if b is None else (b.asks if side == "buy" else b.bids)
        return to_decimal(float(lv[0, 0])) if lv is not None and len(lv) else None
