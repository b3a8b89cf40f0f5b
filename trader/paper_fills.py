"""How the paper exchange (:mod:`trader.paper`) fills orders on the books it is fed: orders that
are due execute on a book by walking its levels (:func:`trader.fills.walk_levels`; taker fee on
each level, liquidity our orders took from a snapshot is gone for our next orders on it), the
rest of a depth-exhausted market order is cancelled, a limit order's rest rests and fills as a
maker once the opposite side trades through it, and the venue-side stop triggers when the exit
side crosses it. A mixin of :class:`trader.paper.PaperExchange`, split out to keep each module
short; it reads and writes the exchange's state directly. Pure: no I/O, exact ``Decimal``."""

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
    OrderReport,
    OrderRequest,
    OrderStatus,
    to_decimal,
)
from trader.engine_state import book_ts
from trader.fills import walk_levels
from trader.ledger import PositionLedger

DEPTH_EXHAUSTED = "book depth exhausted"


def limit_price(req: OrderRequest) -> Decimal:
    """The price of a resting limit order (only priced limit orders rest: see ``_execute``)."""
    if req.price is None:
        raise ValueError(f"paper {req.symbol}: resting order {req.client_order_id} has no limit price")
    return req.price


class PaperFills:
    insts: dict[str, Instrument]
    fees: Fees
    settle_ccy: str
    start_balance: Decimal
    cash: Decimal
    funding_paid: Decimal
    ledgers: dict[str, PositionLedger]
    books: dict[str, Any]
    book_ts: dict[str, int]
    orders: dict[str, OrderReport]
    waiting: dict[str, list[tuple[int, OrderRequest]]]
    stop_f: dict[str, float]
    events: list[ExecEvent]
    n_fills: int
    slippage: dict[str, Decimal]
    slippage_total: Decimal
    _used: dict[str, list[Any]]
    _stop_seq: int
    resting: dict[str, list[OrderRequest]]

    def set_stop(self, symbol: str, stop_price: Decimal | None) -> None:
        raise NotImplementedError  # defined by PaperExchange

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

    # ------------------------------------------------------------------ matching
    def _report(
        self, rep: OrderReport, status: OrderStatus, filled: Decimal, avg: Decimal | None, reason: str, ts: int
    ) -> OrderReport:
        new = OrderReport(
            rep.client_order_id,
            rep.exchange,
            rep.symbol,
            rep.side,
            rep.qty,
            status,
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
            price = limit_price(req)
            lim = float(price)
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
                q, v = self._fill(req, [(price, qty)], "maker", ts)
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
