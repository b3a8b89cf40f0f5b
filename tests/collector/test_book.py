"""collector.book.L2Book (window + far dicts) against a naive dict reference.

Synthetic data on purpose: the sequences below force shapes real recordings rarely give in a
short window (the window emptied by a falling market, trims in a rising one, tiny windows,
duplicate and absent prices inside one batch, a side emptied and refilled, snapshot
replacement, sizes <= 0). The real-recording checks (bookTicker equality) live in
test_binance_book.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from collector.book import DEFAULT_WINDOW, MAX_WINDOW, BookSide, L2Book, make_snapshot


class NaiveBook:
    """The obvious reference: two dicts, max/min and sorted() on demand."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, bids, asks) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                p, q = float(p), float(q)
                if q > 0.0:
                    side[p] = q
                else:
                    side.pop(p, None)

    def snapshot(self, bids, asks) -> None:
        self.bids = {float(p): float(q) for p, q in bids if float(q) > 0.0}
        self.asks = {float(p): float(q) for p, q in asks if float(q) > 0.0}

    def top(self, n: int):
        b = sorted(self.bids.items(), reverse=True)[: max(n, 0)]
        a = sorted(self.asks.items())[: max(n, 0)]
        return b, a


def check_equal(book: L2Book, ref: NaiveBook, n: int) -> None:
    assert book.bids == ref.bids and book.asks == ref.asks
    assert len(book) == len(ref.bids) + len(ref.asks)
    bb = max(ref.bids) if ref.bids else None
    ba = min(ref.asks) if ref.asks else None
    assert book.best_bid_price() == bb and book.best_ask_price() == ba
    assert book.best_bid() == (None if bb is None else (bb, ref.bids[bb]))
    assert book.best_ask() == (None if ba is None else (ba, ref.asks[ba]))
    assert book.is_crossed() == (bb is not None and ba is not None and bb >= ba)
    got_b, got_a = book.top(n)
    want_b, want_a = ref.top(n)
    assert got_b.dtype == np.float64 and got_b.shape == (len(want_b), 2)
    assert got_a.dtype == np.float64 and got_a.shape == (len(want_a), 2)
    assert [tuple(r) for r in got_b.tolist()] == want_b
    assert [tuple(r) for r in got_a.tolist()] == want_a


def check_invariants(book: L2Book) -> None:
    """Internal partition (white-box): window = levels beyond the boundary, far = the rest."""
    assert all(p >= book._lo for p in book._wb) and all(p < book._lo for p in book._fb)
    assert all(p <= book._hi for p in book._wa) and all(p > book._hi for p in book._fa)
    assert bool(book._wb) or not book._fb
    assert bool(book._wa) or not book._fa


def _random_levels(rng: random.Random, grid: list[float], k: int, offset: float):
    sizes = [0.0, 0.0, -1.0, 0.5, 1.0, 2.25, 7.0]
    return [(grid[rng.randrange(len(grid))] + offset, rng.choice(sizes)) for _ in range(k)]


@pytest.mark.parametrize("window", [1, 2, 3, 7, DEFAULT_WINDOW])
@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_naive_reference(window, seed):
    rng = random.Random(seed * 1000 + window)
    tick = rng.choice([0.01, 0.5, 1.0])
    grid = [round(1000.0 + i * tick, 2) for i in range(rng.choice([8, 60, 300]))]
    book, ref = L2Book(window), NaiveBook()
    for _step in range(400):
        op = rng.random()
        if op < 0.70:  # a diff batch (may repeat a price, delete absent levels, cross the book)
            bl = _random_levels(rng, grid, rng.randint(0, 25), 0.0)
            al = _random_levels(rng, grid, rng.randint(0, 25), tick / 4)
            book.apply_levels(bl, al)
            ref.apply(bl, al)
        elif op < 0.85:  # single levels, as the Bybit/OKX/Kraken builders do
            p, q = _random_levels(rng, grid, 1, 0.0)[0]
            if rng.random() < 0.5:
                book.set_bid(p, q)
                ref.apply([(p, q)], [])
            else:
                book.set_ask(p + tick / 4, q)
                ref.apply([], [(p + tick / 4, q)])
        elif op < 0.93:  # string levels
            bl = [(str(p), str(q)) for p, q in _random_levels(rng, grid, 5, 0.0)]
            book.apply_deltas(bl, [])
            ref.apply(bl, [])
        elif op < 0.98:  # snapshot replaces everything
            bl = _random_levels(rng, grid, rng.randint(0, 200), 0.0)
            al = [(str(p), q) for p, q in _random_levels(rng, grid, rng.randint(0, 200), tick / 4)]
            book.apply_snapshot(bl, al)
            ref.snapshot(bl, al)
        else:
            book.clear()
            ref = NaiveBook()
        check_equal(book, ref, rng.randint(1, 40))
        check_invariants(book)


def _count_calls(monkeypatch, names):
    counts = dict.fromkeys(names, 0)
    for name in names:
        orig = getattr(L2Book, name)

        def wrapper(self, *args, _orig=orig, _name=name):
            counts[_name] += 1
            return _orig(self, *args)

        monkeypatch.setattr(L2Book, name, wrapper)
    return counts


