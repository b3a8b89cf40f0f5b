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
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trader.domain import (
    ZERO,
    ExecEvent,
    Fees,
    FillReport,
    Instrument,
    Liquidity,
    OrderRejected,
    OrderReport,
    OrderRequest,
    PositionReport,
    to_decimal,
)
from trader.engine_state import book_ts
from trader.fills import walk_levels
from trader.ledger import PositionLedger
from trader.risk import liquidation_price

DEPTH_EXHAUSTED = "book depth exhausted"


class PaperExchange:
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
        self._used: dict[str, list] = {}  # symbol -> [book, taken from asks, taken from bids]
        self._stop_seq = 0
        self.resting: dict[str, list[OrderRequest]] = {}  # limit orders on the book (maker)

    # ------------------------------------------------------------------ market data
    def on_book(self, book: Any, ts: int | None = None) -> None:
        """Feed the next book of a symbol: fills orders that are due, triggers the stop."""
        sym = book.symbol
        if ts is None:
            ts = book_ts(book)
        self.books[sym] = book
        self.book_ts[sym] = ts
        if not book.valid:
            return
        w = self.waiting.get(sym)
        if w:
            due = [r for t, r in w if t <= ts]
            if due:
                self.waiting[sym] = [(t, r) for t, r in w if t > ts]
                for req in due:
                    self._execute(req, book, ts)
        if self.resting.get(sym):
            self._match_resting(sym, book, ts)
        sf = self.stop_f.get(sym)
        if sf is not None:
            led = self.ledgers[sym]
            if led.side > 0 and len(book.bids) and book.bids[0, 0] <= sf:
                self._trigger(sym, book, ts)
            elif led.side < 0 and len(book.asks) and book.asks[0, 0] >= sf:
                self._trigger(sym, book, ts)

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

    # ------------------------------------------------------------------ matching
    def _report(
        self, rep: OrderReport, status: str, filled: Decimal, avg: Decimal | None, reason: str, ts: int
    ) -> OrderReport:
        new = OrderReport(
            rep.client_order_id,
            rep.exchange,
            rep.symbol,
            rep.side,
            rep.qty,
            status,  # type: ignore[arg-type]
            filled,
            avg,
            rep.exchange_order_id or f"paper-{len(self.orders)}",
            reason,
            ts,
        )
        self.orders[rep.client_order_id] = new
        self.events.append(new)
        return new

    def _execute(self, req: OrderRequest, book: Any, ts: int) -> None:
        rep = self.orders[req.client_order_id]
        led = self.ledgers[req.symbol]
        qty = req.qty
        if req.reduce_only:
            closing = led.qty if led.side == (-1 if req.side == "buy" else 1) else ZERO
            if not closing:
                self._report(rep, "cancelled", ZERO, None, "reduce-only order with no position to reduce", ts)
                return
            qty = min(qty, closing)
        used = self._used.get(req.symbol)
        if used is None or used[0] is not book:
            used = self._used[req.symbol] = [book, ZERO, ZERO]  # liquidity taken from this snapshot
        k_side = 1 if req.side == "buy" else 2
        lim = float(req.price) if req.order_type == "limit" and req.price is not None else None
        parts, rest = walk_levels(
            book.asks if req.side == "buy" else book.bids, qty, used[k_side], lim, 1 if req.side == "buy" else -1
        )
        used[k_side] += qty - rest
        filled, value = self._fill(req, parts, "taker", ts)
        if parts:  # cost against filling everything at the touch (quote currency, > 0 = worse)
            lv = book.asks if req.side == "buy" else book.bids
            slip = (value - to_decimal(float(lv[0, 0])) * filled) * (1 if req.side == "buy" else -1)
            self.slippage[req.client_order_id] = slip
            self.slippage_total += slip
        self._sync_cash(req.symbol)
        avg = value / filled if filled else None
        if not led.qty:
            self.set_stop(req.symbol, None)
        if rest and lim is not None:  # the rest of a limit order rests on the book as a maker
            self.resting.setdefault(req.symbol, []).append(req)
            if filled:
                self._report(rep, "partially_filled", filled, avg, "rest on the book", ts)
        elif rest and filled:
            self._report(rep, "partially_filled", filled, avg, DEPTH_EXHAUSTED, ts)
            self._report(
                self.orders[req.client_order_id],
                "cancelled",
                filled,
                avg,
                f"{DEPTH_EXHAUSTED}: filled {filled} of {qty}, rest cancelled",
                ts,
            )
        elif rest:
            self._report(rep, "cancelled", ZERO, None, f"{DEPTH_EXHAUSTED}: no liquidity on the {req.side} side", ts)
        else:
            self._report(rep, "filled", filled, avg, rep.reason, ts)

    def _sync_cash(self, symbol: str) -> None:
        """Cash = start + sum(realised) - sum(fees) - funding, recomputed from the ledgers (exact)."""
        self.cash = (
            self.start_balance
            + sum((led.realized - led.fees for led in self.ledgers.values()), ZERO)
            - self.funding_paid
        )

    def _trigger(self, symbol: str, book: Any, ts: int) -> None:
        led = self.ledgers[symbol]
        self._stop_seq += 1
        req = OrderRequest(
            f"stop-{symbol}-{self._stop_seq}",
            self.insts[symbol].exchange,
            symbol,
            "sell" if led.side > 0 else "buy",
            led.qty,
            reduce_only=True,
            reason="stop",
            ts_ns=ts,
        )
        self.set_stop(symbol, None)
        rep = OrderReport(
            req.client_order_id, req.exchange, symbol, req.side, req.qty, "accepted", reason="stop", ts_ns=ts
        )
        self.orders[req.client_order_id] = rep
        self.events.append(rep)
        self._execute(req, book, ts)

    def _fill(
        self, req: OrderRequest, parts: list[tuple[Decimal, Decimal]], liq: Liquidity, ts: int
    ) -> tuple[Decimal, Decimal]:
        """Book fills of ``req`` (one per level): fee, ledger, ``FillReport``; returns (qty, value)."""
        inst = self.insts[req.symbol]
        led = self.ledgers[req.symbol]
        cv = inst.contract_value
        rate = self.fees.taker if liq == "taker" else self.fees.maker
        filled = value = ZERO
        k0 = self.n_fills
        for k, (px, q) in enumerate(parts):
            fee = q * px * cv * rate
            led.apply(req.side, q, px, fee, ts)
            self.events.append(
                FillReport(
                    req.client_order_id,
                    inst.exchange,
                    req.symbol,
                    req.side,
                    q,
                    px,
                    fee,
                    self.settle_ccy,
                    liq,
                    f"{req.client_order_id}-{k0 + k}",
                    ts,
                )
            )
            filled += q
            value += q * px
        self.n_fills += len(parts)
        return filled, value

    def _match_resting(self, sym: str, book: Any, ts: int) -> None:
        """A resting limit order fills at its own price, as a maker, once the opposite side trades
        through it (best ask below a buy's price, best bid above a sell's): a conservative queue
        model (touching the price is not enough)."""
        bid = float(book.bids[0, 0]) if len(book.bids) else None
        ask = float(book.asks[0, 0]) if len(book.asks) else None
        keep = []
        for req in self.resting[sym]:
            lim = float(req.price)  # type: ignore[arg-type]
            through = (ask is not None and ask < lim) if req.side == "buy" else (bid is not None and bid > lim)
            if not through:
                keep.append(req)
                continue
            rep = self.orders[req.client_order_id]
            qty = req.qty - rep.filled_qty
            led = self.ledgers[sym]
            if req.reduce_only:
                qty = min(qty, led.qty if led.side == (-1 if req.side == "buy" else 1) else ZERO)
            if qty > 0:
                q, v = self._fill(req, [(req.price, qty)], "maker", ts)  # type: ignore[list-item]
                filled = rep.filled_qty + q
                value = (rep.avg_price or ZERO) * rep.filled_qty + v
                self._sync_cash(sym)
                if not led.qty:
                    self.set_stop(sym, None)
                self._report(
                    rep,
                    "filled" if filled == req.qty else "cancelled",
                    filled,
                    value / filled,
                    "limit filled" if filled == req.qty else "reduce-only: rest cancelled",
                    ts,
                )
            else:
                self._report(
                    rep, "cancelled", rep.filled_qty, rep.avg_price, "reduce-only order with nothing to reduce", ts
                )
        self.resting[sym] = keep
