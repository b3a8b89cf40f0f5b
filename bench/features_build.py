"""``depthpilot features build --books <raw Binance recording>``: where the time goes, and the
batch book rebuild against the collector's replay path it replaced, in the same process.

For each real raw recording (``<data_dir>/binance-*-l2diff/raw``), at depth 250: the books
through :func:`features.io.replay_binance_books` (the replay, one message per book; the old
path) and through :func:`features.build.load_books` (the batch rebuild, what the CLI and
``train --source books`` call now), then the snapshot features of the spec the offline == live
test uses and the Parquet write. Best of ``--repeat`` runs after one warm-up (numba's code load
is reported separately: it is paid once per process).

Run: ``python bench/features_build.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF  # noqa: E402
from features.build import build, load_books, write_frame  # noqa: E402
from features.io import replay_binance_books  # noqa: E402
from features.spec import FeatureSpec  # noqa: E402

DATASETS = BINANCE_L2DIFF
DEPTH = 250


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    spec = FeatureSpec(depths=(5, 10, 20, 25), interval_s=1.0)
    first = True
    for name, ds in DATASETS.items():
        raw = data_dir() / ds / "raw"
        if not raw.is_dir():
            print(f"{name}: {raw} not found (set DEPTHPILOT_DATA_DIR), skipped")
            continue
        if first:
            t = time.perf_counter()
            load_books(raw, depth=DEPTH)
            print(f"first batch load in this process (numba code load included): {time.perf_counter() - t:.2f} s")
            first = False
        t_rep, _ = best(partial(replay_binance_books, raw, DEPTH), args.repeat)
        t_bat, books = best(partial(load_books, raw, depth=DEPTH), args.repeat)
        ts, bids, asks = books  # type: ignore[misc]
        t_feat, df = best(partial(build, spec, "snapshot", ts=ts, bids=bids, asks=asks), args.repeat)
        with tempfile.TemporaryDirectory() as d:
            t_write, _ = best(partial(write_frame, df, Path(d) / "f.parquet"), args.repeat)  # type: ignore[arg-type]
        n = len(ts)
        old, new = t_rep + t_feat + t_write, t_bat + t_feat + t_write
        print(
            f"{name}: {n} books at depth {DEPTH}: books replay {t_rep:.3f} s ({n / t_rep:,.0f}/s), "
            f"batch {t_bat:.3f} s ({n / t_bat:,.0f}/s), {t_rep / t_bat:.1f}x; features {t_feat:.3f} s, "
            f"write {t_write:.3f} s; features build (books + features + write) {old:.3f} s -> {new:.3f} s, "
            f"{old / new:.1f}x"
        )


if __name__ == "__main__":
    main()
