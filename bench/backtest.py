"""Backtest speed through the whole path, per stage, on the real Binance USD-M recording.

Stages (book snapshots/s each, one process):

* **books**: (a) the raw L2 diffs rebuilt in batch at the model's depth (250)
  (:func:`backtest.data.load_recording` on the raw directory: :mod:`collector.binance_batch`,
  numba kernels), never cached: read, gunzip, decode, rebuild every time (the first load in the
  process also loads numba's compiled code: printed apart); the same for the spot recording;
  (b) the collector's replay path on the same files (``BinanceRecordingReplay`` + ``_stack``, one
  ``BookSnapshot`` per diff), the old way; (c) the top-25 CSV export read into arrays; (d) the
  catalogue of rebuilt books (:mod:`backtest.book_cache`, a temporary one): what every run after
  the first on a recording reads (a hit: the ``.npy`` files memory-mapped), timed with the
  features that read them. The goal line is books from the catalogue + features + strategy;
  the line below it is the first run on a recording (books from the raw diffs);
* **features**: the feature engine in batch over every book (``features.engine.batch_features``);
* **model**: the bundled LSTM, batched over every window (reported separately);
* **strategy + paper fills**: ``TradingEngine`` + ``PaperExchange``
  (:func:`backtest.run.run_signals`: signals, fills with latency and fees, stops), with idle
  books left out, against handing every book over (``every_book=True``); the model signals every
  book, so a sparse stream (1 signal in 50 books) shows what leaving idle books out saves.

Baseline in the same run: the old per-event path (the replay's books, then for each book one
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

from backtest.book_cache import catalogue_figures
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
SPOT_RAW = "binance-spot-btcusdt-2024-08-08-l2diff"


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


def books_figures(name: str, depth: int) -> tuple[float, float, int, float]:
    """(seconds of the first batch load in this process (numba's compiled code loaded from its
    on-disk cache, or compiled), seconds of a second load (best of 3), rows, seconds of the
    collector's replay path) for one raw recording; the books are never cached."""
    import gzip

    from backtest.data import _stack
    from collector.binance_batch import _gunzip
    from collector.replay import BinanceRecordingReplay

    root = data_dir() / name
    pc = time.perf_counter
    t0 = pc()
    b = load_recording(root, depth=depth, cache=False)
    first = pc() - t0
    warm = 1e9
    for _ in range(3):
        t0 = pc()
        b = load_recording(root, depth=depth, cache=False)
        warm = min(warm, pc() - t0)
    t0 = pc()
    _stack(BinanceRecordingReplay(root / "raw", depth=depth, trades=False), depth, str(root))
    replay = pc() - t0
    raw = [f.read_bytes() for f in sorted((root / "raw").glob("*.gz"))]
    t0 = pc()
    for data in raw:
        _gunzip(data)
    gunzip = pc() - t0
    t0 = pc()
    for data in raw:
        gzip.decompress(data)
    gunzip_zlib = pc() - t0
    print(
        f"books: raw diffs {name}, depth {depth}: batch {rate(len(b), warm)} ({warm:.3f} s; first load in the "
        f"process {first:.3f} s incl. numba), of which gunzip alone {gunzip:.3f} s (ISA-L; zlib {gunzip_zlib:.3f} s); "
        f"the replay path {rate(len(b), replay)} ({replay:.3f} s): {replay / warm:.1f}x"
    )
    return first, warm, len(b), replay


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
    depth = model_depth(pred)

    _, t_raw, n_raw, t_replay = books_figures(USDM, depth)
    books_figures(SPOT_RAW, depth)
    raw = load_recording(root, depth=depth, cache=False)
    t0 = pc()
    csv = load_recording(root / "derived_book_snapshot_25.csv.gz", cache=False)
    t_csv = pc() - t0
    books = raw.slice(0, args.books) if args.books else raw
    n = len(books)
    inst = infer_instrument(books)
    # the catalogue of rebuilt books (a temporary one): a hit, and a hit + the features
    cat = catalogue_figures(root, depth, then=lambda b: feature_matrix(pred, b)) if not args.books else {}

    t_feat = 1e9
    for _ in range(3):  # best of 3: the machine is shared
        t0 = pc()
        X = feature_matrix(pred, books)
        t_feat = min(t_feat, pc() - t0)
    t0 = pc()
    stream = model_probs(pred, books, X)
    t_model = pc() - t0
    best_strat = best_every = 1e9
    for _ in range(5):
        r = run_signals(books, stream, inst, cfg)
        best_strat = min(best_strat, r.seconds)
        best_every = min(best_every, run_signals(books, stream, inst, cfg, every_book=True).seconds)
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
    # a sparse stream (the model's signal on every 500th book: flat most of the time): the idle
    # books are left out
    sp = sparse_stream(stream, 500)
    r_sp = run_signals(books, sp, inst, cfg)
    t_sp = min(run_signals(books, sp, inst, cfg).seconds for _ in range(5))
    t_sp_every = min(run_signals(books, sp, inst, cfg, every_book=True).seconds for _ in range(5))
    open_share = float((r_sp.position != 0).mean())

    tf, tm, tt = naive(books, pred, inst, cfg)
    b_raw = t_raw * n / n_raw
    b_old = t_replay * n / n_raw
    print(f"recording {USDM}: {n} books, {len(r.trades)} model trades (defaults: 50 ms latency, 5.5 bps taker)")
    print("stage                                     seconds   snapshots/s")
    print(f"books: raw diffs, batch rebuild, depth {depth} {b_raw:7.3f}   {rate(n, b_raw)}")
    print(f"books: raw diffs, collector replay         {b_old:7.3f}   {rate(n, b_old)}")
    print(f"books: top-25 CSV export read             {t_csv:7.3f}   {rate(len(csv), t_csv)}")
    print(f"features (batch, {depth} levels)              {t_feat:7.3f}   {rate(n, t_feat)}")
    print(f"model (batched LSTM windows)              {t_model:7.3f}   {rate(n, t_model)}")
    print(f"strategy + paper fills (run_signals)      {best_strat:7.3f}   {rate(n, best_strat)}")
    print(f"  every book handed over (every_book)     {best_every:7.3f}   {rate(n, best_every)}")
    print(f"  engine + paper loop alone               {t_loop:7.3f}   {rate(n, t_loop)}")
    print(
        f"  sparse signals (1 in 500 books, a position open on {open_share:.0%} of the books): "
        f"{rate(n, t_sp)} vs every book {rate(n, t_sp_every)} ({t_sp_every / t_sp:.1f}x)"
    )
    core = t_feat + best_strat
    if cat:
        print(
            f"books from the catalogue (a hit, memory-mapped): {rate(n, cat['warm'])} ({cat['warm'] * 1e3:.1f} ms); "
            f"the first load (rebuild + store) {cat['store']:.3f} s; hit + features {cat['warm_then'] * 1e3:.1f} ms "
            f"vs features on books in memory {cat['then'] * 1e3:.1f} ms"
        )
    print(f"features + strategy (books in memory)              {rate(n, core)}")
    if cat:
        goal = rate(n, cat["warm_then"] + best_strat)
        print(f"books(catalogue) + features + strategy             {goal}   <- the 100k/s goal")
    print(
        f"books(raw, batch) + features + strategy            {rate(n, b_raw + core)}   (the first run on a recording)"
    )
    print(f"books(CSV) + features + strategy                   {rate(n, t_csv * n / len(csv) + core)}")
    print(f"whole path incl. model, books from raw             {rate(n, b_raw + core + t_model)}")
    print(
        f"old per-event path (replay books, streaming features, push, engine): books {rate(n, b_old)}, "
        f"features {rate(n, tf)}, model {rate(n, tm)}, strategy {rate(n, tt)}; "
        f"books+features+strategy {rate(n, b_old + tf + tt)}"
    )
    print(
        f"ratio batch/old: books {b_old / b_raw:.1f}x, features {tf / t_feat:.1f}x, model {tm / t_model:.1f}x, "
        f"strategy {tt / best_strat:.1f}x, books+features+strategy {(b_old + tf + tt) / (b_raw + core):.1f}x, "
        f"whole path {(b_old + tf + tm + tt) / (b_raw + core + t_model):.1f}x"
    )
    if args.services_s:
        services_ratio(args.services_s)


def sparse_stream(stream, every: int):
    """The model's stream with a signal on every ``every``-th row only."""
    from dataclasses import replace

    probs = np.full_like(stream.probs, np.nan)
    probs[::every] = stream.probs[::every]
    return replace(stream, probs=probs)


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
