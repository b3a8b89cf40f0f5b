"""Offline edges of the feature engine: load recordings into arrays (pandas allowed here only).

* :func:`load_book_snapshots_csv` - Tardis ``book_snapshot_N``-style CSV (``derived_book_snapshot_25.csv.gz``)
  -> ts (T,) ns, bids (T, N, 2), asks (T, N, 2); empty levels become NaN padding.
* :func:`load_trades_csv` - Tardis ``trades``-style CSV -> dict of arrays.
* :func:`load_klines` - Binance klines: the exchange's standard dump layout
  (``open_time,open,high,low,close,volume,close_time,quote_volume,count,...``, with or without
  header, ms or µs times) or the named-column CSV with ``close_datetime`` -> dict of arrays
  (ts = close time ns).
* :func:`load_binance_books` - deeper books (e.g. 250 levels) rebuilt from raw Binance
  recordings by the collector's batch rebuild (:func:`collector.binance_batch.rebuild_recording`,
  held bit for bit to the replay) or, where it does not apply, by the collector's own replay
  (:class:`collector.replay_binance.BinanceRecordingReplay`, the one implementation of the sync
  rule): offline books equal live books. Several files of one stream are one stream (a
  continuation without its own snapshot follows its predecessor).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from depthpilot import messages as m

__all__ = [
    "RecordingError",
    "load_book_snapshots_csv",
    "load_trades_csv",
    "load_klines",
    "load_binance_books",
    "replay_binance_books",
    "books_from_messages",
]


class RecordingError(ValueError):
    """A recording file is missing, malformed or out of sequence."""


def load_book_snapshots_csv(path: str | Path, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (ts_ns from the exchange ``timestamp`` column (µs), bids, asks)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"no such recording {path}")
    if path.suffix == ".parquet":  # `depthpilot export` writes the same columns as Parquet
        df = pd.read_parquet(path)
        df = df.iloc[:max_rows] if max_rows else df
    else:
        df = pd.read_csv(path, nrows=max_rows)
    pat = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")
    levels = sorted({int(m.group(2)) for c in df.columns if (m := pat.match(c))})
    if not levels or levels != list(range(len(levels))):
        raise RecordingError(f"{path.name}: no contiguous asks[i]/bids[i] columns")
    n = len(levels)
    T = len(df)
    out = {}
    for side in ("bids", "asks"):
        arr = np.empty((T, n, 2))
        for i in range(n):
            arr[:, i, 0] = pd.to_numeric(df[f"{side}[{i}].price"], errors="coerce").to_numpy(np.float64)
            arr[:, i, 1] = pd.to_numeric(df[f"{side}[{i}].amount"], errors="coerce").to_numpy(np.float64)
        out[side] = arr
    ts = df["timestamp"].to_numpy(np.int64) * 1000
    return ts, out["bids"], out["asks"]


def load_trades_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Returns ts (ns), price, size, side (+1 buy aggressor, -1 sell)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"no such recording {path}")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return {
        "ts": df["timestamp"].to_numpy(np.int64) * 1000,
        "price": df["price"].to_numpy(np.float64),
        "size": df["amount"].to_numpy(np.float64),
        "side": np.where(df["side"].to_numpy() == "buy", 1.0, -1.0),
    }


_KLINE_DUMP_COLUMNS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
_KLINE_ALIASES = {"count": "trades", "number_of_trades": "trades", "quote_asset_volume": "quote_volume"}


def _epoch_to_ns(v: np.ndarray, what: str, path: Path) -> np.ndarray:
    """Epoch integers in s/ms/µs/ns (by magnitude, per value) -> ns."""
    v = np.asarray(v, dtype=np.int64)
    out = np.where(
        v >= 10**17, v, np.where(v >= 10**14, v * 1_000, np.where(v >= 10**11, v * 1_000_000, v * 1_000_000_000))
    )
    if len(v) and (v.min() < 10**9 or v.max() >= 10**19):
        raise RecordingError(f"{path}: column {what} is not an epoch time in s/ms/us/ns")
    return out


def load_klines(path: str | Path) -> dict[str, np.ndarray]:
    """Binance klines -> open/high/low/close/volume (+ quote_volume, trades) and ``ts`` = candle
    close time in ns UTC (the last instant the candle covers).

    Reads the exchange's standard dump layout as it ships (``open_time,open,high,low,close,
    volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore``, with
    or without a header; times in ms or µs) and the named-column CSV with ``close_datetime``."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"no such recording {path}")
    try:
        first = pd.read_csv(path, header=None, nrows=1)
    except (ValueError, OSError, EOFError) as exc:
        raise RecordingError(f"{path}: unreadable klines CSV ({type(exc).__name__}: {exc})") from None
    if first.empty:
        raise RecordingError(f"{path}: empty klines file")
    headerless = str(first.iloc[0, 0]).strip().replace(".", "", 1).isdigit()  # a number, not a column name
    try:
        if headerless:
            df = pd.read_csv(path, header=None)
            if df.shape[1] < 7:
                raise RecordingError(
                    f"{path}: a headerless klines CSV needs the Binance dump layout "
                    f"{_KLINE_DUMP_COLUMNS[:7]}..., got {df.shape[1]} columns"
                )
            df.columns = _KLINE_DUMP_COLUMNS[: df.shape[1]] + [f"extra_{i}" for i in range(df.shape[1] - 12)]
        else:
            df = pd.read_csv(path)
    except (ValueError, OSError, EOFError) as exc:
        raise RecordingError(f"{path}: unreadable klines CSV ({type(exc).__name__}: {exc})") from None
    df = df.rename(columns={c: _KLINE_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in df.columns})
    need = ["open", "high", "low", "close", "volume"]
    if "close_time" in df.columns:
        ts = _epoch_to_ns(pd.to_numeric(df["close_time"], errors="raise").to_numpy(), "close_time", path)
    elif "close_datetime" in df.columns:
        close = pd.to_datetime(df["close_datetime"], utc=True)
        ts = close.dt.tz_convert(None).to_numpy("datetime64[ns]").astype(np.int64)
    else:
        raise RecordingError(f"{path}: no close_time or close_datetime column (got {list(df.columns)})")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise RecordingError(f"{path}: missing kline columns {missing} (got {list(df.columns)})")
    try:
        out = {c: pd.to_numeric(df[c], errors="raise").to_numpy(np.float64) for c in need}
        for c in ("quote_volume", "trades"):
            if c in df.columns:
                out[c] = pd.to_numeric(df[c], errors="raise").to_numpy(np.float64)
    except ValueError as exc:
        raise RecordingError(f"{path}: non-numeric kline value: {exc}") from None
    out["ts"] = ts
    return out


