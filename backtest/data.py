"""Recorded books for a backtest: any format the collector's replay reads, as arrays.

:func:`load_recording` runs the collector's own builders (raw Binance L2 directories and the
output of ``depthpilot record`` for any venue through :func:`collector.replay_formats.replay_sources`,
rotated files as one stream; the cryptofeed clips and Bybit archives through
:mod:`collector.clip_replay`, Tardis ``book_snapshot_N`` CSVs through
:class:`collector.replay.TardisBookSnapshotReplay`) or reads a Parquet/CSV export with the same
columns, and stacks the books into :class:`Books` (``ts`` ns, ``bids``/``asks`` (T, L, 2) with NaN
padding, a validity flag per row). :func:`infer_instrument` derives the tick and lot step from
the prices and sizes themselves (never from a file name).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from depthpilot.messages import BookSnapshot
from trader.backtest import BookView
from trader.domain import Instrument


class BacktestInputError(ValueError):
    """A recording that cannot be read or is unusable (one line naming the file)."""


@dataclass
class Books:
    exchange: str
    symbol: str
    ts: np.ndarray  # (T,) int64 ns, event time
    bids: np.ndarray  # (T, L, 2) float64, best first, NaN padding
    asks: np.ndarray
    valid: np.ndarray  # (T,) bool
    source: str = ""
    _views: list[BookView] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def slice(self, i0: int, i1: int) -> Books:
        return Books(
            self.exchange,
            self.symbol,
            self.ts[i0:i1],
            self.bids[i0:i1],
            self.asks[i0:i1],
            self.valid[i0:i1],
            self.source,
        )

    def mid(self) -> np.ndarray:
        """Mid price per row (NaN on invalid rows)."""
        m = 0.5 * (self.bids[:, 0, 0] + self.asks[:, 0, 0])
        return np.where(self.valid, m, np.nan)

    def views(self) -> list[BookView]:
        """One engine/paper book per row; the arrays are views (no copy). Built once per
        ``Books`` and shared by every caller (the baselines replay the same books 20 times):
        treat the list as read-only, and don't change ``ts``/``valid`` after the first call."""
        if self._views is None:
            ex, sym, b, a = self.exchange, self.symbol, self.bids, self.asks
            self._views = [
                BookView(ex, sym, int(t), b[i], a[i], bool(v), "" if v else "invalid book")
                for i, (t, v) in enumerate(zip(self.ts.tolist(), self.valid.tolist()))
            ]
        return self._views


