"""Offline edges of the feature engine: load recordings into arrays (pandas allowed here only).

* :func:`load_book_snapshots_csv` - Tardis ``book_snapshot_N``-style CSV (``derived_book_snapshot_25.csv.gz``)
  -> ts (T,) ns, bids (T, N, 2), asks (T, N, 2); empty levels become NaN padding.
* :func:`load_trades_csv` - Tardis ``trades``-style CSV -> dict of arrays.
* :func:`load_klines` - the Binance 1 m klines CSV -> dict of arrays (ts = close time ns).
* :func:`rebuild_binance_books` - rebuild deeper books (e.g. 250 levels) from the raw Binance
  recording (REST snapshot + diff stream) with :class:`collector.book.L2Book`. A minimal local
  loader for offline use and benchmarks; the live collector has its own.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson
import pandas as pd

from collector.book import L2Book

__all__ = [
    "RecordingError",
    "load_book_snapshots_csv",
    "load_trades_csv",
    "load_klines",
    "rebuild_binance_books",
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


def load_klines(path: str | Path) -> dict[str, np.ndarray]:
    """Binance kline CSV (open,high,low,close,volume,quote_volume,trades,close_datetime).

    ``ts`` = candle close time in ns UTC (the last ns the candle covers)."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"no such recording {path}")
    df = pd.read_csv(path)
    need = ["open", "high", "low", "close", "volume"]
    if any(c not in df.columns for c in need + ["close_datetime"]):
        raise RecordingError(f"{path.name}: expected columns {need + ['close_datetime']}, got {list(df.columns)}")
    close = pd.to_datetime(df["close_datetime"], utc=True)
    ts = close.dt.tz_convert(None).to_numpy("datetime64[ns]").astype(np.int64)
    out = {c: df[c].to_numpy(np.float64) for c in need}
    for c in ("quote_volume", "trades"):
        if c in df.columns:
            out[c] = df[c].to_numpy(np.float64)
    out["ts"] = ts
    return out


def _lines(paths: Iterable[Path]) -> Iterable[tuple[int, dict]]:
    for p in paths:
        with gzip.open(p, "rb") as f:
            for raw in f:
                sp = raw.find(b" ")
                if sp < 0:
                    continue
                yield int(raw[:sp]), orjson.loads(raw[sp + 1 :])


def rebuild_binance_books(paths: Iterable[str | Path], depth: int = 250, futures: bool = False,
                          max_snapshots: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild top-``depth`` books after every applied diff of a raw Binance recording.

    Sync rule (Binance docs): apply the REST snapshot, drop diffs with ``u <= lastUpdateId``,
    then spot requires ``U == previous u + 1`` (futures ``pu == previous u``); a break raises
    RecordingError. Returns (ts ns = event time E, bids (T, depth, 2), asks (T, depth, 2)),
    NaN-padded where a side has fewer levels.
    """
    book = L2Book()
    last_id: int | None = None
    prev_u: int | None = None
    ts_l: list[int] = []
    bl: list[np.ndarray] = []
    al: list[np.ndarray] = []
    pending: list[dict] = []  # diffs received before the REST snapshot (replayed after it)

    def diffs() -> Iterable[dict]:
        nonlocal last_id
        for _, msg in _lines([Path(p) for p in paths]):
            if "lastUpdateId" in msg:
                book.apply_snapshot(((float(p), float(q)) for p, q in msg["bids"]),
                                    ((float(p), float(q)) for p, q in msg["asks"]))
                last_id = int(msg["lastUpdateId"])
                yield from pending
                pending.clear()
                continue
            data = msg.get("data") or {}
            if data.get("e") != "depthUpdate":
                continue
            if last_id is None:
                pending.append(data)
            else:
                yield data

    for data in diffs():
        U, u = int(data["U"]), int(data["u"])
        if u <= last_id:
            continue
        if prev_u is None:
            if not (U <= last_id + 1 <= u or (futures and U <= last_id <= u)):
                raise RecordingError(f"first diff U={U} u={u} does not straddle lastUpdateId={last_id}")
        elif futures:
            if int(data["pu"]) != prev_u:
                raise RecordingError(f"sequence break: pu={data['pu']} != previous u={prev_u}")
        elif U != prev_u + 1:
            raise RecordingError(f"sequence break: U={U} != previous u + 1 = {prev_u + 1}")
        prev_u = u
        book.apply_deltas(((float(p), float(q)) for p, q in data["b"]), ((float(p), float(q)) for p, q in data["a"]))
        b, a = book.top(depth)
        bb = np.full((depth, 2), np.nan)
        aa = np.full((depth, 2), np.nan)
        bb[: len(b)] = b
        aa[: len(a)] = a
        bl.append(bb)
        al.append(aa)
        ts_l.append(int(data["E"]) * 1_000_000)
        if max_snapshots is not None and len(ts_l) >= max_snapshots:
            break
    if not ts_l:
        raise RecordingError("no diff applied (missing REST snapshot?)")
    return np.array(ts_l, dtype=np.int64), np.stack(bl), np.stack(al)
