"""The backtest loop: the live trading engine and the paper exchange over recorded books.

Event by event in time order (:class:`trader.backtest.Simulator`): each book goes to the paper
exchange (orders due by now fill on it, the stop triggers) and to the engine; then the row's
signal (made from that book and earlier ones) goes to the engine. Orders fill on the first book
at or after decision time + ``latency_ns`` (walking its levels, taker fee on every fill). At the
end, a position still open is closed by a flatten decided ``latency`` before the last book, so
it fills on the recording (exit reason ``flatten``).

Also :func:`run_scripted`: fixed trades (entry row, exit row, side) through the same paper
exchange, latency and fees, for the baselines (buy-and-hold, random entries).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np

from backtest.data import Books
from backtest.signals import SignalStream
from trader.actions import ClosedTrade
from trader.backtest import BookView, Simulator
from trader.config import TraderConfig
from trader.domain import ZERO, ExecEvent, Fees, FillReport, Instrument, OrderReport, OrderRequest
from trader.engine import TradingEngine
from trader.paper import PaperExchange

FUNDING_PERIOD_NS = 8 * 3600 * 10**9  # funding at 00:00 / 08:00 / 16:00 UTC
TIMER_NS = 10**9  # engine timer every second of event time, as the service ticks it


@dataclass(frozen=True)
class RunConfig:
    trader: TraderConfig = field(default_factory=TraderConfig)
    fees: Fees = field(default_factory=Fees)
    latency_ns: int = 50_000_000
    balance: Decimal = Decimal(10000)
    funding_rate: Decimal | None = None  # per 8 h, longs pay a positive rate

    def without_costs(self) -> RunConfig:
        return replace(self, fees=Fees(taker=ZERO, maker=ZERO), latency_ns=0)


@dataclass
class RunResult:
    name: str
    trades: list[ClosedTrade]
    fills: list[FillReport]
    start_balance: Decimal
    end_cash: Decimal
    fees_paid: Decimal
    funding_paid: Decimal
    slippage: Decimal  # walking the book vs the touch of the fill book (quote ccy)
    open_qty: Decimal  # position left open at the end (0 normally)
    equity_ts: np.ndarray  # (T,) ns
    equity: np.ndarray  # (T,) float, mark-to-market at mid
    position: np.ndarray  # (T,) float signed qty after each book
    counters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    requests: dict[str, OrderRequest] = field(default_factory=dict)  # client id -> order as decided


class RecordingPaper(PaperExchange):
    """The paper exchange, keeping every fill it reports."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.fill_log: list[FillReport] = []
        self.requests: dict[str, OrderRequest] = {}

    def submit(self, req: OrderRequest) -> OrderReport:
        self.requests.setdefault(req.client_order_id, req)
        return super().submit(req)

    def poll_events(self) -> list[ExecEvent]:
        ev = super().poll_events()
        self.fill_log += [e for e in ev if isinstance(e, FillReport)]
        return ev


def _paper(inst: Instrument, cfg: RunConfig) -> RecordingPaper:
    p = RecordingPaper(
        {inst.symbol: inst},
        fees=cfg.fees,
        latency_ns=cfg.latency_ns,
        balance=cfg.balance,
        settle_ccy=inst.settle_ccy,
        mmr=cfg.trader.maintenance_margin_rate,
        exchange=inst.exchange,
    )
    p.set_leverage(inst.symbol, cfg.trader.leverage)
    return p


