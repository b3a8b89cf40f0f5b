"""Feature-engine throughput on real 250-level books, vs a naive pandas-per-snapshot reference.

Books: the Binance spot BTCUSDT recording (2024-08-08, 6,493 diffs) rebuilt at 250 levels per
side from its raw REST snapshot (1000 levels) + diff stream (features.io.load_binance_books).

Prints, in one process run:
  * batch: snapshots/s of batch_features (full default FeatureSpec: 13 depths up to 250)
  * streaming: p50 / p99 / mean µs per StreamingFeatures.update
  * reference: a notebook-style implementation (one pandas DataFrame per snapshot, cumsum,
    iloc at each depth, ...) on a subset, its snapshots/s, and the ratios.

    python bench/features.py [--ref-n 400] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF  # noqa: E402
from features.engine import StreamingFeatures, batch_features  # noqa: E402
from features.io import load_binance_books  # noqa: E402
from features.spec import FeatureSpec, feature_names  # noqa: E402


def pandas_reference(spec: FeatureSpec, bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """The straightforward way: a DataFrame per snapshot and side, cumsum, iloc lookups."""
    rows = []
    prev = None
    for b, a in zip(bids, asks):
        bdf = pd.DataFrame(b, columns=["price", "size"]).dropna()
        adf = pd.DataFrame(a, columns=["price", "size"]).dropna()
        bdf["cum"] = bdf["size"].cumsum()
        adf["cum"] = adf["size"].cumsum()
        bb, qb = bdf["price"].iloc[0], bdf["size"].iloc[0]
        ba, qa = adf["price"].iloc[0], adf["size"].iloc[0]
        feats = {}
        for d in spec.depths:
            ib, ia = min(d, len(bdf)) - 1, min(d, len(adf)) - 1
            feats[f"bid_vol_{d}"] = bdf["cum"].iloc[ib]
            feats[f"ask_vol_{d}"] = adf["cum"].iloc[ia]
            feats[f"vol_ratio_{d}"] = feats[f"bid_vol_{d}"] / feats[f"ask_vol_{d}"]
            feats[f"bid_dist_pct_{d}"] = (bb - bdf["price"].iloc[ib]) / bb * 100
            feats[f"ask_dist_pct_{d}"] = (adf["price"].iloc[ia] - ba) / ba * 100
            feats[f"depth_ok_{d}"] = float(len(bdf) >= d and len(adf) >= d)
        mid = (bb + ba) / 2
        micro = (bb * qa + ba * qb) / (qb + qa)
        w = 1.0 / np.arange(1, spec.dwi_levels + 1)
        wb = (bdf["size"].iloc[: spec.dwi_levels] * w[: min(spec.dwi_levels, len(bdf))]).sum()
        wa = (adf["size"].iloc[: spec.dwi_levels] * w[: min(spec.dwi_levels, len(adf))]).sum()
        if prev is None:
            prev = (bb, qb, ba, qa)
        pbb, pqb, pba, pqa = prev
        ofi = (bb >= pbb) * qb - (bb <= pbb) * pqb - (ba <= pba) * qa + (ba >= pba) * pqa
        prev = (bb, qb, ba, qa)
        feats.update(
            mid=mid,
            spread=ba - bb,
            spread_bps=(ba - bb) / mid * 1e4,
            microprice=micro,
            micro_dev_bps=(micro - mid) / mid * 1e4,
            imb_top=(qb - qa) / (qb + qa),
            imb_dw=(wb - wa) / (wb + wa),
            ofi=ofi,
            n_bid_levels=float(len(bdf)),
            n_ask_levels=float(len(adf)),
        )
        rows.append(pd.Series(feats))
    return pd.DataFrame(rows)[feature_names(spec)].to_numpy(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-n", type=int, default=400, help="snapshots for the pandas reference")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    raw = sorted((data_dir() / BINANCE_L2DIFF["spot"] / "raw").glob("*.gz"))
    if not raw:
        sys.exit(f"raw Binance recording not found under {data_dir()}")
    t0 = time.perf_counter()
    ts, bids, asks = load_binance_books(raw, depth=250)
    T = len(ts)
    print(
        f"books: {T} real Binance spot BTCUSDT snapshots rebuilt at 250 levels/side from raw diffs "
        f"in {time.perf_counter() - t0:.1f} s (missing levels: {int(np.isnan(bids[..., 0]).sum() + np.isnan(asks[..., 0]).sum())})"
    )
    spec = FeatureSpec()
    print(f"spec {spec.hash}: {len(feature_names(spec))} features, depths {spec.depths}")

    # ---- batch
    batch_features(spec, ts[:100], (bids[:100], asks[:100]))  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        X = batch_features(spec, ts, (bids, asks))
        times.append(time.perf_counter() - t0)
    best, med = min(times), float(np.median(times))
    batch_rate = T / med
    print(
        f"batch: {T / best:,.0f} snapshots/s best, {batch_rate:,.0f} median of {args.repeat} (whole recording incl. validation)"
    )

    # ---- streaming
    lat = np.empty(T * 2)
    n = 0
    for _ in range(2):
        sf = StreamingFeatures(spec)
        for i in range(T):
            b, a = bids[i], asks[i]
            t0 = time.perf_counter_ns()
            sf.update(int(ts[i]), b, a)
            lat[n] = time.perf_counter_ns() - t0
            n += 1
    lat_us = lat[T:] / 1e3  # second pass (warm caches)
    p50, p99, mean = np.percentile(lat_us, 50), np.percentile(lat_us, 99), lat_us.mean()
    print(f"streaming: p50 {p50:.1f} µs, p99 {p99:.1f} µs, mean {mean:.1f} µs per snapshot ({1e6 / mean:,.0f}/s)")

    # ---- pandas reference
    m = min(args.ref_n, T)
    t0 = time.perf_counter()
    R = pandas_reference(spec, bids[:m], asks[:m])
    ref_dt = time.perf_counter() - t0
    ref_rate = m / ref_dt
    err = float(np.max(np.abs(R - X[:m]) / np.maximum(np.abs(X[:m]), 1e-300)))
    print(
        f"pandas-per-snapshot reference: {ref_rate:,.0f} snapshots/s ({m} snapshots, "
        f"{ref_dt / m * 1e6:,.0f} µs each); max rel diff vs engine {err:.1e}"
    )
    print(f"ratio batch / reference: {batch_rate / ref_rate:,.0f}x   (goal >= 30x)")
    print(f"ratio streaming / reference: {(1e6 / mean) / ref_rate:,.0f}x")
    print(
        f"goals: batch >= 50k/s: {'met' if batch_rate >= 50_000 else 'NOT met'}; "
        f"streaming p99 <= 50 µs: {'met' if p99 <= 50 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