def books_from_messages(
    snaps: Iterable[m.BookSnapshot], depth: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack snapshots into (ts, bids (T, L, 2), asks (T, L, 2)) with NaN padding.
    Snapshots the collector flagged invalid become all-NaN rows (the engine rejects them)."""
    snaps = list(snaps)
    L = depth or max((max(len(s.bids), len(s.asks)) for s in snaps), default=0)
    T = len(snaps)
    ts = np.fromiter(((s.ts_exchange or s.ts_recv) for s in snaps), np.int64, T)
    bids = np.full((T, L, 2), np.nan)
    asks = np.full((T, L, 2), np.nan)
    for i, s in enumerate(snaps):
        if not s.valid:
            continue
        b, a = s.bids[:L], s.asks[:L]
        bids[i, : len(b)] = b
        asks[i, : len(a)] = a
    return ts, bids, asks


def binance_book_messages(paths: str | Path | Sequence[str | Path], depth: int = 250) -> Iterable[m.BookSnapshot]:
    """BookSnapshots of ONE raw Binance stream, one per applied update, exactly as the
    collector's replay emits them (same builder, same sync rule). Several streams (a directory
    mixing symbols or markets) are refused with one line."""
    from collector.exchanges.binance_parse import BinanceFormatError
    from collector.replay_binance import BinanceRecordingReplay

    try:
        rep = BinanceRecordingReplay(paths, depth=depth, trades=False)
    except (BinanceFormatError, FileNotFoundError) as exc:
        raise RecordingError(str(exc)) from None
    if len(rep.streams) > 1:
        where = paths if isinstance(paths, (str, Path)) else ", ".join(map(str, paths))
        raise RecordingError(
            f"{where}: holds {len(rep.streams)} streams ({', '.join(rep.stream_names)}); give the files of one stream"
        )

    def it() -> Iterable[m.BookSnapshot]:
        try:
            for msg in rep:  # trades=False: book snapshots only
                if isinstance(msg, m.BookSnapshot):
                    yield msg
        except BinanceFormatError as exc:
            raise RecordingError(str(exc)) from None

    return it()


def load_binance_books(
    paths: str | Path | Sequence[str | Path], depth: int = 250, max_snapshots: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts ns = exchange event time, bids (T, depth, 2), asks (T, depth, 2)) of one raw Binance
    stream; invalid books (before the first snapshot, gaps, crossed) are all-NaN rows.

    Rebuilt in batch by :func:`collector.binance_batch.rebuild_recording` (the replay's rows,
    bit for bit) when it covers the recording, else by the collector's replay, which gives the
    same books or names the bad line."""
    books = _batch_binance_books(paths, depth, max_snapshots)
    if books is not None:
        return books
    return replay_binance_books(paths, depth, max_snapshots)


def replay_binance_books(
    paths: str | Path | Sequence[str | Path], depth: int = 250, max_snapshots: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`load_binance_books` through the collector's replay, one snapshot message per row."""
    snaps = list(itertools.islice(binance_book_messages(paths, depth), max_snapshots))
    if not any(s.valid for s in snaps):
        raise RecordingError(f"{paths}: no book could be built (no REST snapshot the diffs connect to)")
    return books_from_messages(snaps, depth)


def _batch_binance_books(
    paths: str | Path | Sequence[str | Path], depth: int, max_snapshots: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The batch rebuild in :func:`books_from_messages`' layout (raw event times, ``depth``
    columns of NaN padding, invalid rows all NaN), or None when the replay must do it."""
    from collector.binance_batch import rebuild_recording
    from collector.exchanges.binance_parse import BinanceFormatError

    try:
        bb = rebuild_recording(paths, depth)
    except (BinanceFormatError, FileNotFoundError):
        return None  # the replay raises the same error as one line
    if bb is None:
        return None
    ts, bids, asks, ok = bb.ts, bb.bids, bb.asks, bb.ok
    if max_snapshots is not None:
        ts, bids, asks, ok = ts[:max_snapshots], bids[:max_snapshots], asks[:max_snapshots], ok[:max_snapshots]
    if not ok.any():
        raise RecordingError(f"{paths}: no book could be built (no REST snapshot the diffs connect to)")
    T, L = bids.shape[0], bids.shape[1]
    out_b = np.full((T, depth, 2), np.nan)
    out_a = np.full((T, depth, 2), np.nan)
    out_b[ok, :L] = bids[ok]  # the builder's rows; invalid ones stay NaN (as books_from_messages)
    out_a[ok, :L] = asks[ok]
    return np.ascontiguousarray(ts, dtype=np.int64), out_b, out_a
