"""What a backtest trades on, by model kind (the wiring between files and the pure parts).

* a per-snapshot model: the recorded books (:func:`backtest.data.load_recording`), its rows on its
  own clock (:func:`backtest.model_rows.book_rows`), the instrument read from the books;
* a candle model: a kline file in the exchange's standard layout (or ``close_datetime`` CSV),
  optionally preceded by ``history`` kline files for warm-up; the model on the candle closes
  (:func:`backtest.model_rows.candle_rows`), fills modelled from the candles
  (:mod:`backtest.candle_fills`) and said so in the report.

``start``/``end`` (ns) restrict the trading and the scored rows; the features and the model's
windows still see everything before ``start`` (the past, known then) as warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backtest.candle_fills import CandleFills, candle_books
from backtest.data import (
    BacktestInputError,
    Books,
    infer_instrument,
    is_raw_binance,
    load_recording,
    load_recording_trades,
)
from backtest.model_rows import ModelRows, book_rows, candle_rows, candle_spec, feature_kind
from backtest.signals import SignalStream, model_depth
from trader.domain import Instrument


@dataclass
class Prepared:
    books: Books  # what the engine and the paper exchange see (restricted to the window)
    stream: SignalStream  # the model's signals on those books (restricted to the window)
    rows: ModelRows  # the model's rows over everything loaded (warm-up included)
    in_window: np.ndarray  # (N,) bool: the rows inside the window
    inst: Instrument
    kind: str  # "books" | "klines"
    notes: list[str] = field(default_factory=list)
    trader_overrides: dict[str, Any] = field(default_factory=dict)  # staleness limits a candle clock needs

    def run_config(self, cfg: Any) -> Any:
        """``cfg`` (a :class:`backtest.run.RunConfig`) with :attr:`trader_overrides` applied."""
        from dataclasses import replace

        return replace(cfg, trader=replace(cfg.trader, **self.trader_overrides)) if self.trader_overrides else cfg

    @property
    def row_price(self) -> np.ndarray:
        """The label price of each row of ``stream`` (for the persistence baseline)."""
        return self.rows.price[self.in_window]


def load_candles(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """Kline files of one series, joined in time order (they must not overlap)."""
    from features.io import RecordingError, load_klines

    parts = []
    for p in paths:
        try:
            parts.append(load_klines(p))
        except RecordingError as exc:
            raise BacktestInputError(str(exc)) from None
    parts.sort(key=lambda k: int(k["ts"][0]) if len(k["ts"]) else 0)
    for a, b, pa in zip(parts, parts[1:], paths):
        if len(a["ts"]) and len(b["ts"]) and int(b["ts"][0]) <= int(a["ts"][-1]):
            raise BacktestInputError(f"{pa}: kline files overlap in time")
    keys = ("ts", "open", "high", "low", "close", "volume")
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _window(ts: np.ndarray, start: int | None, end: int | None) -> np.ndarray:
    m = np.ones(ts.shape, dtype=bool)
    if start is not None:
        m &= ts >= start
    if end is not None:
        m &= ts < end
    return m


def restrict_books(books: Books, start: int | None, end: int | None) -> Books:
    idx = np.flatnonzero(_window(books.ts, start, end))
    if idx.size == 0:
        raise BacktestInputError(f"{books.source}: no book inside the --start/--end window")
    return books.slice(int(idx[0]), int(idx[-1]) + 1)


def prepare(
    pred: Any,
    path: Path,
    *,
    latency_ns: int,
    fills: CandleFills,
    trader: Any = None,
    history: Sequence[Path] = (),
    start: int | None = None,
    end: int | None = None,
    book_cache: bool = True,
) -> Prepared:
    if trader is None:
        from trader.config import TraderConfig

        trader = TraderConfig()
    kind = feature_kind(pred)
    if kind == "candle" and is_raw_binance(path):
        return _prepare_trade_candles(pred, path, trader, history, start, end)
    if kind == "candle":
        return _prepare_klines(pred, path, trader, latency_ns, fills, history, start, end)
    if history:
        raise BacktestInputError("--history: kline warm-up is for candle models; this model eats book snapshots")
    books = load_recording(path, depth=model_depth(pred), cache=book_cache)
    rows = book_rows(pred, books)
    inst = infer_instrument(books)
    if start is None and end is None:
        return Prepared(books, rows.stream, rows, np.ones(len(rows.ts), dtype=bool), inst, "books")
    win_books = restrict_books(books, start, end)
    inw = _window(rows.ts, start, end)
    s = rows.stream
    if s.ts is None:  # one row per book: the same rows as the books
        i0 = int(np.searchsorted(books.ts, win_books.ts[0], side="left"))
        sub = SignalStream(s.name, s.classes, s.probs[i0 : i0 + len(win_books)], s.ttl_ns, s.model_id)
    else:
        sub = SignalStream(s.name, s.classes, s.probs[inw], s.ttl_ns, s.model_id, ts=s.ts[inw])
    return Prepared(win_books, sub, rows, inw, inst, "books")


def _prepare_klines(
    pred: Any,
    path: Path,
    trader: Any,
    latency_ns: int,
    fills: CandleFills,
    history: Sequence[Path],
    start: int | None,
    end: int | None,
) -> Prepared:
    main = load_candles([path])
    if main["ts"].size == 0:
        raise BacktestInputError(f"{path}: no candle")
    notes = []
    if history:
        hist = load_candles(history)
        keep = hist["ts"] < main["ts"][0]
        if not keep.any():
            raise BacktestInputError(f"--history: no candle before the first one of {path}")
        allc = {k: np.concatenate([hist[k][keep], main[k]]) for k in main}
        notes.append(f"warm-up: {int(keep.sum())} history candles before {path.name}")
    else:
        allc = main
    try:
        rows = candle_rows(pred, allc)
    except ValueError as exc:
        raise BacktestInputError(f"{path}: {exc}") from None
    inw = _window(rows.ts, start, end) & (rows.ts >= main["ts"][0])
    if not inw.any():
        raise BacktestInputError(f"{path}: no candle inside the --start/--end window")
    i0, i1 = int(np.flatnonzero(inw)[0]), int(np.flatnonzero(inw)[-1]) + 1
    win = {k: v[i0:i1] for k, v in allc.items()}
    try:
        books, inst = candle_books(win, fills, latency_ns, "klines", "klines", str(path))
    except ValueError as exc:
        raise BacktestInputError(f"{path}: {exc}") from None
    s = rows.stream
    stream = SignalStream(s.name, s.classes, s.probs[i0:i1], s.ttl_ns, s.model_id, ts=rows.ts[i0:i1])
    n_sig = int(np.isfinite(stream.probs).all(axis=1).sum())
    notes.insert(0, fills.describe(latency_ns))
    overrides = stale_limits(trader, 2.0 * float(rows.ts[1] - rows.ts[0]) / 1e9 if rows.ts.size > 1 else 120.0)
    for k, v in overrides.items():
        notes.append(f"{k} raised to {v:g} s: the modelled books and the signals come once per candle")
    if n_sig < i1 - i0:
        notes.append(f"{i1 - i0 - n_sig} of {i1 - i0} candles had no signal (indicator warm-up or model window)")
    return Prepared(books, stream, rows, inw, inst, "klines", notes, overrides)


def with_history(candles: dict[str, np.ndarray], hist: dict[str, np.ndarray] | None, notes: list[str]):
    """History candles first; where they cover an interval they win (as the features service's
    seam does: a live candle of an interval already seen is dropped)."""
    if hist is None or hist["ts"].size == 0:
        return candles
    keep = candles["ts"] > hist["ts"][-1]
    notes.append(f"warm-up: {hist['ts'].size} history candles; {int((~keep).sum())} recorded candle(s) they cover")
    return {k: np.concatenate([hist[k], candles[k][keep]]) for k in ("ts", "open", "high", "low", "close", "volume")}


def _prepare_trade_candles(
    pred: Any, path: Path, trader: Any, history: Sequence[Path], start: int | None, end: int | None
) -> Prepared:
    books, trades = load_recording_trades(path, depth=model_depth(pred))
    hist = load_candles(history) if history else None
    try:
        return from_trades(pred, books, trades, hist, trader, start, end)
    except ValueError as exc:
        raise BacktestInputError(f"{path}: {exc}") from None


def from_trades(
    pred: Any,
    books: Books,
    trades: dict[str, np.ndarray],
    hist: dict[str, np.ndarray] | None,
    trader: Any,
    start: int | None = None,
    end: int | None = None,
) -> Prepared:
    """A candle model on a book recording with trades: candles built from the recorded trades by
    the features service's candle code (``ohlcv_from_trades``, the batch twin of its
    ``CandleBuilder``; the last, still open candle is dropped as the service never closes it),
    the model at each close (its signal reaches the engine after the last book at or before the
    close), fills on the recorded books."""
    from features.candles import ohlcv_from_trades

    spec = candle_spec(pred)
    c = ohlcv_from_trades(trades["ts"], trades["price"], trades["size"], spec.interval_ns)
    c = {k: v[:-1] for k, v in c.items() if k != "n"}
    notes = [
        f"candles built from the recording's {trades['ts'].size} trades ({c['ts'].size} closed), fills on its books"
    ]
    allc = with_history(c, hist, notes)
    if allc["ts"].size == 0:
        raise ValueError("no closed candle in the recording and no --history")
    try:
        rows = candle_rows(pred, allc)
    except ValueError as exc:
        raise ValueError(f"with --history: {exc}") from None
    win_books = restrict_books(books, start, end)
    inw = _window(rows.ts, start, end) & (rows.ts >= books.ts[0]) & (rows.ts <= books.ts[-1])
    s = rows.stream
    stream = SignalStream(s.name, s.classes, s.probs[inw], s.ttl_ns, s.model_id, ts=rows.ts[inw])
    if not np.isfinite(stream.probs).all(axis=1).any():
        notes.append(
            f"no signal: the model needs {pred.seq_len} candles after its indicators' warm-up; the recording "
            f"gives {c['ts'].size} closed candle(s): pass --history kline files that end where it starts"
        )
    overrides = stale_limits(trader, 2.0 * spec.interval_s, ("max_signal_age_s",))
    for k, v in overrides.items():
        notes.append(f"{k} raised to {v:g} s: the signals come once per candle")
    return Prepared(win_books, stream, rows, inw, infer_instrument(books), "books+trades", notes, overrides)


def stale_limits(
    trader: Any, need_s: float, keys: Sequence[str] = ("max_book_age_s", "max_signal_age_s")
) -> dict[str, float]:
    """The trader's staleness limits (book age, signal age) raised to ``need_s`` where lower: on a
    candle clock a book and a signal are naturally a whole candle old between two closes."""
    return {k: need_s for k in keys if float(getattr(trader, k)) < need_s}
