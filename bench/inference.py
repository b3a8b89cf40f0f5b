"""Inference latency/throughput: served streaming path vs plain eager ``model(x)``, same run.

    python bench/inference.py [--n 2000]

For each model (a 2-layer 128-unit LSTM over 60 steps with random weights, and the bundled
``predictor/models/klines-default`` model if present), on real Binance BTCUSDT 1 m kline features:

* batch-1 latency p50/p99: ``Predictor.push`` (served path: pipelined windows, TorchScript step,
  inference_mode) vs eager ``softmax(model(x))`` on the same window (grad mode on, as a plain
  call would run), the ratio, and the max |diff| of the probabilities;
* sequences/s for 64 symbols: one batched ``predict_windows`` call (64 windows) vs 64 eager
  batch-1 calls, and 64 streaming pushes (one per symbol);
* GPU batched throughput when CUDA is available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthpilot.paths import models_dir  # noqa: E402
from predictor.artifact import Manifest, load_artifact, save_artifact  # noqa: E402
from predictor.dataset import Scaler  # noqa: E402
from predictor.inference import Predictor  # noqa: E402
from predictor.labels import LabelSpec  # noqa: E402
from predictor.model import LSTMClassifier, ModelConfig  # noqa: E402
from predictor.train_default import klines_data  # noqa: E402


def _pct(a: list[float]) -> tuple[float, float]:
    arr = np.array(a) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _big_artifact(X: np.ndarray, names: list[str], tmp: Path) -> Path:
    torch.manual_seed(0)
    label = LabelSpec("updown", 5, 0.0005)
    cfg = ModelConfig(n_features=X.shape[1], n_classes=3, hidden=128, layers=2, dropout=0.0)
    model = LSTMClassifier(cfg).eval()
    sc = Scaler.fit(X[:20000])
    man = Manifest(
        model_id="bench-128x2",
        spec_hash="bench",
        feature_names=names,
        label=label.to_dict(),
        classes=label.classes,
        seq_len=60,
        model=cfg.to_dict(),
        scaler=sc.to_dict(),
    )
    return save_artifact(tmp / "big", model, man)


def bench_model(title: str, path: Path, X: np.ndarray, ts: np.ndarray, n: int) -> None:
    pred = Predictor(load_artifact(path))
    model = load_artifact(path).model  # separate copy for the eager baseline
    S = pred.seq_len
    start = int(np.flatnonzero(np.isfinite(X).all(1))[0]) + 1
    rows = np.arange(start, start + S - 1 + n)
    # warm the served path (and JIT) on a different symbol
    for i in rows[: S + 50]:
        pred.push("warm", int(ts[i]), X[i])
    served_t, served_p = [], []
    for i in rows:
        t0 = time.perf_counter()
        p = pred.push("BTCUSDT", int(ts[i]), X[i])
        dt = time.perf_counter() - t0
        if p is not None:
            served_t.append(dt)
            served_p.append(p)
    ends = rows[S - 1 :]
    wins = np.stack([X[e - S + 1 : e + 1] for e in ends])
    xs = torch.from_numpy(((wins - pred._mean) / pred._scale).astype(np.float32))
    for k in range(300):  # warm oneDNN primitive caches
        torch.softmax(model(xs[k % len(xs) : k % len(xs) + 1]), -1)
    eager_t, eager_p = [], []
    for k in range(len(xs)):
        x = xs[k : k + 1]
        t0 = time.perf_counter()
        out = torch.softmax(model(x), -1)
        eager_t.append(time.perf_counter() - t0)
        eager_p.append(out.detach().double().numpy()[0])
    diff = float(np.abs(np.array(served_p) - np.array(eager_p)).max())
    s50, s99 = _pct(served_t)
    e50, e99 = _pct(eager_t)
    cfg = model.cfg
    print(
        f"\n== {title}: LSTM hidden={cfg.hidden} layers={cfg.layers} seq={S} features={cfg.n_features} "
        f"(torch threads={torch.get_num_threads()}, {len(served_t)} calls)"
    )
    print(f"batch-1 eager model(x):      p50 {e50:8.1f} us   p99 {e99:8.1f} us")
    print(f"batch-1 served push():       p50 {s50:8.1f} us   p99 {s99:8.1f} us")
    print(f"  speed-up p50 {e50 / s50:.2f}x  p99 {e99 / s99:.2f}x  (goal >= 2x)   max |diff| {diff:.2e} (goal <= 1e-5)")

    # 64 symbols
    B = 64
    reps = max(5, n // 200)
    wb = wins[:B]
    pred.predict_windows(wb)
    t0 = time.perf_counter()
    for _ in range(reps):
        pred.predict_windows(wb)
    batched = B * reps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(reps):
        for k in range(B):
            torch.softmax(model(xs[k : k + 1]), -1)
    seq_eager = B * reps / (time.perf_counter() - t0)
    syms = [f"S{k}" for k in range(B)]
    for k, s in enumerate(syms):  # warm every symbol's window
        for i in rows[k : k + S]:
            pred.push(s, int(ts[i]), X[i])
    t0 = time.perf_counter()
    step = 0
    for r in range(reps):
        for k, s in enumerate(syms):
            i = rows[k + S + r]
            pred.push(s, int(ts[i]), X[i])
            step += 1
    streaming = step / (time.perf_counter() - t0)
    print(
        f"{B} symbols: predict_windows batched {batched:9.0f} seq/s | 64 x eager batch-1 {seq_eager:8.0f} seq/s "
        f"({batched / seq_eager:.1f}x) | streaming push {streaming:8.0f} seq/s ({streaming / seq_eager:.1f}x)"
    )

    if torch.cuda.is_available():
        gm = load_artifact(path).model.cuda()
        for bsz in (64, 1024):
            xb = xs[:bsz].cuda() if len(xs) >= bsz else xs.repeat(bsz // len(xs) + 1, 1, 1)[:bsz].cuda()
            with torch.inference_mode():
                gm(xb)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    torch.softmax(gm(xb), -1)
                torch.cuda.synchronize()
            print(f"GPU batch {bsz}: {bsz * 20 / (time.perf_counter() - t0):.0f} seq/s")
    else:
        print("GPU: not available")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="timed calls per path")
    args = ap.parse_args()
    data = klines_data()  # the real klines through the features engine (scale-free candle columns)
    X, ts, names = np.nan_to_num(data.X), data.ts, data.names
    with tempfile.TemporaryDirectory() as tmp:
        bench_model("large (random weights)", _big_artifact(X, names, Path(tmp)), X, ts, args.n)
    default = models_dir() / "klines-default"
    if (default / "manifest.json").is_file():
        art = load_artifact(default)
        if data.spec_hash != art.manifest.spec_hash or list(art.manifest.feature_names) != names:
            print(f"\nbundled default model skipped: its spec {art.manifest.spec_hash} != features {data.spec_hash}")
        else:
            bench_model("bundled klines-default", default, X, ts, args.n)
    else:
        print(f"\nno bundled default model at {default}")


if __name__ == "__main__":
    main()
