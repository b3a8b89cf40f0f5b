"""Trader core speed on real books (Binance USD-M BTCUSDT recording), pure path, one core.

* **decision latency**: ``TradingEngine.on_signal`` for a confirmed signal while flat, i.e.
  signal -> filters -> strategy -> sizing -> ``OrderRequest`` (p50 / p99 / max, µs), and for a
  signal that decides nothing;
* **paper fills/s on 250-level books** (rebuilt from the raw diffs), market orders walking 1-8
  levels: the matching alone (:func:`trader.fills.walk_levels`: touched levels only) and the
  full ``PaperExchange.submit`` (one ``FillReport`` per level, Decimal fees, FIFO ledger,
  reports), each against a naive reference in the same run that turns the whole side into
  Python floats, sorts it and walks it (same fills and ledgers, checked);
* **books + strategy snapshots/s**: the backtest loop (:class:`trader.backtest.Simulator`:
  paper exchange + engine, trailing stop and daily-loss marks) over every top-25 snapshot with
  a signal every 20 books; the goal is >= 100k snapshots/s.

Run: ``python bench/trader.py [--books N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthpilot.messages import Signal  # noqa: E402
from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF  # noqa: E402
from trader.backtest import BookView, Simulator  # noqa: E402
from trader.config import TraderConfig  # noqa: E402
from trader.domain import Fees, FillReport, Instrument, OrderReport, OrderRequest, to_decimal  # noqa: E402
from trader.engine import TradingEngine  # noqa: E402
from trader.fills import walk_levels  # noqa: E402
from trader.ledger import PositionLedger  # noqa: E402
from trader.paper import PaperExchange  # noqa: E402

USDM = BINANCE_L2DIFF["usdm"]
SYM = "BTCUSDT"
INST = Instrument(
    "binance",
    SYM,
    tick_size=Decimal("0.1"),
    lot_step=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    min_notional=Decimal("5"),
)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def sig(ts: int, up: float, down: float) -> Signal:
    return Signal(
        exchange="binance",
        symbol=SYM,
        ts=ts,
        model_id="bench",
        classes=["down", "flat", "up"],
        probs=[down, max(0.0, 1 - up - down), up],
        score=up - down,
        expires_at=ts + 10**10,
    )


# --------------------------------------------------------------------------- decision latency


def bench_decision(books: list[BookView], n: int) -> None:
    eng = TradingEngine(TraderConfig(confirm_k=1), {SYM: INST})
    eng.start(SYM)
    lat_order: list[float] = []
    lat_none: list[float] = []
    pc = time.perf_counter_ns
    for i in range(n):
        b = books[i % len(books)]
        eng.on_book(b)
        s = sig(b.ts, 0.8, 0.1)
        t0 = pc()
        acts = eng.on_signal(s)
        t1 = pc()
        req = acts[-1]
        assert isinstance(req, OrderRequest), acts
        lat_order.append((t1 - t0) / 1e3)
        # the venue refuses it: flat again, ready for the next sample
        eng.on_order(OrderReport(req.client_order_id, "binance", SYM, req.side, req.qty, "rejected", ts_ns=b.ts))
        s2 = sig(b.ts, 0.3, 0.3)
        t0 = pc()
        eng.on_signal(s2)
        lat_none.append((pc() - t0) / 1e3)
    print(
        f"decision latency, signal -> OrderRequest ({n} samples): p50 {pct(lat_order, 0.5):.1f} µs, "
        f"p99 {pct(lat_order, 0.99):.1f} µs, max {max(lat_order):.1f} µs"
    )
    print(
        f"decision latency, signal -> no action:    p50 {pct(lat_none, 0.5):.1f} µs, p99 {pct(lat_none, 0.99):.1f} µs"
    )


# --------------------------------------------------------------------------- paper fills


def naive_fills(book: BookView, side: str, qty: Decimal) -> list[tuple[Decimal, Decimal]]:
    """Reference: the whole side as Python floats, sorted by price, walked in floats; the
    touched levels become Decimal for the exact accounting (same fills as ours)."""
    lv = book.asks if side == "buy" else book.bids
    levels = sorted((p, s) for p, s in lv.tolist() if p == p)
    if side == "sell":
        levels.reverse()
    out, rest = [], float(qty)
    exact_rest = qty
    for p, s in levels:
        if rest <= 1e-12:
            break
        t = to_decimal(s) if s < rest else exact_rest
        out.append((to_decimal(p), t))
        rest -= s
        exact_rest -= t
    return out


def naive_submit(book: BookView, side: str, qty: Decimal, cid: str, led: PositionLedger, events: list) -> int:
    """Reference paper order: naive matching + the same per-fill accounting as ours."""
    rate = Fees().taker
    parts = naive_fills(book, side, qty)
    for k, (p, q) in enumerate(parts):
        fee = q * p * rate
        led.apply(side, q, p, fee, book.ts)
        events.append(FillReport(cid, "binance", SYM, side, q, p, fee, "USDT", "taker", f"{cid}-{k}", book.ts))
    return len(parts)


def bench_fills(books: list[BookView], qtys: list[Decimal], repeat: int) -> None:
    n_levels = max(len(b.asks) for b in books)
    sides = ["buy" if i % 2 else "sell" for i in range(len(books))]
    for i in range(0, len(books), 50):  # same fills
        ours, rest = walk_levels(books[i].asks if sides[i] == "buy" else books[i].bids, qtys[i])
        assert not rest and ours == naive_fills(books[i], sides[i], qtys[i]), i
    best = {"walk": 0.0, "naive walk": 0.0, "paper": 0.0, "naive paper": 0.0}
    fills = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = 0
        for i, b in enumerate(books):
            n += len(walk_levels(b.asks if sides[i] == "buy" else b.bids, qtys[i])[0])
        best["walk"] = max(best["walk"], n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        n = 0
        for i, b in enumerate(books):
            n += len(naive_fills(b, sides[i], qtys[i]))
        best["naive walk"] = max(best["naive walk"], n / (time.perf_counter() - t0))
        px = PaperExchange({SYM: INST}, fees=Fees(), balance=Decimal("1e12"))
        t0 = time.perf_counter()
        for i, b in enumerate(books):
            px.on_book(b)
            px.submit(OrderRequest(f"o{i}", "binance", SYM, sides[i], qtys[i], ts_ns=b.ts))
            px.events.clear()
        fills = px.n_fills
        best["paper"] = max(best["paper"], fills / (time.perf_counter() - t0))
        led, events = PositionLedger(), []
        t0 = time.perf_counter()
        n = 0
        for i, b in enumerate(books):
            n += naive_submit(b, sides[i], qtys[i], f"o{i}", led, events)
            events.clear()
        best["naive paper"] = max(best["naive paper"], n / (time.perf_counter() - t0))
        assert n == fills and led.signed_qty == px.ledgers[SYM].signed_qty and led.fees == px.ledgers[SYM].fees, (
            n,
            fills,
            led.fees,
            px.ledgers[SYM].fees,
        )
    print(
        f"paper fills on {n_levels}-level books ({len(books)} market orders, {fills / len(books):.1f} levels "
        f"walked per order, identical fills and ledgers in both):"
    )
    print(
        f"  matching only: {best['walk']:,.0f} fills/s vs naive float-and-sort {best['naive walk']:,.0f} fills/s: "
        f"ratio {best['walk'] / best['naive walk']:.1f}x"
    )
    print(
        f"  full paper submit (fills, fees, ledger, reports): {best['paper']:,.0f} fills/s vs the same on naive "
        f"matching {best['naive paper']:,.0f} fills/s: ratio {best['paper'] / best['naive paper']:.1f}x"
    )


# --------------------------------------------------------------------------- books + strategy


def bench_backtest(books: list[BookView], repeat: int) -> None:
    best = 0.0
    for _ in range(repeat):
        cfg = TraderConfig(confirm_k=2, trailing_activation_fraction=Decimal("0.0002"), stop_cooldown_s=5)
        eng = TradingEngine(cfg, {SYM: INST})
        sim = Simulator(
            eng, PaperExchange({SYM: INST}, balance=Decimal("100000"), latency_ns=50_000_000), keep_actions=False
        )
        sim.control("start", SYM)
        mid_ref = None
        t0 = time.perf_counter()
        n_in_pos = 0
        for i, b in enumerate(books):
            sim.book(b)
            if eng.symbols[SYM].led.qty:
                n_in_pos += 1
            if i % 20:
                continue
            mid = b.bids[0, 0] + b.asks[0, 0]
            if mid_ref is not None:
                p = (0.8, 0.1) if mid > mid_ref else (0.1, 0.8) if mid < mid_ref else (0.3, 0.3)
                sim.signal(sig(b.ts, *p))
            mid_ref = mid
        dt = time.perf_counter() - t0
        best = max(best, len(books) / dt)
    print(
        f"books + strategy (backtest loop, top-25 books): {best:,.0f} snapshots/s over {len(books)} books, "
        f"{len(eng.closed)} round trips, in a position on {n_in_pos / len(books):.0%} of books "
        f"(goal >= 100,000/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--books", type=int, default=3000, help="250-level books to rebuild for the fill benchmark")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import random

    from features.io import load_binance_books, load_book_snapshots_csv

    d = data_dir() / USDM
    ts, bids, asks = load_book_snapshots_csv(d / "derived_book_snapshot_25.csv.gz")
    top25 = [BookView("binance", SYM, int(ts[i]), bids[i], asks[i]) for i in range(len(ts))]
    bench_decision(top25, len(top25))
    bench_backtest(top25, args.repeat)
    ts2, b2, a2 = load_binance_books(sorted((d / "raw").glob("*.gz")), depth=250, max_snapshots=args.books)
    valid = [i for i in range(len(ts2)) if b2[i, 0, 0] == b2[i, 0, 0]]  # invalid books are all-NaN rows
    books250 = [BookView("binance", SYM, int(ts2[i]), b2[i], a2[i]) for i in valid]
    rng = random.Random(1)
    qtys = []  # each order walks k levels (k = 1..8): the first k-1 whole, a part of the k-th
    for i, b in enumerate(books250):
        lv = b.asks if i % 2 else b.bids
        k = rng.randint(1, 8)
        whole = sum((to_decimal(float(s)) for s in lv[: k - 1, 1]), Decimal(0))
        part = INST.round_qty(to_decimal(float(lv[k - 1, 1])) * Decimal(rng.random())) or INST.lot_step
        qtys.append(whole + min(part, to_decimal(float(lv[k - 1, 1]))))
    bench_fills(books250, qtys, args.repeat)


if __name__ == "__main__":
    main()