@pytest.mark.parametrize("direction", [-1, 1])
def test_trending_market_moves_through_the_window(monkeypatch, direction):
    """A steady trend empties one side's window (refill from far levels) and grows the other
    (trim to far levels); the best prices and top(n) stay exact throughout."""
    counts = _count_calls(monkeypatch, ["_fill_bids", "_fill_asks", "_trim_bids", "_trim_asks"])
    rng = random.Random(7 + direction)
    book, ref = L2Book(window=8), NaiveBook()
    mid = 10_000
    bl = [(float(mid - i), 1.0 + i) for i in range(1, 300)]
    al = [(float(mid + i), 1.0 + i) for i in range(1, 300)]
    book.apply_snapshot(bl, al)
    ref.snapshot(bl, al)
    for _ in range(400):
        new_mid = mid + direction * rng.randint(1, 3)
        bl, al = [], []
        if direction < 0:  # bids at/above the new mid are pulled, asks follow the price down
            bl += [(float(p), 0.0) for p in range(new_mid, mid + 1)]
            al += [(float(new_mid + i), 1.0) for i in range(1, 4)]
        else:
            al += [(float(p), 0.0) for p in range(mid, new_mid + 1)]
            bl += [(float(new_mid - i), 1.0) for i in range(1, 4)]
        bl += _random_levels(rng, [float(new_mid - i) for i in range(1, 60)], 6, 0.0)
        al += _random_levels(rng, [float(new_mid + i) for i in range(1, 60)], 6, 0.0)
        rng.shuffle(bl)  # level order inside a diff must not matter
        book.apply_levels(bl, al)
        ref.apply(bl, al)
        mid = new_mid
        check_equal(book, ref, 5)
        check_invariants(book)
    if direction < 0:
        assert counts["_fill_bids"] >= 10 and counts["_trim_asks"] >= 10
    else:
        assert counts["_fill_asks"] >= 10 and counts["_trim_bids"] >= 10


def test_top_grows_the_window_and_stays_exact():
    rng = random.Random(3)
    book, ref = L2Book(window=4), NaiveBook()
    bl = [(1000.0 - i * 0.5, rng.uniform(0.1, 5)) for i in range(500)]
    al = [(1000.5 + i * 0.5, rng.uniform(0.1, 5)) for i in range(500)]
    rng.shuffle(bl)
    book.apply_snapshot(bl, al)
    ref.snapshot(bl, al)
    check_equal(book, ref, 250)
    assert book.window == 250 and len(book._wb) >= 250 and len(book._wa) >= 250
    for _ in range(50):
        bl = _random_levels(rng, [1000.0 - i * 0.5 for i in range(600)], 30, 0.0)
        al = _random_levels(rng, [1000.5 + i * 0.5 for i in range(600)], 30, 0.0)
        book.apply_levels(bl, al)
        ref.apply(bl, al)
        check_equal(book, ref, 250)
        check_invariants(book)
    # more levels than the book holds; beyond MAX_WINDOW (whole-side sort, window not grown)
    check_equal(book, ref, 10_000)
    assert book.window == 250
    check_equal(book, ref, MAX_WINDOW)
    assert book.window == MAX_WINDOW


def test_top_edge_cases_and_snapshot_message():
    book = L2Book()
    for n in (0, -3, 1, 5000):
        b, a = book.top(n)
        assert b.shape == (0, 2) and a.shape == (0, 2)
    book.apply_snapshot([("10.5", "2"), ("10.0", "0"), ("9.5", "1")], [(11.0, 3.0)])
    assert book.top(0)[0].shape == (0, 2)
    b, a = book.top(10)
    assert b.tolist() == [[10.5, 2.0], [9.5, 1.0]] and a.tolist() == [[11.0, 3.0]]
    book.seq, book.ts_exchange = 42, 7
    snap = make_snapshot(book, "binance", "BTCUSDT", 9, 1, valid=False, reason="x")
    assert snap.bids.tolist() == [[10.5, 2.0]] and snap.asks.tolist() == [[11.0, 3.0]]
    assert (snap.seq, snap.ts_exchange, snap.ts_recv, snap.depth, snap.valid, snap.reason) == (42, 7, 9, 1, False, "x")
    # emptying a side, then refilling it
    book.apply_levels([(10.5, 0.0), (9.5, 0.0)], [])
    assert book.best_bid() is None and book.best_bid_price() is None and not book.is_crossed()
    book.apply_levels([(11.5, 1.0)], [])
    assert book.best_bid() == (11.5, 1.0) and book.is_crossed()
    book.clear()
    assert len(book) == 0 and book.best_ask() is None and book.seq == 0


def test_book_side_is_a_read_only_live_view():
    book = L2Book(window=2)
    levels = [(100.0 - i, float(i + 1)) for i in range(6)]
    book.apply_snapshot(levels, [])
    view = book.bids
    assert isinstance(view, BookSide) and len(view) == 6
    assert view == dict(levels) and dict(levels) == view and view != {100.0: 1.0}
    assert view.copy() == dict(levels) and dict(view) == dict(levels)
    assert sorted(view) == sorted(p for p, _ in levels) and sorted(view.items()) == sorted(levels)
    assert 95.0 in view and 94.0 not in view and view[95.0] == 6.0 and view.get(94.0) is None
    with pytest.raises(KeyError):
        view[94.0]
    with pytest.raises(TypeError):
        view[94.0] = 1.0  # type: ignore[index]
    book.set_bid(94.0, 3.0)  # live: the same view sees later changes
    assert view[94.0] == 3.0 and len(view) == 7
    assert view != L2Book().bids  # comparing two views works
    other = L2Book()
    other.apply_snapshot(list(view.items()), [])
    assert other.bids == view
    assert "BookSide(" in repr(view)


def test_window_argument_is_validated():
    for bad in (0, MAX_WINDOW + 1, 2.5):
        with pytest.raises(ValueError):
            L2Book(bad)  # type: ignore[arg-type]
