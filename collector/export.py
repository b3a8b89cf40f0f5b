"""Export stored snapshots and trades for training (offline edge: pandas/pyarrow here).

The files use the Tardis.dev column layout, which many tools already read and which the
feature engine's loaders (:mod:`features.io`) read back:

* book snapshots: ``exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,
  bids[0].price,bids[0].amount,...`` (timestamps in µs) plus ``seq`` and ``valid``;
* trades: ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``.

Parquet (default) or CSV; written in chunks so an export never holds the whole range in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from depthpilot import messages as m

CHUNK = 5000
M = TypeVar("M", bound=m.Message)


class ExportError(ValueError):
    pass


def snapshot_columns(depth: int) -> list[str]:
    cols = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for i in range(depth):
        cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    return cols + ["seq", "valid"]


def snapshots_to_frame(snaps: list[m.BookSnapshot], depth: int) -> pd.DataFrame:
    """Wide Tardis-style frame; missing levels are NaN."""
    T = len(snaps)
    data: dict[str, Any] = {
        "exchange": [s.exchange for s in snaps],
        "symbol": [s.symbol for s in snaps],
        "timestamp": np.fromiter((s.ts_exchange // 1000 for s in snaps), np.int64, T),
        "local_timestamp": np.fromiter((s.ts_recv // 1000 for s in snaps), np.int64, T),
    }
    sides = {}
    for side in ("asks", "bids"):
        arr = np.full((T, depth, 2), np.nan)
        for r, s in enumerate(snaps):
            lv = getattr(s, side)[:depth]
            arr[r, : len(lv)] = lv
        sides[side] = arr
    for i in range(depth):
        for side in ("asks", "bids"):
            data[f"{side}[{i}].price"] = sides[side][:, i, 0]
            data[f"{side}[{i}].amount"] = sides[side][:, i, 1]
    data["seq"] = np.fromiter((s.seq for s in snaps), np.int64, T)
    data["valid"] = np.fromiter((s.valid for s in snaps), bool, T)
    return pd.DataFrame(data, columns=snapshot_columns(depth))


def trades_to_frame(trades: list[m.Trade]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "exchange": [t.exchange for t in trades],
            "symbol": [t.symbol for t in trades],
            "timestamp": [t.ts_exchange // 1000 for t in trades],
            "local_timestamp": [t.ts_recv // 1000 for t in trades],
            "id": [t.trade_id for t in trades],
            "side": [t.side.value for t in trades],
            "price": [t.price for t in trades],
            "amount": [t.size for t in trades],
        }
    )


def _chunks(it: Iterable[m.Message], n: int) -> Iterator[list[m.Message]]:
    buf: list[m.Message] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _only(chunk: list[m.Message], cls: type[M], kind: str) -> list[M]:
    """``chunk`` as a list of ``cls``; another message type is refused with one line."""
    out: list[M] = []
    for x in chunk:
        if not isinstance(x, cls):
            raise ExportError(f"a {kind} export got a {type(x).__name__} message")
        out.append(x)
    return out


def write_export(
    messages: Iterable[m.Message],
    kind: str,
    out: Path,
    *,
    depth: int = 25,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``messages`` (BookSnapshot or Trade) to ``out``; returns the row count."""
    if kind not in ("snapshots", "trades"):
        raise ExportError("kind must be 'snapshots' or 'trades'")
    fmt = fmt or ("csv" if out.name.endswith((".csv", ".csv.gz")) else "parquet")
    if fmt not in ("csv", "parquet"):
        raise ExportError("format must be csv or parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in _chunks(messages, CHUNK):
            if kind == "snapshots":
                df = snapshots_to_frame(_only(chunk, m.BookSnapshot, kind), depth)
            else:
                df = trades_to_frame(_only(chunk, m.Trade, kind))
            if fmt == "parquet":
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                writer.write_table(table)
            else:
                df.to_csv(out, mode="w" if rows == 0 else "a", header=rows == 0, index=False)
            rows += len(df)
            if progress:
                progress(len(df))
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise ExportError("nothing to export in that range")
    return rows
