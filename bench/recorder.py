"""Recorder throughput: raw messages written into replayable gzip day files per second.

Uses the real Binance spot recording's messages (read into memory first; reading is not
timed). Measured in the same process:

* ``recorder``: :class:`collector.recorder.Recorder` (one line per message, rotation checks,
  a sync flush every second, ``.part`` rename on close);
* ``baseline``: writing the same lines into one plain ``gzip.open`` file (no flushes, no
  rotation), the least a compressed recording costs.

The ratio shows what crash safety and rotation cost; the absolute figure says how many
messages per second one core can record (a busy Binance symbol sends a few hundred).

Run: ``python bench/recorder.py``.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.recorder import Recorder  # noqa: E402
from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF, file_name  # noqa: E402

RAW = file_name(BINANCE_L2DIFF["spot"], "raw/btcusdt_20240808.gz")


def main() -> None:
    path = data_dir() / RAW
    if not path.exists():
        sys.exit(f"{path} not found (set DEPTHPILOT_DATA_DIR)")
    msgs = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            ts, _, body = line.rstrip(b"\n").partition(b" ")
            msgs.append((int(ts), body))
    n_bytes = sum(len(b) for _, b in msgs)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with Recorder(d, "binance", flush_interval_s=1.0) as r:
            for ts, body in msgs:
                r.write("BTCUSDT", body, ts)
        t_rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        with gzip.open(Path(d) / "baseline.gz", "wb", compresslevel=6) as fh:
            for ts, body in msgs:
                fh.write(b"%d %s\n" % (ts, body))
        t_base = time.perf_counter() - t0
    print(f"{len(msgs):,} messages, {n_bytes / 1e6:.1f} MB raw")
    print(f"recorder: {len(msgs) / t_rec:,.0f} msg/s ({n_bytes / t_rec / 1e6:.1f} MB/s)")
    print(f"baseline: {len(msgs) / t_base:,.0f} msg/s (plain gzip); recorder/baseline time ratio {t_rec / t_base:.2f}")


if __name__ == "__main__":
    main()
