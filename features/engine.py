"""Feature engine entry points: batch over a recording, streaming one snapshot at a time.

Both call :func:`features.orderbook.snapshot_kernel` (batch on (T, L, 2), streaming on a
(1, n, 2) view) and the same validity rules, so they produce the same numbers.

    X = batch_features(spec, ts, (bids, asks))          # (T, F), invalid rows all-NaN
    sf = StreamingFeatures(spec)
    x = sf.update(ts_ns, bids, asks)                     # (F,) or None; sf.reason says why

Invalid snapshots (empty side, NaN/inf, non-positive price/size, unsorted levels, crossed
book, timestamp before the previous accepted one) give None / an all-NaN row and do not
become the "previous snapshot" for OFI. An invalid book (not a late one) or a feed gap (no
snapshot for more than ``spec.max_gap_s``) *resets* OFI: the next valid book is compared with
itself (OFI 0), never with the book from before the gap (:func:`features.clock.reset_events`).

Sampled clock (``spec.sample_interval_s > 0``): :func:`feature_rows` samples the books on the
fixed clock first (:mod:`features.clock`), then runs the same kernels on the sampled rows.
"""

from __future__ import annotations

import numpy as np

from depthpilot.messages import BookSnapshot, FeatureVector
from features.orderbook import (
    REASONS,
    BookInputError,
    KernelConsts,
    as_batch,
    snapshot_kernel,
    validate_books,
    validate_one,
)
from features.clock import reset_events, sample_clock
from features.spec import FeatureSpec, check_spec_hash, feature_names

__all__ = [
    "batch_features",
    "batch_validity",
    "feature_rows",
    "StreamingFeatures",
    "make_feature_vector",
    "check_feature_vector",
    "REASONS",
]

_CHUNK = 32768  # rows per kernel call in batch mode (bounds temporaries)


