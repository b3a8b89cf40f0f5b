"""Training data for ``depthpilot train``: always through the features engine (same spec,
same kernels as the live service), from

* the 1-minute klines (candle indicators),
* a book recording or export (snapshot or time-block features; labels on the mid),
* a ``depthpilot features build`` Parquet file (spec hash and kind in its metadata),
* feature vectors stored by the features service (MongoDB).

Each returns :class:`TrainingData`; ``columns`` picks a subset of feature names (e.g. only
scale-free columns), and the model records exactly which names it eats, so the predictor
service selects them from live vectors by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from features.build import build, load_books
from features.io import load_klines
from features.pipeline import interval_label
from features.spec import FeatureSpec
from predictor.labels import Prices

# candle indicators that do not depend on the price level (sma_*, ewma_*, bb bands, force and
# evm are in price or volume units and drift with the market)
RELATIVE_CANDLE_COLUMNS = (
    "ret_log",
    "close_sma_5_pct",
    "close_sma_20_pct",
    "close_sma_60_pct",
    "close_ewma_12_pct",
    "close_ewma_26_pct",
    "cci_20",
    "bb_width_20",
    "bb_pctb_20",
    "roc_10",
    "vol_rel_1440",
    "vol_z_240",
)
# block features without absolute price levels
ABSOLUTE_BOOK = ("mid", "microprice", "spread")


def relative_columns(names: Sequence[str]) -> list[str]:
    """Drop columns in price units (mid, microprice, absolute spread; also their block
    mean_/last_/d_ forms and candle price levels) so the model does not learn the price level."""
    out = []
    for n in names:
        base = n.split("_", 1)[1] if n.startswith(("mean_", "last_", "d_")) else n
        if base in ABSOLUTE_BOOK or n.startswith(("sma_", "ewma_", "bb_mid", "bb_upper", "bb_lower")):
            continue
        out.append(n)
    return out


class SourceError(ValueError):
    pass


@dataclass
class TrainingData:
    X: np.ndarray
    ts: np.ndarray
    prices: Prices
    names: list[str]
    spec_hash: str
    features: dict[str, Any] = field(default_factory=dict)  # kind, interval, spec (-> manifest)

    def select(self, columns: Sequence[str] | None) -> "TrainingData":
        if not columns:
            return self
        missing = [c for c in columns if c not in self.names]
        if missing:
            raise SourceError(f"unknown feature columns {missing}")
        idx = [self.names.index(c) for c in columns]
        return TrainingData(self.X[:, idx], self.ts, self.prices, list(columns), self.spec_hash, self.features)


def _meta(spec: FeatureSpec, kind: str) -> dict[str, Any]:
    return {"kind": kind, "interval": interval_label(spec, kind), "spec": spec.to_dict()}


def from_klines(path: Path, spec: FeatureSpec | None = None) -> TrainingData:
    spec = spec or FeatureSpec(interval_s=60.0)
    k = load_klines(path)
    df = build(spec, "candle", klines=k)
    names = [c for c in df.columns if c not in ("ts", "price")]
    return TrainingData(
        df[names].to_numpy(np.float64),
        df["ts"].to_numpy(np.int64),
        Prices(close=k["close"], high=k["high"], low=k["low"]),
        names,
        spec.hash,
        _meta(spec, "candle"),
    )


def from_books(path: Path | Sequence[Path], spec: FeatureSpec, kind: str = "block", depth: int = 250) -> TrainingData:
    """Snapshot/block features of a book source (a file, a directory, or several files of one
    stream in any order: a continuation without snapshot follows its predecessor)."""
    if kind not in ("snapshot", "block"):
        raise SourceError("book recordings give 'snapshot' or 'block' features")
    ts, bids, asks = load_books(path, depth=depth)
    df = build(spec, kind, ts=ts, bids=bids, asks=asks)
    price_col = "mid" if kind == "snapshot" else "last_mid"
    df = df[np.isfinite(df[price_col].to_numpy())].reset_index(drop=True)
    names = [c for c in df.columns if c not in ("ts", "price")]
    close = df[price_col].to_numpy(np.float64)
    return TrainingData(
        df[names].to_numpy(np.float64),
        df["ts"].to_numpy(np.int64),
        Prices(close=close),
        names,
        spec.hash,
        _meta(spec, kind),
    )


def from_feature_file(path: Path) -> TrainingData:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    spec_hash = meta.get(b"depthpilot.spec_hash", b"").decode()
    kind = meta.get(b"depthpilot.kind", b"").decode()
    if not spec_hash or not kind:
        raise SourceError(f"{path}: not written by `depthpilot features build` (no spec hash in its metadata)")
    df = table.to_pandas()
    if "price" not in df.columns:
        raise SourceError(f"{path}: no 'price' column to label on")
    names = [c for c in df.columns if c not in ("ts", "price")]
    return TrainingData(
        df[names].to_numpy(np.float64),
        df["ts"].to_numpy(np.int64),
        Prices(close=df["price"].to_numpy(np.float64)),
        names,
        spec_hash,
        {"kind": kind, "interval": meta.get(b"depthpilot.interval", b"").decode()},
    )


def from_store(
    store: Any, exchange: str, symbol: str, interval: str, start: int | None = None, end: int | None = None
) -> TrainingData:
    """Feature vectors stored by the features service (one interval kind, one spec)."""
    rows: list[np.ndarray] = []
    ts: list[int] = []
    names: list[str] | None = None
    spec_hash = ""
    for fv in store.iter_messages("features", exchange, symbol, start, end):
        if fv.interval != interval:
            continue
        if names is None:
            names, spec_hash = list(fv.names), fv.spec_hash
        elif fv.spec_hash != spec_hash:
            raise SourceError(f"stored vectors mix feature specs {spec_hash} and {fv.spec_hash}: pick a time range")
        rows.append(fv.values)
        ts.append(fv.ts)
    if not rows or names is None:
        raise SourceError(f"no stored '{interval}' feature vectors for {exchange} {symbol}")
    price_col = next((c for c in ("last_mid", "mid") if c in names), None)
    if price_col is None:
        raise SourceError("stored vectors carry no mid price to label on; train candle models from klines or trades")
    X = np.stack(rows)
    kind = "snapshot" if interval == "" else "block"
    return TrainingData(
        X,
        np.asarray(ts, dtype=np.int64),
        Prices(close=X[:, names.index(price_col)]),
        names,
        spec_hash,
        {"kind": kind, "interval": interval},
    )