def books_from_arrays(
    exchange: str, symbol: str, ts: np.ndarray, bids: np.ndarray, asks: np.ndarray, source: str = ""
) -> Books:
    ts = np.asarray(ts, dtype=np.int64)
    bids = np.asarray(bids, dtype=np.float64)
    asks = np.asarray(asks, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bb, ba = bids[:, 0, :], asks[:, 0, :]
        valid = (
            np.isfinite(bb).all(axis=1)
            & np.isfinite(ba).all(axis=1)
            & (bb[:, 0] > 0)
            & (bb[:, 1] > 0)
            & (ba[:, 1] > 0)
            & (bb[:, 0] < ba[:, 0])
        )
    return Books(exchange, symbol, ts, bids, asks, valid, source)


def _stack(snaps: Iterable[object], depth: int, source: str) -> Books:
    """The books among ``snaps`` (a replay may also yield trades) stacked into arrays."""
    rows = [s for s in snaps if isinstance(s, BookSnapshot)]
    if not rows:
        raise BacktestInputError(f"{source}: no book snapshots")
    syms = {(s.exchange, s.symbol) for s in rows}
    if len(syms) > 1:
        # one instrument per backtest: take the one with the most books
        best = max(syms, key=lambda k: sum(1 for s in rows if (s.exchange, s.symbol) == k))
        rows = [s for s in rows if (s.exchange, s.symbol) == best]
    T = len(rows)
    L = min(depth, max(max(len(s.bids), len(s.asks)) for s in rows))
    ts = np.fromiter(((s.ts_exchange or s.ts_recv) for s in rows), np.int64, T)
    bids = np.full((T, L, 2), np.nan)
    asks = np.full((T, L, 2), np.nan)
    ok = np.zeros(T, dtype=bool)
    for i, s in enumerate(rows):
        if not s.valid:
            continue
        ok[i] = True
        b, a = s.bids[:L], s.asks[:L]
        bids[i, : len(b)] = b
        asks[i, : len(a)] = a
    # event time must not go backwards: keep the receive order, clamp (a late exchange stamp)
    ts = np.maximum.accumulate(ts)
    out = books_from_arrays(rows[0].exchange, rows[0].symbol, ts, bids, asks, source)
    out.valid &= ok
    return out


def _tabular(path: Path, source: str) -> Books:
    import pandas as pd

    from features.io import load_book_snapshots_csv

    try:
        ts, bids, asks = load_book_snapshots_csv(path)
        head = (
            pd.read_parquet(path, columns=["exchange", "symbol"]).iloc[:1]
            if path.suffix == ".parquet"
            else pd.read_csv(path, nrows=1, usecols=lambda c: c in ("exchange", "symbol"))
        )
    except (ValueError, OSError) as exc:
        raise BacktestInputError(f"{path}: {exc}") from None
    exchange = str(head["exchange"].iloc[0]) if "exchange" in head else "unknown"
    symbol = str(head["symbol"].iloc[0]) if "symbol" in head else "UNKNOWN"
    order = np.argsort(ts, kind="stable")
    return books_from_arrays(exchange, symbol, ts[order], bids[order], asks[order], source)


def _raw_binance(p: Path, depth: int, source: str) -> Books:
    """Raw Binance diffs: the batch rebuild (same rows as the replay, proven by
    tests/collector/test_book_batch.py), else the collector's replay itself."""
    from collector.binance_batch import rebuild_recording
    from collector.replay import BinanceRecordingReplay

    bb = rebuild_recording(p, depth)
    if bb is None:
        return _stack(BinanceRecordingReplay(p, depth=depth, trades=False), depth, source)
    if len(bb.ts) == 0:
        raise BacktestInputError(f"{source}: no book snapshots")
    # event time must not go backwards: keep the receive order, clamp (as _stack)
    out = books_from_arrays(bb.exchange, bb.symbol, np.maximum.accumulate(bb.ts), bb.bids, bb.asks, source)
    out.valid &= bb.ok
    return out


def load_recording(path: str | Path, depth: int = 250, *, cache: bool = True) -> Books:
    """Books of one recording, rebuilt by the collector's builders (see the module doc). With
    ``cache`` (and ``DEPTHPILOT_BOOK_CACHE`` not 0), from the catalogue of rebuilt books when the
    same files were loaded at this depth before, else rebuilt and stored there
    (:mod:`backtest.book_cache`): the same arrays, bit for bit."""
    p = Path(path)
    if not p.exists():
        raise BacktestInputError(f"{p}: no such recording")
    if cache:
        from backtest import book_cache

        files = _input_files(p) if book_cache.enabled() else []
        if files:
            return book_cache.cached(files, depth, str(p), lambda: _rebuild(p, depth))
    return _rebuild(p, depth)


def _read_path(p: Path) -> Path:
    return p / "raw" if p.is_dir() and (p / "raw").is_dir() else p  # a dataset directory: its raw recording


def _input_files(p: Path) -> list[Path]:
    """The files :func:`_rebuild` reads for ``p``, in its order (the catalogue's key): the
    replay's expansion of a directory (a superset of the batch rebuild's); [] when there is
    nothing to read (the loader says so)."""
    from collector.recording_set import recorded_files

    q = _read_path(p)
    if not q.is_dir():
        return [q]
    try:
        return recorded_files(q)
    except FileNotFoundError:
        return []


def _rebuild(p: Path, depth: int) -> Books:
    from collector.clip_replay import (
        bybit_archive_replay,
        clip_replay,
        is_bybit_archive,
        is_clip,
    )
    from collector.replay import ReplayError, merge_by_recv
    from collector.replay_formats import replay_sources

    src = str(p)
    try:
        if p.is_file() and is_clip(p):
            return _stack(clip_replay(p, depth=depth), depth, src)
        if p.is_file() and is_bybit_archive(p):
            return _stack(bybit_archive_replay(p, depth=depth), depth, src)
        if p.is_file() and p.name.endswith((".csv", ".csv.gz", ".parquet")):
            return _tabular(p, src)
        p = _read_path(p)
        if _only_raw_binance(p):  # the batch rebuild (same rows as the replay)
            return _raw_binance(p, depth, src)
        # `depthpilot record` output of any venue (a directory, its root or one file) and anything
        # else the replay reads: recognised by content, rotated files as one stream
        return _stack(merge_by_recv(*replay_sources([p], depth, None)), depth, src)
    except (ReplayError, ValueError, KeyError, OSError, EOFError, zlib.error) as exc:  # EOFError: truncated .gz
        if isinstance(exc, BacktestInputError):
            raise
        if "cannot tell the format" in str(exc):
            raise BacktestInputError(
                f"{p}: unknown recording format (a raw Binance dir/.gz, a `depthpilot record` directory or file, "
                "a cryptofeed clip, a Bybit .data.zip, or a book-snapshot .csv[.gz]/.parquet)"
            ) from None
        raise BacktestInputError(f"{p}: {exc}") from None


def _only_raw_binance(p: Path) -> bool:
    """Every file under ``p`` is a raw Binance recording by the replay's own format table (the
    first row claiming it), so the batch rebuild may read it."""
    from collector.recording_set import recorded_files
    from collector.replay_formats import REPLAY_FORMATS

    files = recorded_files(p) if p.is_dir() else [p]
    if not files:
        return False
    for f in files:
        fmt = next((x for x in REPLAY_FORMATS if x.detect(f)), None)
        if fmt is None or fmt.name != "raw Binance recording":
            return False
    return True


def is_raw_binance(path: str | Path) -> bool:
    """A raw Binance L2 recording (a directory of, or one, ``*.gz`` stream file)."""
    p = Path(path)
    return p.is_dir() or (p.name.endswith(".gz") and not p.name.endswith((".csv.gz", ".data.gz")))


def load_recording_trades(path: str | Path, depth: int = 50) -> tuple[Books, dict[str, np.ndarray]]:
    """Books and trades of one raw Binance recording, through the collector's replay (trades on):
    ``trades`` has ``ts`` (exchange time, else receive time, ns), ``price`` and ``size``, in
    stream order, of the books' instrument."""
    from collector.replay import BinanceRecordingReplay, ReplayError

    from depthpilot.messages import Trade

    p = Path(path)
    if not p.exists():
        raise BacktestInputError(f"{p}: no such recording")
    if p.is_dir() and (p / "raw").is_dir():
        p = p / "raw"
    msgs: list[Any] = []
    try:
        msgs = list(BinanceRecordingReplay(p, depth=depth, trades=True))
    except (ReplayError, ValueError, KeyError) as exc:
        raise BacktestInputError(f"{p}: {exc}") from None
    books = _stack((x for x in msgs if isinstance(x, BookSnapshot)), depth, str(path))
    tr = [x for x in msgs if isinstance(x, Trade) and (x.exchange, x.symbol) == (books.exchange, books.symbol)]
    if not tr:
        raise BacktestInputError(f"{path}: the recording has no trades of {books.exchange} {books.symbol}")
    return books, {
        "ts": np.fromiter(((t.ts_exchange or t.ts_recv) for t in tr), np.int64, len(tr)),
        "price": np.fromiter((t.price for t in tr), np.float64, len(tr)),
        "size": np.fromiter((t.size for t in tr), np.float64, len(tr)),
    }


def _step(values: np.ndarray, max_decimals: int = 10) -> Decimal:
    """The decimal grid the values sit on: 10^-k for the smallest k making them all integers."""
    v = values[np.isfinite(values) & (values > 0)]
    if v.size == 0:
        return Decimal("1e-8")
    v = v[:20000]
    for k in range(max_decimals + 1):
        s = v * 10.0**k
        if np.all(np.abs(s - np.round(s)) < 1e-6 * np.maximum(1.0, np.abs(s)) + 1e-9):
            return Decimal(1).scaleb(-k)
    return Decimal(1).scaleb(-max_decimals)


def infer_instrument(books: Books, min_notional: Decimal = Decimal(5)) -> Instrument:
    """Tick = the decimal grid of the prices, lot step = the grid of the sizes (both read from
    the books). A linear contract settled in the quote currency."""
    ok = books.valid
    if not ok.any():
        raise BacktestInputError(f"{books.source}: no valid book in the recording")
    px = np.concatenate([books.bids[ok][:, :, 0].ravel(), books.asks[ok][:, :, 0].ravel()])
    sz = np.concatenate([books.bids[ok][:, :, 1].ravel(), books.asks[ok][:, :, 1].ravel()])
    tick = _step(px)
    lot = _step(sz)
    return Instrument(
        books.exchange, books.symbol, tick_size=tick, lot_step=lot, min_qty=lot, min_notional=min_notional
    )


def span_s(books: Books) -> float:
    return float(books.ts[-1] - books.ts[0]) / 1e9 if len(books) else 0.0


def describe(books: Books) -> dict[str, Any]:
    return {
        "source": books.source,
        "exchange": books.exchange,
        "symbol": books.symbol,
        "books": len(books),
        "valid_books": int(books.valid.sum()),
        "depth": int(books.bids.shape[1]),
        "start_ts": int(books.ts[0]) if len(books) else 0,
        "end_ts": int(books.ts[-1]) if len(books) else 0,
        "span_s": round(span_s(books), 3) if not math.isnan(span_s(books)) else 0.0,
    }