def batch_validity(ts: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> np.ndarray:
    """Reason code per row (0 valid; REASONS maps codes to names), incl. ts going backwards."""
    code = validate_books(bids, asks)
    ok = code == 0
    if ok.any():
        lo = np.iinfo(np.int64).min
        run = np.maximum.accumulate(np.where(ok, ts, lo))
        prev_max = np.concatenate(([lo], run[:-1]))
        code[ok & (ts < prev_max)] = 6
    return code


def batch_features(
    spec: FeatureSpec,
    ts: np.ndarray,
    books,
    return_codes: bool = False,
    reset: np.ndarray | None = None,
    return_reset: bool = False,
):
    """Per-snapshot features of a whole recording.

    ``books`` = ``(bids, asks)``, each float64 (T, L, 2) (NaN-price padding at the end of a
    row for missing levels); ``ts`` (T,) int ns. Returns X (T, F) in ``feature_names(spec)``
    order, all-NaN rows for invalid snapshots; with ``return_codes`` also the (T,) reason codes.
    ``reset`` (T,) bool: rows whose OFI restarts (default: :func:`features.clock.reset_events`
    on the event clock); ``return_reset`` appends the reset flags actually used.
    """
    bids, asks = books
    bids = np.ascontiguousarray(as_batch(bids, "bids"))
    asks = np.ascontiguousarray(as_batch(asks, "asks"))
    ts = np.asarray(ts, dtype=np.int64)
    T = bids.shape[0]
    if asks.shape[0] != T or ts.shape != (T,):
        raise BookInputError(f"ts {ts.shape}, bids {bids.shape}, asks {asks.shape} disagree on T")
    k = KernelConsts(spec)
    X = np.full((T, k.n_features), np.nan)
    code = batch_validity(ts, bids, asks) if T else np.zeros(0, dtype=np.int8)
    vidx = np.flatnonzero(code == 0)
    if reset is None:
        reset = reset_events(ts, code, spec.max_gap_ns)
    else:
        reset = np.asarray(reset, dtype=bool) & (code == 0)
        if vidx.size:
            reset[vidx[0]] = True

    def _ret() -> np.ndarray | tuple[np.ndarray, ...]:
        res: list[np.ndarray] = [X]
        if return_codes:
            res.append(code)
        if return_reset:
            res.append(reset)
        return res[0] if len(res) == 1 else tuple(res)

    if vidx.size == 0:
        return _ret()
    # top of book of valid rows; "previous" of a row that resets (the first) is itself (OFI = 0)
    top = np.concatenate((bids[vidx, 0, :], asks[vidx, 0, :]), axis=1)
    prev = np.concatenate((top[:1], top[:-1]))
    rv = reset[vidx]
    prev[rv] = top[rv]
    all_valid = vidx.size == T
    for c0 in range(0, vidx.size, _CHUNK):
        c1 = min(vidx.size, c0 + _CHUNK)
        if all_valid:
            b, a = bids[c0:c1], asks[c0:c1]
        else:
            sel = vidx[c0:c1]
            b, a = bids[sel], asks[sel]
        res = snapshot_kernel(b, a, prev[c0:c1], k)
        if all_valid:
            X[c0:c1] = res
        else:
            X[vidx[c0:c1]] = res
    return _ret()


def feature_rows(spec: FeatureSpec, ts: np.ndarray, books) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-snapshot feature rows on the spec's clock: ``(row_ts, X, reset)``.

    Event clock (``sample_interval_s == 0``): one row per book (``batch_features``; invalid rows
    all-NaN). Sampled clock: one row per tick that has a valid book at most ``max_gap_s`` old
    (the last book at or before the tick); ``reset`` marks rows where per-symbol state restarts.
    Both the offline builders and :class:`features.pipeline.SymbolPipeline` follow this."""
    bids, asks = books
    ts = np.asarray(ts, dtype=np.int64)
    if not spec.sample_interval_s:
        X, reset = batch_features(spec, ts, (bids, asks), return_reset=True)
        return ts, X, reset
    bids = as_batch(bids, "bids")
    asks = as_batch(asks, "asks")
    code = batch_validity(ts, bids, asks) if ts.size else np.zeros(0, dtype=np.int8)
    keep = np.flatnonzero(code != 6)  # late rows (timestamp going backwards) are dropped
    tick, src, reset = sample_clock(ts[keep], code[keep] == 0, spec.sample_interval_ns, spec.max_gap_ns)
    rows = keep[src]
    X = batch_features(spec, tick, (bids[rows], asks[rows]), reset=reset)
    return tick, X, reset


class StreamingFeatures:
    """Per-symbol streaming state: the previous valid top of book (for OFI) and last ts."""

    def __init__(self, spec: FeatureSpec, gap_resets: bool = True) -> None:
        self.spec = spec
        self.spec_hash = spec.hash
        self.names = feature_names(spec)
        self._k = KernelConsts(spec)
        self._prev: tuple[float, float, float, float] | None = None
        self._last_ts: int | None = None
        self._seen: int | None = None  # max ts of the books that were not late
        self._max_gap = spec.max_gap_ns if gap_resets else None
        self.reason = ""
        self.n_ok = 0
        self.n_invalid = 0
        self.n_resets = 0  # OFI restarts after an earlier valid book (invalid book, gap, reset())
        self.last_reset = False  # the row just returned restarted OFI (no previous book)

    def reset(self) -> None:
        """Forget the previous snapshot (after a resync, an invalid book or a feed gap); the
        next valid book's OFI is 0. The timestamp order check is kept."""
        if self._prev is not None:
            self.n_resets += 1
        self._prev = None

    def _seen_ts(self, ts_ns: int) -> None:
        if self._seen is not None and self._max_gap is not None and ts_ns - self._seen > self._max_gap:
            self.reset()
        if self._seen is None or ts_ns > self._seen:
            self._seen = ts_ns

    def _reject(self, code: int, ts_ns: int | None = None) -> None:
        self.reason = REASONS[code]
        self.n_invalid += 1
        if code != 6:  # an invalid book breaks the stream; a late one is only dropped
            if ts_ns is not None:
                self._seen_ts(ts_ns)
            self.reset()

    def update(self, ts_ns: int, bids: np.ndarray, asks: np.ndarray) -> np.ndarray | None:
        """Features (F,) of one snapshot, or None with ``self.reason`` set if it is invalid.

        ``bids``/``asks``: (n, 2) float64 [price, size], bids descending, asks ascending.
        Wrong array shapes raise BookInputError (a caller bug, not bad market data).
        """
        bids = np.asarray(bids, dtype=np.float64)
        asks = np.asarray(asks, dtype=np.float64)
        if bids.size == 0 or asks.size == 0:
            self._reject(1, ts_ns)
            return None
        if bids.ndim != 2 or bids.shape[1] != 2 or asks.ndim != 2 or asks.shape[1] != 2:
            raise BookInputError(f"bids/asks must be (n, 2); got {bids.shape} and {asks.shape}")
        code = validate_one(bids, asks)
        if code:
            self._reject(code, ts_ns)
            return None
        if self._last_ts is not None and ts_ns < self._last_ts:
            self._reject(6)
            return None
        self._seen_ts(ts_ns)
        if not bids.flags.c_contiguous:
            bids = np.ascontiguousarray(bids)
        if not asks.flags.c_contiguous:
            asks = np.ascontiguousarray(asks)
        b0 = bids[0].tolist()
        a0 = asks[0].tolist()
        cur = (b0[0], b0[1], a0[0], a0[1])
        self.last_reset = self._prev is None
        prev = self._prev if self._prev is not None else cur
        # trailing NaN padding (allowed by validate_one) is handled by the kernel itself
        out = snapshot_kernel(bids[None], asks[None], prev, self._k)
        self._prev = cur
        self._last_ts = ts_ns
        self.reason = ""
        self.n_ok += 1
        return out[0]

    def update_snapshot(self, snap: BookSnapshot) -> np.ndarray | None:
        """``update`` for a BookSnapshot (ts = ts_exchange, or ts_recv when unknown);
        a snapshot flagged invalid upstream is refused with its own reason."""
        ts = snap.ts_exchange or snap.ts_recv
        if not snap.valid:
            self.reason = snap.reason or "invalid_upstream"
            self.n_invalid += 1
            self._seen_ts(ts)
            self.reset()
            return None
        return self.update(ts, snap.bids, snap.asks)

    def check(self, ts_ns: int, bids: np.ndarray, asks: np.ndarray) -> int:
        """Validity code of a book (0 valid, 6 late) without computing features or touching
        OFI state; accepted books advance the timestamp order check (sampled clock input)."""
        bids = np.asarray(bids, dtype=np.float64)
        asks = np.asarray(asks, dtype=np.float64)
        if bids.size == 0 or asks.size == 0:
            return 1
        if bids.ndim != 2 or bids.shape[1] != 2 or asks.ndim != 2 or asks.shape[1] != 2:
            raise BookInputError(f"bids/asks must be (n, 2); got {bids.shape} and {asks.shape}")
        code = validate_one(bids, asks)
        if code:
            return int(code)
        if self._last_ts is not None and ts_ns < self._last_ts:
            return 6
        self._last_ts = ts_ns
        return 0


def make_feature_vector(
    spec: FeatureSpec,
    exchange: str,
    symbol: str,
    ts: int,
    values: np.ndarray,
    names: list[str] | None = None,
    interval: str = "",
) -> FeatureVector:
    """FeatureVector stamped with the spec hash (names optional on the hot path)."""
    return FeatureVector(
        exchange=exchange,
        symbol=symbol,
        ts=int(ts),
        spec_hash=spec.hash,
        values=np.asarray(values, dtype=np.float64),
        names=names or [],
        interval=interval,
    )


def check_feature_vector(spec: FeatureSpec, fv: FeatureVector, where: str = "") -> None:
    """Raise SpecMismatchError unless ``fv`` was produced by ``spec``."""
    check_spec_hash(spec, fv.spec_hash, where)