def equity_curve(
    books: Books,
    fills: Sequence[FillReport],
    start: Decimal,
    funding: Sequence[tuple[int, float]] = (),
    contract_value: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mark-to-market equity at the mid after every book (float) and the signed position:
    start + cash flows of the fills up to the book (incl. fees, funding) + position x mid."""
    ts = books.ts
    mid = books.mid()
    mid = _ffill(mid)
    ft = np.array([f.ts_ns for f in fills], dtype=np.int64)
    sgn = np.array([1.0 if f.side == "buy" else -1.0 for f in fills])
    q = np.array([float(f.qty) for f in fills]) * sgn * contract_value
    px = np.array([float(f.price) for f in fills])
    fee = np.array([float(f.fee) for f in fills])
    pos_c = np.concatenate(([0.0], np.cumsum(q)))
    cash_c = np.concatenate(([0.0], np.cumsum(-q * px - fee)))
    k = np.searchsorted(ft, ts, side="right")  # fills at or before each book
    eq = float(start) + cash_c[k] + pos_c[k] * np.nan_to_num(mid)
    if funding:
        fts = np.array([t for t, _ in funding], dtype=np.int64)
        fpay = np.concatenate(([0.0], np.cumsum([p for _, p in funding])))
        eq -= fpay[np.searchsorted(fts, ts, side="right")]
    return eq, pos_c[k] / contract_value


def _ffill(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x
    idx = np.where(ok, np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = int(np.argmax(ok))
    out[:first] = x[first]
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a backtest loop: it allocates a message per row
    (no cycles, freed by reference counting), and each collection it would trigger walks every
    object of the process (a loaded model's included): tens of ms per run, at random."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def run_signals(
    books: Books,
    stream: SignalStream | None,
    inst: Instrument,
    cfg: RunConfig,
    *,
    on_progress: Callable[[int], None] | None = None,
    name: str = "",
    every_book: bool = False,
) -> RunResult:
    """The engine + paper exchange over ``books`` with ``stream``'s signals (None = no signal).

    Books that provably change nothing are not handed over (:mod:`backtest.schedule`: flat,
    nothing pending, no signal, not read by the next timer/funding); ``every_book=True`` hands
    over every one (the reference the tests compare with)."""
    t0 = time.perf_counter()
    with gc_paused():
        return _run_signals(books, stream, inst, cfg, t0, on_progress, name, every_book)


def _run_signals(
    books: Books,
    stream: SignalStream | None,
    inst: Instrument,
    cfg: RunConfig,
    t0: float,
    on_progress: Callable[[int], None] | None,
    name: str,
    every_book: bool,
) -> RunResult:
    from backtest.schedule import funding_rows, static_rows, timer_rows

    sym = inst.symbol
    eng = TradingEngine(cfg.trader, {sym: inst})
    paper = _paper(inst, cfg)
    sim = Simulator(eng, paper, keep_actions=False)
    sigs = stream.events(books) if stream is not None else [[] for _ in range(len(books))]
    T = len(books)
    sim.control("start", sym)
    last = decision_row(books, sigs, cfg.latency_ns)
    done = False
    funding: list[tuple[int, float]] = []
    next_fund = (int(books.ts[0]) // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS if T else 0
    step = max(1, T // 100)
    ts_l = books.ts.tolist()
    valid_l = books.valid.tolist()
    timer = timer_rows(books.ts, TIMER_NS)
    fund = funding_rows(books.ts, FUNDING_PERIOD_NS) if cfg.funding_rate is not None else np.zeros(T, dtype=bool)
    has_sig = np.fromiter((bool(s) for s in sigs), dtype=bool, count=T)
    need = np.ones(T, dtype=bool) if every_book else static_rows(books.ts, books.valid, has_sig, timer, fund, last)
    timer_l, fund_l, need_l = timer.tolist(), fund.tolist(), need.tolist()
    st = eng.symbols[sym]
    e_led, p_led = st.led, paper.ledgers[sym]
    waiting, resting = paper.waiting, paper.resting
    ex, bids, asks = books.exchange, books.bids, books.asks
    for i in range(T):
        t = ts_l[i]
        if timer_l[i]:  # the service's periodic timer: stale book / no fresh signal halts
            sim.timer(t)
        if fund_l[i]:
            pay = paper.apply_funding(sym, cfg.funding_rate) if valid_l[i] else ZERO  # type: ignore[arg-type]
            if pay:
                funding.append((next_fund, float(pay)))
            next_fund += FUNDING_PERIOD_NS
        if not need_l[i] and not (
            e_led.qty
            or p_led.qty
            or st.pending
            or waiting.get(sym)
            or resting.get(sym)
            or paper.events
            or (st.trading and not st.started_ts)
        ):
            continue  # flat and idle: this book changes nothing the next event reads
        ok = valid_l[i]
        sim.book(BookView(ex, sym, t, bids[i], asks[i], ok, "" if ok else "invalid book"), t)
        if done:
            continue
        for s in sigs[i]:
            sim.signal(s)
        if i >= last:
            sim.control("stop", sym, True)
            done = True
        if on_progress is not None and i % step == 0:
            on_progress(i)
    if on_progress is not None:
        on_progress(T)
    led = paper.ledgers[sym]
    eq, pos = equity_curve(books, paper.fill_log, cfg.balance, funding, float(inst.contract_value))
    return RunResult(
        name or (stream.name if stream else "flat"),
        list(eng.closed),
        list(paper.fill_log),
        cfg.balance,
        paper.cash,
        led.fees,
        paper.funding_paid,
        paper.slippage_total,
        led.signed_qty,
        books.ts.copy(),
        eq,
        pos,
        dict(eng.counters),
        time.perf_counter() - t0,
        dict(paper.requests),
    )


def flatten_row(books: Books, latency_ns: int) -> int:
    """The last row whose decision still fills on the recording (ts + latency <= last ts);
    no new decision after it, and an open position is closed there."""
    T = len(books)
    if not T:
        return 0
    j = int(np.searchsorted(books.ts, int(books.ts[-1]) - latency_ns, side="right")) - 1
    return max(0, j)


def decision_row(books: Books, sigs: Sequence[Sequence[Any]], latency_ns: int) -> int:
    """:func:`flatten_row` for a run with signals: the engine's clock at a row is the latest of the
    book times and the signal times handed to it so far (a sampled tick reaches the engine after
    its book, with a later time), so the last decision whose fill still sees a book may come a row
    earlier."""
    T = len(books)
    if not T:
        return 0
    sig_t = np.fromiter(
        ((ss[0].ts if len(ss) == 1 else max(x.ts for x in ss)) if ss else 0 for ss in sigs), np.int64, T
    )
    t = np.maximum(books.ts.astype(np.int64), sig_t)
    ok = np.flatnonzero(np.maximum.accumulate(t) + latency_ns <= int(books.ts[-1]))
    return int(ok[-1]) if ok.size else 0


def entry_qty(inst: Instrument, cfg: TraderConfig, price: float) -> Decimal:
    """The engine's sizing for one entry at ``price``: budget x leverage, capped, floored to the lot."""
    notional = min(cfg.budget * cfg.leverage, cfg.max_order_notional, cfg.max_position_notional)
    return inst.round_qty(notional / Decimal(repr(price)))


def run_scripted(
    books: Books,
    plan: Sequence[tuple[int, int, str]],
    inst: Instrument,
    cfg: RunConfig,
    name: str = "scripted",
    *,
    every_book: bool = False,
) -> RunResult:
    """Fixed round trips ``(entry_row, exit_row, "long"|"short")`` (non-overlapping, in order),
    market orders decided at those books and filled ``latency`` later, with the same fees.

    A book while flat with nothing pending and no plan event at its row is not handed to the
    paper exchange (it changes nothing read later; funding is still accounted on every row);
    ``every_book=True`` hands over every one (the reference the tests compare with)."""
    t0 = time.perf_counter()
    sym = inst.symbol
    paper = _paper(inst, cfg)
    views = books.views()
    T = len(views)
    at: dict[int, list[tuple[str, int, str]]] = {}
    for k, (a, b, side) in enumerate(plan):
        at.setdefault(a, []).append(("entry", k, side))
        at.setdefault(min(b, T - 1), []).append(("exit", k, side))
    last = flatten_row(books, cfg.latency_ns)
    trades: list[ClosedTrade] = []
    open_k: tuple[int, str] | None = None  # the round trip whose entry was sent
    want_exit = exit_sent = False
    led = paper.ledgers[sym]

    def settle() -> None:
        nonlocal open_k, want_exit, exit_sent
        if open_k is None:
            return
        if exit_sent and not led.qty:
            trades.append(_closed(inst, paper.fill_log, open_k[0], open_k[1]))
            open_k, want_exit, exit_sent = None, False, False
        elif not led.qty and paper.orders[f"e{open_k[0]}"].terminal and not paper.orders[f"e{open_k[0]}"].filled_qty:
            open_k, want_exit, exit_sent = None, False, False  # the entry found no liquidity

    funding: list[tuple[int, float]] = []
    next_fund = (int(books.ts[0]) // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS if T else 0
    for i in range(T):
        v = views[i]
        if cfg.funding_rate is not None and v.ts >= next_fund:  # same funding as the engine's run
            pay = paper.apply_funding(sym, cfg.funding_rate) if v.valid else ZERO
            if pay:
                funding.append((next_fund, float(pay)))
            next_fund += FUNDING_PERIOD_NS
        todo = at.get(i)
        if (
            not every_book
            and open_k is None
            and todo is None
            and not led.qty
            and not paper.events
            and not paper.waiting.get(sym)
        ):
            continue  # flat, nothing pending, no plan event: the book changes nothing read later
        paper.on_book(v)
        if paper.events:
            paper.poll_events()
        settle()
        for what, k, side in todo or ():
            if what == "entry" and v.valid and i < last and not led.qty and open_k is None:
                qty = entry_qty(inst, cfg.trader, float(v.asks[0, 0] if side == "long" else v.bids[0, 0]))
                if qty < inst.min_qty:
                    continue
                paper.submit(
                    OrderRequest(
                        f"e{k}",
                        inst.exchange,
                        sym,
                        "buy" if side == "long" else "sell",
                        qty,
                        reason="entry",
                        ts_ns=v.ts,
                    )
                )
                open_k = (k, side)
            elif what == "exit" and open_k is not None and open_k[0] == k:
                want_exit = True
        if open_k is not None and i >= last:
            want_exit = True
        # the exit goes once the entry has filled (with a long latency it may fill after the exit row)
        if want_exit and not exit_sent and led.qty and v.valid and open_k is not None:
            _exit(paper, inst, open_k[0], open_k[1], v.ts)
            exit_sent = True
        if paper.events:
            paper.poll_events()
        settle()
    eq, pos = equity_curve(books, paper.fill_log, cfg.balance, funding, float(inst.contract_value))
    return RunResult(
        name,
        trades,
        list(paper.fill_log),
        cfg.balance,
        paper.cash,
        led.fees,
        paper.funding_paid,
        paper.slippage_total,
        led.signed_qty,
        books.ts.copy(),
        eq,
        pos,
        {},
        time.perf_counter() - t0,
        dict(paper.requests),
    )


def _exit(paper: PaperExchange, inst: Instrument, k: int, side: str, ts: int) -> None:
    led = paper.ledgers[inst.symbol]
    if led.qty:
        paper.submit(
            OrderRequest(
                f"x{k}",
                inst.exchange,
                inst.symbol,
                "sell" if side == "long" else "buy",
                led.qty,
                reduce_only=True,
                reason="exit",
                ts_ns=ts,
            )
        )


def _closed(inst: Instrument, fills: Sequence[FillReport], k: int, side: str) -> ClosedTrade:
    ent = [f for f in fills if f.client_order_id == f"e{k}"]
    ext = [f for f in fills if f.client_order_id == f"x{k}"]
    qe = sum((f.qty for f in ent), ZERO)
    qx = sum((f.qty for f in ext), ZERO)
    pe = sum((f.qty * f.price for f in ent), ZERO) / qe
    px = sum((f.qty * f.price for f in ext), ZERO) / qx
    s = 1 if side == "long" else -1
    gross = s * (sum((f.qty * f.price for f in ext), ZERO) - sum((f.qty * f.price for f in ent), ZERO))
    gross *= inst.contract_value
    fees = sum((f.fee for f in ent + ext), ZERO)
    return ClosedTrade(
        inst.exchange,
        inst.symbol,
        "long" if s > 0 else "short",
        qe,
        pe,
        px,
        ent[0].ts_ns,
        ext[-1].ts_ns,
        gross,
        fees,
        gross - fees,
        "scripted",
    )
