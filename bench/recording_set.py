"""Reading a recording split into rotated files as one stream (collector.recording_set), against
reading the same lines from one file.

The real Binance spot recording's lines are written twice by :class:`collector.recorder.Recorder`
(not timed): once into one file, once rotated every ``ROTATE_MB`` of messages. Measured in the
same process:

* ``one file``: :func:`collector.recording_set.read_lines` over the single file (the baseline);
* ``set``: :func:`collector.recording_set.in_receive_order` over the rotated files (first-line
  probe of every file + the merge by receive time).

The ratio is what replaying a recording as a set costs over reading it whole.

Run: ``python bench/recording_set.py``.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.recorder import Recorder  # noqa: E402
from collector.recording_set import in_receive_order, read_lines, recorded_files  # noqa: E402
from depthpilot.paths import data_dir  # noqa: E402
from depthpilot.sample_catalogue import BINANCE_L2DIFF, file_name  # noqa: E402

RAW = file_name(BINANCE_L2DIFF["spot"], "raw/btcusdt_20240808.gz")
ROTATE_MB = 1.0


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    path = data_dir() / RAW
    if not path.exists():
        sys.exit(f"{path} not found (set DEPTHPILOT_DATA_DIR)")
    with gzip.open(path, "rb") as fh:
        msgs = [(int(ts), body) for ts, _, body in (ln.rstrip(b"\n").partition(b" ") for ln in fh)]
    with tempfile.TemporaryDirectory() as d:
        with Recorder(Path(d) / "one", "binance") as r:
            for ts, body in msgs:
                r.write("BTCUSDT", body, ts)
        with Recorder(Path(d) / "set", "binance", rotate_bytes=int(ROTATE_MB * 2**20)) as r:
            for ts, body in msgs:
                r.write("BTCUSDT", body, ts)
        (one,) = recorded_files(Path(d) / "one")
        files = recorded_files(Path(d) / "set")
        n_one = sum(1 for _ in read_lines(one))
        n_set = sum(1 for _ in in_receive_order(files))
        assert n_one == n_set == len(msgs)
        t_one = _best(lambda: sum(1 for _ in read_lines(one)))
        t_set = _best(lambda: sum(1 for _ in in_receive_order(files)))
    print(f"{len(msgs):,} lines; one file vs {len(files)} rotated files ({ROTATE_MB} MB each)")
    print(f"one file: {len(msgs) / t_one:,.0f} lines/s")
    print(f"set:      {len(msgs) / t_set:,.0f} lines/s; set/one time ratio {t_set / t_one:.2f}")


if __name__ == "__main__":
    main()
