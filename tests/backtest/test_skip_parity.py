"""The backtest loop that leaves idle books out (backtest.schedule) gives exactly the results of
handing every book to the engine and the paper exchange: trades, fills, cash, fees, funding,
slippage, equity, positions, counters and orders, on the real recordings and on adversarial
streams (trailing stops, long latency, expiring signals, daily-loss flatten, stop cooldown,
funding, sampled-clock signals, invalid stretches)."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
import numpy as np
import pytest

from backtest.data import Books, infer_instrument
from backtest.run import FUNDING_PERIOD_NS, TIMER_NS, RunConfig, RunResult, flatten_row, run_scripted, run_signals
from backtest.schedule import funding_rows, timer_rows
from backtest.signals import SignalStream
from trader.config import TraderConfig

CLASSES = ["down", "flat", "up"]


def assert_same(a: RunResult, b: RunResult) -> None:
    assert a.trades == b.trades
    assert a.fills == b.fills
    assert a.requests == b.requests
    for name in ("end_cash", "fees_paid", "funding_paid", "slippage", "open_qty", "counters"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("equity_ts", "equity", "position"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def both(books: Books, stream: SignalStream | None, cfg: RunConfig) -> tuple[RunResult, RunResult]:
    inst = infer_instrument(books)
    fast = run_signals(books, stream, inst, cfg)
    ref = run_signals(books, stream, inst, cfg, every_book=True)
    assert_same(fast, ref)
    return fast, ref


def sparse(n: int, rng: np.random.Generator, every: int, ttl_ns: int = 10**10, ts=None) -> SignalStream:
    """Random directional bursts at random rows (runs of 1-4 agreeing readings)."""
    probs = np.full((n, 3), np.nan)
    rows = np.sort(rng.choice(n, size=max(2, n // every), replace=False))
    cls = np.repeat(rng.integers(0, 3, size=rows.size // 3 + 1), 3)[: rows.size]
    probs[rows] = 0.05
    probs[rows, cls] = 0.9
    return SignalStream("adv", CLASSES, probs, ttl_ns, ts=ts)


def with_gaps(books: Books, rng: np.random.Generator) -> Books:
    """Invalid stretches (data halts) in the middle of the recording."""
    valid = books.valid.copy()
    for s in rng.integers(0, len(books) - 200, size=4):
        valid[s : s + int(rng.integers(5, 150))] = False
    return Books(books.exchange, books.symbol, books.ts, books.bids, books.asks, valid, books.source)


TIGHT = dict(max_loss_fraction=D("0.02"), trailing_activation_fraction=D("0.0002"), trailing_lock_fraction=D("0.9"))
CASES = {
    "defaults": (RunConfig(), 40),
    "trailing_and_stops": (RunConfig(trader=TraderConfig(**TIGHT, stop_cooldown_s=30.0)), 30),
    "long_latency": (RunConfig(latency_ns=2_000_000_000), 25),
    "daily_loss_flatten": (RunConfig(trader=TraderConfig(daily_loss_limit=D("0.05"), **TIGHT)), 20),
    "confirm_1_neutral_exit": (
        RunConfig(trader=TraderConfig(confirm_k=1, exit_on_neutral=True, smoothing_alpha=0.5)),
        15,
    ),
    "funding": (RunConfig(funding_rate=D("0.0001")), 30),
    "stale_books_halt": (RunConfig(trader=TraderConfig(max_book_age_s=0.2, max_signal_age_s=2.0)), 60),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_adversarial_streams_on_usdm(usdm_books, case: str) -> None:
    cfg, every = CASES[case]
    rng = np.random.default_rng(len(case))
    books = with_gaps(usdm_books, rng)
    fast, _ = both(books, sparse(len(books), rng, every), cfg)
    assert fast.fills, "the case made no trade: it proves nothing"


class Expiring(SignalStream):
    """Every third signal arrives already expired (a predictor lagging the books)."""

    def events(self, books: Books):  # type: ignore[override]
        out = super().events(books)
        k = 0
        for row in out:
            for j, sig in enumerate(row):
                k += 1
                if k % 3 == 0:
                    row[j] = msgspec.structs.replace(sig, expires_at=sig.ts - 1)
        return out


def test_expiring_signals_and_sampled_clock(spot_books) -> None:
    rng = np.random.default_rng(5)
    n = len(spot_books)
    tick_ts = np.sort(rng.choice(spot_books.ts, size=n // 10, replace=False)) + 7  # a sampled clock
    base = sparse(n // 10, rng, 2, ts=tick_ts)
    stream = Expiring(base.name, base.classes, base.probs, base.ttl_ns, ts=base.ts)
    for cfg in (RunConfig(), RunConfig(trader=TraderConfig(**TIGHT, confirm_k=1))):
        fast, _ = both(spot_books, stream, cfg)
        assert fast.counters["ignored_expired"] > 0 and fast.fills


def test_model_signals_on_both_recordings(pred, usdm_books, spot_books) -> None:
    from backtest.signals import feature_matrix, model_probs

    for books in (usdm_books, spot_books):
        stream = model_probs(pred, books, feature_matrix(pred, books))
        both(books, stream, RunConfig())
        both(books, stream, RunConfig(trader=TraderConfig(**TIGHT, entry_threshold=0.4, confirm_k=1)))
    both(usdm_books, None, RunConfig())  # no signal at all


def test_timer_and_funding_rows_follow_the_event_loop() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        gaps = rng.choice([1, 10**8, 7 * 10**8, 3 * 10**9, 9 * 3600 * 10**9, 30 * 3600 * 10**9], size=300)
        ts = np.cumsum(gaps) + int(rng.integers(0, 10**12))
        ts[rng.integers(0, 300, size=20)] += 0  # equal neighbours happen via gap 1 too
        ts = np.maximum.accumulate(ts)
        want_t = np.zeros(len(ts), dtype=bool)
        want_f = np.zeros(len(ts), dtype=bool)
        nt = int(ts[0]) + TIMER_NS
        nf = (int(ts[0]) // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS
        for i, t in enumerate(ts.tolist()):  # the loop as it was written event by event
            if t >= nt:
                want_t[i] = True
                nt = t + TIMER_NS
            if t >= nf:
                want_f[i] = True
                nf += FUNDING_PERIOD_NS
        assert np.array_equal(timer_rows(ts, TIMER_NS), want_t)
        assert np.array_equal(funding_rows(ts, FUNDING_PERIOD_NS), want_f)


@pytest.mark.parametrize("latency_ms, funding", [(50, False), (400, True), (0, True)])
def test_scripted_baselines_leave_idle_books_out_with_the_same_results(usdm_books, latency_ms, funding) -> None:
    """The baselines' scripted trades (buy-and-hold, random entries) skip flat idle books; the
    result equals handing every book over, with funding (charged while flat too: nothing) and
    latencies that make the entry fill rows after it was sent, or at once."""
    from backtest.baselines import buy_and_hold_plan, random_plan

    books = with_gaps(usdm_books, np.random.default_rng(7))
    inst = infer_instrument(books)
    cfg = RunConfig(latency_ns=latency_ms * 1_000_000, funding_rate=D("0.0001") if funding else None)
    last = flatten_row(books, cfg.latency_ns)
    # funding every 8 h: shift the clock so that two funding times fall inside the recording
    if funding:
        span = int(books.ts[-1] - books.ts[0])
        shift = (int(books.ts[0]) // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS - int(books.ts[0]) - span // 3
        books = Books(books.exchange, books.symbol, books.ts + shift, books.bids, books.asks, books.valid, books.source)
    plans = [buy_and_hold_plan(books, last), [(5, 9, "long"), (9, 12, "short"), (100, 100, "long")]]
    plans += [random_plan(last + 1, [40, 300, 7, 1500], seed, 0) for seed in range(4)]
    paid = []
    for plan in plans:
        fast = run_scripted(books, plan, inst, cfg)
        ref = run_scripted(books, plan, inst, cfg, every_book=True)
        assert_same(fast, ref)
        assert fast.trades or not plan
        paid.append(fast.funding_paid)
    assert any(paid) == funding  # buy-and-hold holds across the funding time
