"""Offline feature matrices (``depthpilot features build``): the same kernels as the service,
run in batch over a recording, an export or the store. pandas only at this edge."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from depthpilot import messages as m
from features.aggregate import aggregate_blocks
from features.candles import candle_features, ohlcv_from_mid, ohlcv_from_trades
from features.engine import feature_rows
from features.io import RecordingError, load_book_snapshots_csv, load_klines, load_trades_csv, rebuild_binance_books
from features.pipeline import interval_label, names_for
from features.spec import FeatureSpec


def books_from_messages(snaps: Iterable[m.BookSnapshot], depth: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def load_books(path: Path, depth: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A book source on disk: Tardis-style snapshot CSV/Parquet (incl. our exports), or a raw
    Binance recording (``*.gz`` lines of ``<local_ts> <json>``; a directory of them)."""
    if path.is_dir():
        raws = sorted(path.glob("*.gz"))
        if not raws:
            raise RecordingError(f"{path}: no *.gz recordings")
        return rebuild_binance_books(raws, depth=depth, futures="usdm" in str(path) or "futures" in str(path))
    name = path.name
    if name.endswith((".csv", ".csv.gz", ".parquet")):
        return load_book_snapshots_csv(path)
    if name.endswith(".gz"):
        return rebuild_binance_books([path], depth=depth, futures="usdm" in str(path) or "futures" in str(path))
    raise RecordingError(f"{path}: unknown book format (want .csv[.gz], .parquet or a raw Binance .gz)")


def build(spec: FeatureSpec, kind: str, *, ts: np.ndarray | None = None, bids: np.ndarray | None = None,
          asks: np.ndarray | None = None, trades: dict[str, np.ndarray] | None = None,
          klines: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Feature frame of one kind (snapshot | block | candle): ``ts`` column (ns) + features.

    candle: from ``klines`` if given, else from ``trades``, else from the books' mid price."""
    names = names_for(spec, kind)
    if kind == "candle":
        if klines is not None:
            ohlcv, out_ts = klines, klines["ts"]
        elif trades is not None:
            ohlcv = ohlcv_from_trades(trades["ts"], trades["price"], trades["size"], spec.interval_ns)
            out_ts = ohlcv["ts"]
        elif ts is not None and bids is not None and asks is not None:
            mid = 0.5 * (bids[:, 0, 0] + asks[:, 0, 0])
            ok = np.isfinite(mid)
            ohlcv = ohlcv_from_mid(ts[ok], mid[ok], spec.interval_ns)
            out_ts = ohlcv["ts"]
        else:
            raise ValueError("candle features need klines, trades or books")
        X, _ = candle_features(spec, ohlcv)
    else:
        if ts is None or bids is None or asks is None:
            raise ValueError(f"{kind} features need books")
        out_ts, X, reset = feature_rows(spec, ts, (bids, asks))  # the spec's clock (sampled or per book)
        if kind == "block":
            out_ts, X = aggregate_blocks(spec, out_ts, X, reset=reset)
    df = pd.DataFrame(X, columns=names)
    df.insert(0, "ts", np.asarray(out_ts, dtype=np.int64))
    # the price labels are computed on (never a model input unless named as a feature)
    df["price"] = ohlcv["close"] if kind == "candle" else df["mid" if kind == "snapshot" else "last_mid"]
    df.attrs.update({"spec_hash": spec.hash, "interval": interval_label(spec, kind), "kind": kind})
    return df


def write_frame(df: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith((".csv", ".csv.gz")):
        df.to_csv(out, index=False)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {**(table.schema.metadata or {}),
                b"depthpilot.spec_hash": df.attrs["spec_hash"].encode(),
                b"depthpilot.interval": df.attrs["interval"].encode(),
                b"depthpilot.kind": df.attrs["kind"].encode()}
        pq.write_table(table.replace_schema_metadata(meta), out, compression="zstd")


__all__ = ["books_from_messages", "load_books", "build", "write_frame", "load_klines", "load_trades_csv"]
