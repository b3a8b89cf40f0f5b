"""Train the small bundled default models (committed, each well under 2 MB):

* ``klines-default``: 1-minute candle indicators (scale-free columns only) on the real
  Binance BTCUSDT klines, up/flat/down over the next 5 minutes;
* ``book-default``: order-book features on the real Binance spot L2 recording (rebuilt at 250
  levels), books sampled on a 100 ms clock, a 2 s window, up/flat/down on the mid 2 s ahead:
  the model the ``make run`` demo serves.

    python -m predictor.train_default [klines|book|all]
    python -m predictor.train_default baselines   # (re)store the fitted baselines in both manifests

Label parameters: ``klines-default`` horizon 5 bars (5 min), threshold 0.0005 (5 bp);
``book-default`` horizon 20 snapshots (~2 s), threshold 0.00002 (0.2 bp).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

from depthpilot.paths import data_dir, models_dir
from depthpilot.sample_catalogue import BINANCE_KLINES_1M, BINANCE_L2DIFF, file_name
from features.spec import FeatureSpec
from predictor.clock import rows_for
from predictor.labels import LabelSpec
from predictor.smoothing import SmoothingConfig
from predictor.sources import RELATIVE_CANDLE_COLUMNS, TrainingData, from_books, from_klines, relative_columns
from predictor.train import ProgressEvent, TrainConfig, train

KLINES = file_name(BINANCE_KLINES_1M, "BTCUSDT_1m.csv.gz")
BOOK_RECORDING = f"{BINANCE_L2DIFF['spot']}/raw"

KLINES_SPEC = FeatureSpec(interval_s=60.0)
KLINES_CONFIG = TrainConfig(
    label=LabelSpec(kind="updown", horizon=5, threshold=0.0005),
    seq_len=30,
    hidden=32,
    layers=1,
    dropout=0.1,
    lr=3e-3,
    batch_size=256,
    max_epochs=8,
    patience=3,
    n_folds=4,
    train_stride=2,
    seed=0,
    model_name="klines-default",
    smoothing=SmoothingConfig(k=3, prob_threshold=0.45),
    signal_ttl_s=120.0,
)

# books sampled every 100 ms (the last book at or before each tick); window and horizon in seconds
BOOK_SPEC = FeatureSpec(interval_s=1.0, sample_interval_s=0.1, max_gap_s=2.0)
BOOK_WINDOW_S = 2.0
BOOK_HORIZON_S = 2.0
BOOK_CONFIG = TrainConfig(
    label=LabelSpec(
        kind="updown", horizon=rows_for(BOOK_HORIZON_S, BOOK_SPEC.sample_interval_s, "horizon"), threshold=0.00002
    ),
    seq_len=rows_for(BOOK_WINDOW_S, BOOK_SPEC.sample_interval_s, "window"),
    hidden=32,
    layers=1,
    dropout=0.1,
    lr=3e-3,
    batch_size=128,
    max_epochs=10,
    patience=3,
    n_folds=3,
    train_stride=1,
    seed=0,
    model_name="book-default",
    smoothing=SmoothingConfig(k=5, prob_threshold=0.5),
    signal_ttl_s=5.0,
)


def klines_data() -> TrainingData:
    return from_klines(data_dir() / KLINES, KLINES_SPEC).select(RELATIVE_CANDLE_COLUMNS)


def book_data() -> TrainingData:
    d = from_books(data_dir() / BOOK_RECORDING, BOOK_SPEC, kind="snapshot", depth=250)
    return d.select(relative_columns(d.names))


def train_one(which: str, out_dir: Path | None = None, progress: Callable[[ProgressEvent], None] | None = None) -> Path:
    data, cfg = (klines_data(), KLINES_CONFIG) if which == "klines" else (book_data(), BOOK_CONFIG)
    out = out_dir or models_dir() / cfg.model_name
    return train(
        cfg, data.X, data.ts, data.prices, data.names, data.spec_hash, out, progress=progress, features=data.features
    )


def store_baselines(which: str, path: Path | None = None) -> dict:
    """Fit the baselines on the final training rows recorded in an existing artifact's manifest
    (same data, labels and sample mask as its training) and write them into the manifest; the
    weights are untouched. For artifacts trained before manifests carried baselines."""
    import numpy as np

    from predictor.artifact import MANIFEST_FILE, write_manifest
    from predictor.dataset import sample_mask
    from predictor.evaluate import fit_baselines
    from predictor.labels import make_labels

    data, cfg = (klines_data(), KLINES_CONFIG) if which == "klines" else (book_data(), BOOK_CONFIG)
    mpath = (path or models_dir() / cfg.model_name) / MANIFEST_FILE
    man = json.loads(mpath.read_text())
    if man["spec_hash"] != data.spec_hash or man["feature_names"] != data.names:
        raise SystemExit(f"{mpath}: the data does not match the model's features")
    label = LabelSpec.from_dict(man["label"])
    y = make_labels(label, data.prices)
    rng = man["data_range"]
    mask = sample_mask(data.X, y, int(man["seq_len"]))
    idx = np.flatnonzero(mask & (data.ts >= rng["final_train_start_ts"]) & (data.ts <= rng["final_train_end_ts"]))
    fb = fit_baselines(y, idx, label.n_classes, label.horizon, seed=int(man["train_config"].get("seed", 0)))
    man["baselines"] = fb.to_dict()
    write_manifest(mpath.parent, man)
    return man["baselines"]


def _print_progress(ev: ProgressEvent) -> None:
    if ev.stage in ("fold", "final"):
        who = f"fold {ev.fold}" if ev.stage == "fold" else "final"
        print(
            f"[{ev.step:3d}/{ev.steps_total}] {who} epoch {ev.epoch}: train {ev.train_loss:.4f} val {ev.val_loss:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which == "baselines":
        for w in ("klines", "book"):
            print(w, store_baselines(w))
        sys.exit(0)
    for w in ("klines", "book") if which == "all" else (which,):
        t0 = time.perf_counter()
        path = train_one(w, progress=_print_progress)
        man = json.loads((Path(path) / "manifest.json").read_text())
        wf = man["metrics"]["walk_forward"]
        print(f"artifact: {path}  ({time.perf_counter() - t0:.1f}s)")
        for who in ("model", "majority", "persistence", "random"):
            print(
                f"  {who:12s} acc {wf[who]['mean_fold_accuracy']:.4f}  log-loss {wf[who]['mean_fold_log_loss']:.4f}"
                f"  brier {wf[who]['mean_fold_brier']:.4f}"
            )
