"""Backtest speed through the whole path, per stage, on the real Binance USD-M recording.

Stages (book snapshots/s each, one process):

* **books**: (a) the raw L2 diffs rebuilt by the collector's builder at the model's depth (250)
  (:func:`backtest.data.load_recording` on the raw directory), and (b) the top-25 CSV export of
  the same recording read into arrays (the "already materialised books" case);
* **features**: the feature engine in batch over every book (``features.engine.batch_features``);
* **model**: the bundled LSTM, batched over every window (reported separately);
* **strategy + paper fills**: ``TradingEngine`` + ``PaperExchange`` event by event
  (:func:`backtest.run.run_signals`: signals, fills with latency and fees, stops).

Baseline in the same run: the naive per-event path a service chain takes for each book (one
``StreamingFeatures.update``, one ``Predictor.push``, a ``Signal`` message, the engine + paper
exchange), without a bus. Second baseline, also in the same run: the first ``--services-s``
seconds of the recording replayed through the running services (collector -> features ->
predictor -> trader on paper) on the in-memory bus, as fast as they go (``REPLAY_SPEED=0``;
books wait up to 20 s for their signal, ``TRADER_REPLAY_HOLD_S``; timed to the last signal),
against the backtest of the same slice on the services' configuration (load + model on its
sampled clock + engine/paper), with the check that both made the same trades.

Run: ``python bench/backtest.py [--books N] [--services-s 120]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from backtest.data import infer_instrument, load_recording
from backtest.run import RunConfig, run_signals
from backtest.signals import (
    feature_matrix,
    load_model,
    model_depth,
    model_probs,
)
from depthpilot.paths import data_dir
from trader.backtest import Simulator
from trader.engine import TradingEngine

USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"


def rate(n: int, s: float) -> str:
    return f"{n / s:,.0f}/s" if s > 0 else "inf"


def naive(books, pred, inst, cfg: RunConfig) -> tuple[float, float, float]:
    """Per event: streaming features -> push -> Signal -> engine + paper. Returns seconds of
    (features, model, strategy)."""
    from backtest.run import _paper
    from backtest.signals import model_spec
    from features.engine import StreamingFeatures
    from features.spec import feature_names

    spec = model_spec(pred)
    names = feature_names(spec)
    cols = [names.index(n) for n in pred.feature_names]
    sf = StreamingFeatures(spec)
    pred.reset()
    eng = TradingEngine(cfg.trader, {inst.symbol: inst})
    sim = Simulator(eng, _paper(inst, cfg), keep_actions=False)
    sim.control("start", inst.symbol)
    ttl = int(float(pred.thresholds.get("signal_ttl_s", 5.0)) * 1e9)
    tf = tm = tt = 0.0
    pc = time.perf_counter
    nan = np.full(len(cols), np.nan)
    for v in books.views():
        t0 = pc()
        x = sf.update(v.ts, v.bids, v.asks) if v.valid else None
        t1 = pc()
        p = pred.push(inst.symbol, v.ts, x[cols] if x is not None else nan)
        sig = pred.make_signal(inst.exchange, inst.symbol, v.ts, p, ttl_ns=ttl) if p is not None else None
        t2 = pc()
        sim.book(v)
        if sig is not None:
            sim.signal(sig)
        t3 = pc()
        tf += t1 - t0
        tm += t2 - t1
        tt += t3 - t2
    return tf, tm, tt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", type=int, default=0, help="use the first N books (0 = all)")
    ap.add_argument(
        "--services-s",
        type=float,
        default=120.0,
        help="seconds of the recording replayed through the services (0 = skip)",
    )
    args = ap.parse_args()
    root = data_dir() / USDM
    pred = load_model()
    cfg = RunConfig()
    pc = time.perf_counter

    t0 = pc()
    raw = load_recording(root, depth=model_depth(pred))
    t_raw = pc() - t0
    t0 = pc()
    csv = load_recording(root / "derived_book_snapshot_25.csv.gz")
    t_csv = pc() - t0
    books = raw.slice(0, args.books) if args.books else raw
    n = len(books)
    inst = infer_instrument(books)

    t_feat = 1e9
    for _ in range(3):  # best of 3: the machine is shared
        t0 = pc()
        X = feature_matrix(pred, books)
        t_feat = min(t_feat, pc() - t0)
    t0 = pc()
    stream = model_probs(pred, books, X)
    t_model = pc() - t0
    best_strat = 1e9
    for _ in range(5):
        r = run_signals(books, stream, inst, cfg)
        best_strat = min(best_strat, r.seconds)
    # the same loop with signals prepared outside the timing (the engine + paper alone)
    sigs = stream.signals(books)
    views = books.views()
    from backtest.run import _paper

    eng = TradingEngine(cfg.trader, {inst.symbol: inst})
    sim = Simulator(eng, _paper(inst, cfg), keep_actions=False)
    sim.control("start", inst.symbol)
    t0 = pc()
    for v, s in zip(views, sigs):
        sim.book(v)
        if s is not None:
            sim.signal(s)
    t_loop = pc() - t0

    tf, tm, tt = naive(books, pred, inst, cfg)
    print(f"recording {USDM}: {n} books, {len(r.trades)} model trades (defaults: 50 ms latency, 5.5 bps taker)")
    print("stage                                 seconds   snapshots/s")
    print(f"books: raw diffs rebuilt, depth 250   {t_raw:7.3f}   {rate(len(raw), t_raw)}")
    print(f"books: top-25 CSV export read         {t_csv:7.3f}   {rate(len(csv), t_csv)}")
    print(f"features (batch, 250 levels)          {t_feat:7.3f}   {rate(n, t_feat)}")
    print(f"model (batched LSTM windows)          {t_model:7.3f}   {rate(n, t_model)}")
    print(f"strategy + paper fills (run_signals)  {best_strat:7.3f}   {rate(n, best_strat)}")
    print(f"  of which engine + paper loop alone  {t_loop:7.3f}   {rate(n, t_loop)}")
    core = t_feat + best_strat
    print(f"features + strategy (books in memory)          {rate(n, core)}")
    print(f"books(CSV) + features + strategy               {rate(n, t_csv * n / len(csv) + core)}")
    print(f"books(raw) + features + strategy               {rate(n, t_raw * n / len(raw) + core)}")
    print(f"whole path incl. model, books from raw         {rate(n, t_raw * n / len(raw) + core + t_model)}")
    print(
        f"naive per-event path (streaming features, push, engine): features {rate(n, tf)}, model {rate(n, tm)}, "
        f"strategy {rate(n, tt)}; features+strategy {rate(n, tf + tt)}"
    )
    print(
        f"ratio batch/naive: features {tf / t_feat:.1f}x, model {tm / t_model:.1f}x, "
        f"features+model+strategy {(tf + tm + tt) / (core + t_model):.1f}x"
    )
    if args.services_s:
        services_ratio(args.services_s)


def services_ratio(seconds: float) -> None:
    """The backtest vs the running services (in-memory bus) on the same slice of the recording."""
    import tempfile
    import uuid

    from tests.backtest.parity_run import SPOT, run_backtest, run_services, slice_recording

    with tempfile.TemporaryDirectory() as tmp:
        rec = slice_recording(data_dir() / SPOT, seconds, Path(tmp) / "btcusdt.gz")
        t0 = time.perf_counter()
        bt, books = run_backtest(rec)
        t_bt = time.perf_counter() - t0
        # unpaced, the signals lag the books by more than the default 1 s hold: books wait longer
        sv = run_services(
            f"memory://{uuid.uuid4().hex[:8]}", rec, speed=0.0, timeout_s=600, quiet_s=0.5, TRADER_REPLAY_HOLD_S="20"
        )
    key = lambda t: (t.side, t.qty, t.entry_price, t.exit_price, t.entry_ts, t.exit_ts)  # noqa: E731
    closed = [t for t in bt.trades if t.exit_reason != "flatten"]
    same = [key(t) for t in sv.trades[: len(closed)]] == [key(t) for t in closed]
    n = len(books)
    print(f"services on the in-memory bus, first {seconds:g} s of {SPOT} ({n} books, unpaced):")
    print(f"  backtest (model load, books, model, strategy){t_bt:7.3f} s   {rate(n, t_bt)}")
    print(
        f"  services (replay -> trader took last signal)  {sv.seconds:7.3f} s   {rate(sv.books, sv.seconds)}"
        f"  ({sv.books} books, {sv.signals} signals, late signals {sv.counters.get('replay_late_signals', 0):.0f})"
    )
    print(
        f"  ratio services/backtest: {sv.seconds / t_bt:.1f}x; same trades: {same} "
        f"({len(closed)} backtest trades, {len(sv.trades)} service trades)"
    )


if __name__ == "__main__":
    main()
