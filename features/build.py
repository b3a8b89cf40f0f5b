"""Offline feature matrices (``depthpilot features build``): the same kernels as the service,
run in batch over a recording, an export or the store. pandas only at this edge."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from features.aggregate import aggregate_blocks
from features.candles import candle_features, ohlcv_from_mid, ohlcv_from_trades
from features.engine import feature_rows
from features.io import (
    RecordingError,
    books_from_messages,
    load_binance_books,
    load_book_snapshots_csv,
    load_klines,
    load_trades_csv,
)
from features.pipeline import interval_label, names_for
from features.spec import FeatureSpec
from depthpilot import messages as m


def load_books(path: Path | Sequence[Path], depth: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A book source on disk: Tardis-style snapshot CSV/Parquet (incl. our exports), raw
    Binance recordings (files of ``<local_ts> <json>`` lines; a directory or several files of
    one stream, in time order), or what ``depthpilot record`` wrote for another venue (one
    stream). Market, symbol and time unit come from the data."""
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    if not paths:
        raise RecordingError("no book recording given")
    for p in paths:
        if not p.exists():
            raise RecordingError(f"no such recording {p}")
    if len(paths) == 1 and paths[0].name.endswith((".csv", ".csv.gz", ".parquet")):
        return load_book_snapshots_csv(paths[0])
    recorded = _recorded_books(paths, depth)
    if recorded is not None:
        return recorded
    return load_binance_books(paths if len(paths) > 1 else paths[0], depth=depth)


def _recorded_books(paths: list[Path], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Books of a `depthpilot record` recording of a non-Binance venue (Kraken spot, Bybit, ccxt;
    a directory, its root or files), through the collector's replay of that venue; None when the
    files are raw Binance (read by :func:`load_binance_books`) or of no known format."""
    from collector.recording_set import recorded_files
    from collector.replay_formats import REPLAY_FORMATS, replay_sources

    try:
        files = recorded_files(paths)
    except FileNotFoundError as exc:
        raise RecordingError(str(exc)) from None
    fmts = [next((f for f in REPLAY_FORMATS if f.detect(p)), None) for p in files]
    if not all(f is not None and f.recorder for f in fmts):
        return None
    snaps = [x for src in replay_sources(files, depth, None) for x in src if isinstance(x, m.BookSnapshot)]
    streams = sorted({f"{s.exchange}:{s.symbol}" for s in snaps})
    if len(streams) != 1:
        where = ", ".join(map(str, paths))
        raise RecordingError(f"{where}: holds {len(streams)} book streams ({', '.join(streams)}); give one stream")
    return books_from_messages(snaps, depth)


def build(
    spec: FeatureSpec,
    kind: str,
    *,
    ts: np.ndarray | None = None,
    bids: np.ndarray | None = None,
    asks: np.ndarray | None = None,
    trades: dict[str, np.ndarray] | None = None,
    klines: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
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
        meta = {
            **(table.schema.metadata or {}),
            b"depthpilot.spec_hash": df.attrs["spec_hash"].encode(),
            b"depthpilot.interval": df.attrs["interval"].encode(),
            b"depthpilot.kind": df.attrs["kind"].encode(),
        }
        pq.write_table(table.replace_schema_metadata(meta), out, compression="zstd")


__all__ = ["books_from_messages", "load_books", "build", "write_frame", "load_klines", "load_trades_csv"]
