"""Binance diff-depth book rebuild throughput: decode + sync-check + apply, per core.

Runs on the real Binance spot and USD-M recordings (``<data_dir>/binance-*-l2diff/raw``).
The depth lines (and the REST snapshot line) are read into memory first so gzip/file I/O is
not timed. Measured in the same process:

* ``collector``: :func:`collector.exchanges.binance.parse_line` (msgspec typed decode) +
  :class:`BinanceDiffBook.on_diff` (sync rule + :class:`L2Book` apply + crossed check);
* ``reference``: stdlib ``json.loads`` + a naive dict book that converts every price/size with
  ``float()`` and recomputes best bid/ask with ``max``/``min`` after every diff (same sync
  rule), i.e. the obvious first implementation;
* ``collector, window=depth``: the same, with the book's near-top window already at the emit
  depth, as it is once ``top(depth)`` has been called (the live source and the feature
  rebuild emit a snapshot after every applied diff);
* the emit path, measured separately: the first ``L2Book.top(250)`` on the final book (it
  grows the window from the default to 250 levels), then repeated ``top(250)`` and a full
  ``BookSnapshot`` (top 250 + message construction), against sorting the naive dicts.

Run: ``python bench/book_rebuild.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.book import make_snapshot  # noqa: E402
from collector.exchanges.binance import BinanceDiffBook, parse_line  # noqa: E402
from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF  # noqa: E402

DATASETS = BINANCE_L2DIFF


def load_lines(raw_dir: Path) -> list[bytes]:
    """Snapshot + depth-diff lines of a recording window, in file order."""
    out: list[bytes] = []
    for f in sorted(raw_dir.glob("*.gz")):
        with gzip.open(f, "rb") as fh:
            for line in fh:
                head = line[:80]
                if b"@depth" in head or b'{"lastUpdateId"' in head:
                    out.append(line)
    return out


# --------------------------------------------------------------------------- reference


class NaiveBook:
    """The straightforward version: dicts, float() per field, max/min after every diff."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        self.snap_id: int | None = None
        self.last_u: int | None = None
        self.applied = 0
        self.pending: list[dict] = []

    def snapshot(self, obj: dict) -> None:
        self.bids = {float(p): float(q) for p, q in obj["bids"] if float(q) > 0}
        self.asks = {float(p): float(q) for p, q in obj["asks"] if float(q) > 0}
        self.snap_id = obj["lastUpdateId"]
        pending, self.pending = self.pending, []
        for d in pending:
            self.diff(d)

    def diff(self, d: dict) -> None:
        if self.snap_id is None:
            self.pending.append(d)  # buffered until the snapshot arrives
            return
        if self.last_u is None:
            L = self.snap_id
            if (d["u"] < L) if self.futures else (d["u"] <= L):
                return
        elif (d["pu"] != self.last_u) if self.futures else (d["U"] != self.last_u + 1):
            raise RuntimeError("reference book: sequence break")
        for p, q in d["b"]:
            p, q = float(p), float(q)
            if q > 0:
                self.bids[p] = q
            else:
                self.bids.pop(p, None)
        for p, q in d["a"]:
            p, q = float(p), float(q)
            if q > 0:
                self.asks[p] = q
            else:
                self.asks.pop(p, None)
        self.best_bid = max(self.bids) if self.bids else None
        self.best_ask = min(self.asks) if self.asks else None
        self.last_u = d["u"]
        self.applied += 1


def run_reference(lines: list[bytes], futures: bool) -> tuple[int, float, NaiveBook]:
    t0 = time.perf_counter()
    book = NaiveBook(futures)
    loads = json.loads
    n = 0
    for line in lines:
        obj = loads(line[line.index(b" ") + 1 :])
        if "stream" in obj:
            book.diff(obj["data"])
            n += 1
        else:
            book.snapshot(obj)
    return n, time.perf_counter() - t0, book


def run_collector(lines: list[bytes], window: int | None = None) -> tuple[int, float, BinanceDiffBook]:
    t0 = time.perf_counter()
    b = BinanceDiffBook("auto")
    if window is not None:
        b.book.window = window
    on_diff = b.on_diff
    n = 0
    for line in lines:
        rec = parse_line(line)
        if rec.kind == "depth":
            on_diff(rec.msg)
            n += 1
        else:
            b.on_snapshot_msg(rec.msg)
    return n, time.perf_counter() - t0, b


def best_of(fn, repeat: int):
    best = None
    for _ in range(repeat):
        r = fn()
        if best is None or r[1] < best[1]:
            best = r
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per implementation (best is reported)")
    ap.add_argument("--depth", type=int, default=250, help="levels per side on the emit path")
    args = ap.parse_args()
    root = data_dir()
    print(f"data dir: {root}")
    for market, name in DATASETS.items():
        raw = root / name / "raw"
        if not raw.is_dir():
            print(f"[{market}] SKIP: {raw} not found")
            continue
        lines = load_lines(raw)
        futures = market == "usdm"
        n_ref, t_ref, ref = best_of(lambda lines=lines, futures=futures: run_reference(lines, futures), args.repeat)
        n_col, t_col, col = best_of(lambda lines=lines: run_collector(lines), args.repeat)
        if col.gaps or col.book.is_crossed():
            print(f"[{market}] WARNING: gaps={col.gaps} crossed={col.book.is_crossed()}")
        same = col.book.best_bid_price() == ref.best_bid and col.book.best_ask_price() == ref.best_ask
        rate_ref = n_ref / t_ref
        rate_col = n_col / t_col
        levels = len(col.book)
        print(
            f"[{market}] {n_col} diff msgs (+1 snapshot), final book {levels} levels, "
            f"applied={col.applied} dropped={col.dropped} gaps={col.gaps}, final BBO equal to reference: {same}"
        )
        print(
            f"[{market}]   reference (json + naive dict book): {rate_ref:12,.0f} msg/s  ({1e6 / rate_ref:6.2f} us/msg)"
        )
        print(
            f"[{market}]   collector (msgspec + L2Book)      : {rate_col:12,.0f} msg/s  ({1e6 / rate_col:6.2f} us/msg)"
        )
        print(f"[{market}]   ratio collector/reference         : {rate_col / rate_ref:6.2f}x")
        n_w, t_w, col_w = best_of(lambda lines=lines: run_collector(lines, args.depth), args.repeat)
        assert col_w.book.bids == col.book.bids and col_w.book.asks == col.book.asks
        rate_w = n_w / t_w
        print(
            f"[{market}]   collector, window={args.depth:<4d}           : {rate_w:12,.0f} msg/s  ({1e6 / rate_w:6.2f} us/msg)"
            f"  ratio to reference {rate_w / rate_ref:5.2f}x"
        )

        # emit path (throttled in production): top-N sort + BookSnapshot construction
        book = col.book
        t0 = time.perf_counter()
        book.top(args.depth)  # first call: grows the window to args.depth levels per side
        t_first = time.perf_counter() - t0
        k = 300
        t0 = time.perf_counter()
        for _ in range(k):
            book.top(args.depth)
        t_top = (time.perf_counter() - t0) / k
        t0 = time.perf_counter()
        for _ in range(k):
            make_snapshot(book, "binance", "BTCUSDT", 0, args.depth)
        t_snap = (time.perf_counter() - t0) / k
        # reference emit: full sort of both sides each time
        t0 = time.perf_counter()
        for _ in range(k):
            sb = sorted(ref.bids.items(), reverse=True)[: args.depth]
            sa = sorted(ref.asks.items())[: args.depth]
        t_ref_top = (time.perf_counter() - t0) / k
        print(
            f"[{market}]   emit first top({args.depth}) (one cold call, grows the window): {t_first * 1e6:8.1f} us; "
            f"reference full sort: {t_ref_top * 1e6:8.1f} us; ratio {t_ref_top / t_first:5.2f}x"
        )
        print(
            f"[{market}]   emit top({args.depth}): {t_top * 1e6:8.1f} us ({1 / t_top:9,.0f}/s); "
            f"BookSnapshot: {t_snap * 1e6:8.1f} us ({1 / t_snap:9,.0f}/s); "
            f"reference full sort: {t_ref_top * 1e6:8.1f} us; ratio {t_ref_top / t_top:5.2f}x"
        )
        del sb, sa
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
