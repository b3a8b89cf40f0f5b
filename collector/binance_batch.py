"""Batch rebuild of a raw Binance recording's books as arrays (file reading + the compiled
kernels of :mod:`collector.text_kernels` and :mod:`collector.book_kernel`): the same rows :class:`collector.replay_binance.BinanceRecordingReplay`
emits with ``trades=False`` and no throttle, stacked like :func:`backtest.data._stack`, at a
fraction of the cost.

Each file of the stream is read whole; only its depth-diff and REST-snapshot lines are decoded
(msgspec, the level lists kept as raw JSON text and parsed by :func:`~collector.text_kernels.parse_levels`);
the events then go through :func:`~collector.book_kernel.rebuild` in one call. Anything this
path does not cover returns ``None`` and the caller uses the collector's replay, which gives
the same books or names the bad line: several streams in the input, a truncated gzip, a line
that does not look like a recording line (``<ts> {...}``), a level list that is not number
pairs, a snapshot naming another symbol. Trade and other channels' lines are only checked for
that shape, not decoded (the replay ignores them with ``trades=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import msgspec
import numpy as np
from isal import isal_zlib

from collector.exchanges.binance_parse import (
    EXCHANGE_BY_MARKET,
    KIND_SNAPSHOT,
    BinanceFormatError,
    DepthSnapshot,
    market_of_diff,
    normalise_local_ts,
    parse_line,
)
from collector.exchanges.binance_recording import _GZIP_MAGIC, _READ_ERRORS, open_recording, plan_streams

__all__ = ["BatchBooks", "rebuild_recording"]


class _Diff(msgspec.Struct, kw_only=True, gc=False):
    """:class:`~collector.exchanges.binance_parse.DepthDiff` with the level lists left as raw JSON."""

    U: int
    u: int
    pu: int | None = None
    ps: str = ""
    E: int = 0
    T: int = 0
    s: str = ""
    b: msgspec.Raw = msgspec.Raw(b"[]")
    a: msgspec.Raw = msgspec.Raw(b"[]")


class _Env(msgspec.Struct, gc=False):
    data: _Diff


class _Snap(msgspec.Struct, gc=False):
    """A REST snapshot's level lists as raw JSON."""

    bids: msgspec.Raw
    asks: msgspec.Raw


_dec_diffs = msgspec.json.Decoder(list[_Env], strict=False)
_dec_snap = msgspec.json.Decoder(_Snap)
# isal's stub declares its error as a plain value; at run time it is an Exception subclass
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
_TS0 = b"1000000000000000000 "  # a placeholder receive time for parse_line (not used)


@dataclass
class BatchBooks:
    exchange: str
    symbol: str
    ts: np.ndarray  # (T,) int64 ns, before the monotone clamp
    bids: np.ndarray  # (T, L, 2)
    asks: np.ndarray
    ok: np.ndarray  # (T,) the builder's validity


def _gunzip(data: bytes) -> bytes:
    """All members of a gzip file, CRC and length checked while inflating (one pass), by
    ISA-L's inflate (``isal``: the same bytes as zlib at ~2x its speed; bench/backtest.py)."""
    out = []
    while True:
        d = isal_zlib.decompressobj(wbits=31)
        out.append(d.decompress(data))
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker")
        data = d.unused_data
        if not data.strip(b"\x00"):  # trailing zero padding is allowed (as gzip)
            return b"".join(out) if len(out) > 1 else out[0]


def _read(path: Path) -> bytes | None:
    """The whole decompressed file (gzip by its magic bytes, as :func:`open_recording`), or None
    when the replay must judge it (not a recording, truncated or corrupt gzip)."""
    try:
        data = path.read_bytes()
        if data[:2] == _GZIP_MAGIC:
            return _gunzip(data)
        with open_recording(path):  # refuses binary content with one line (the replay says it)
            pass
        return data
    except (BinanceFormatError, EOFError, _ISAL_ERROR, *_READ_ERRORS):
        return None


def _events(files: list[Path]) -> tuple[list[int], list[int], list[bytes], set[bytes]] | None:
    """(kinds, receive times as written, JSON payloads, stream names) of the depth-diff and
    snapshot lines of all files, in order, or None when a line needs the replay's judgement."""
    from collector.text_kernels import LINE_BAD, LINE_DIFF, LINE_SNAPSHOT, scan_lines

    kinds: list[int] = []
    times: list[int] = []
    payloads: list[bytes] = []
    streams: set[bytes] = set()
    for f in files:
        data = _read(f)
        if data is None:
            return None
        buf = np.frombuffer(data, dtype=np.uint8)
        kind, ts, j0, j1, s0, s1 = scan_lines(buf, np.flatnonzero(buf == 10))
        if (kind == LINE_BAD).any():
            return None
        keep = np.flatnonzero((kind == LINE_DIFF) | (kind == LINE_SNAPSHOT))
        kinds += (kind[keep] == LINE_SNAPSHOT).astype(np.int8).tolist()
        times += ts[keep].tolist()
        payloads += [data[a:b] for a, b in zip(j0[keep].tolist(), j1[keep].tolist())]
        d = kind == LINE_DIFF
        streams |= {data[a:b] for a, b in zip(s0[d].tolist(), s1[d].tolist())}
    return kinds, times, payloads, streams


def rebuild_recording(paths: str | Path | Iterable[str | Path], depth: int) -> BatchBooks | None:
    """The replay's books of a single-stream raw Binance recording as arrays, or None when the
    recording needs the replay itself (see the module doc)."""
    from collector.book_kernel import KIND_SNAPSHOT as K_SNAP
    from collector.book_kernel import price_slots, rebuild
    from collector.text_kernels import parse_levels

    planned = plan_streams(paths)
    if len(planned) != 1:
        return None
    infos = planned[0]
    ev = _events([i.path for i in infos])
    if ev is None:
        return None
    kinds, times, payloads, streams = ev
    if len(streams) != 1:
        return None  # several symbols in one stream: the replay splits them
    if not kinds:
        return None
    if min(times) < 10**18 or max(times) >= 10**19:
        try:
            times = [normalise_local_ts(t) for t in times]
        except BinanceFormatError:
            return None
    kind = np.array(kinds, dtype=np.int8)
    n = len(kinds)
    is_snap = kind == K_SNAP
    diff_idx = np.flatnonzero(~is_snap)
    if diff_idx.size == 0:
        return None
    try:
        diffs = [x.data for x in _dec_diffs.decode(b"[" + b",".join(payloads[i] for i in diff_idx.tolist()) + b"]")]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    # stream identity, from the data as the replay does
    first = parse_line(_TS0 + payloads[int(diff_idx[0])])  # the first diff, fully typed
    sym = streams.pop().decode().upper()
    market = market_of_diff(first.msg, sym)
    if infos[0].market != market or infos[0].symbol != sym:
        return None
    U = np.zeros(n, dtype=np.int64)
    u = np.zeros(n, dtype=np.int64)
    pu = np.zeros(n, dtype=np.int64)
    has_pu = np.zeros(n, dtype=np.bool_)
    ts_ex = np.zeros(n, dtype=np.int64)
    U[diff_idx] = [d.U for d in diffs]
    u[diff_idx] = [d.u for d in diffs]
    pus = [d.pu for d in diffs]
    has_pu[diff_idx] = [p is not None for p in pus]
    pu[diff_idx] = [-1 if p is None else p for p in pus]
    ts_ex[diff_idx] = [d.E * 1_000_000 for d in diffs]
    # the level text of every event (bids, asks), in event order
    pieces: list[Any] = [None] * (2 * n)
    di = diff_idx.tolist()
    for k, d in zip(di, diffs):
        pieces[2 * k] = d.b
        pieces[2 * k + 1] = d.a
    snaps: dict[int, DepthSnapshot] = {}
    for i in np.flatnonzero(is_snap).tolist():
        try:
            rec = parse_line(_TS0 + payloads[i])  # typed decode: the replay's validation and floats
            raw = _dec_snap.decode(payloads[i])
        except (BinanceFormatError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        if rec.kind != KIND_SNAPSHOT or (rec.symbol and rec.symbol != sym):
            return None
        snaps[i] = rec.msg
        u[i] = rec.msg.lastUpdateId
        ts_ex[i] = (rec.msg.T or rec.msg.E) * 1_000_000
        pieces[2 * i] = raw.bids
        pieces[2 * i + 1] = raw.asks
    blob = b"".join(pieces)
    lens = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    ends = np.cumsum(lens)
    starts = ends - lens
    cap = max(1, len(blob) // 5)  # a level takes at least 5 characters ("[1,1]")
    px = np.empty(cap)
    qty = np.empty(cap)
    counts = np.zeros(len(pieces), dtype=np.int64)
    slow = np.zeros(2 * cap, dtype=np.uint8)
    spans = np.empty((2 * cap, 2), dtype=np.int64)
    nlev, bad = parse_levels(np.frombuffer(blob, dtype=np.uint8), starts, ends, px, qty, counts, slow, spans)
    if bad >= 0:
        return None
    for sl in np.flatnonzero(slow[: 2 * nlev]).tolist():  # sizes with more than 15 digits
        try:
            v = float(blob[spans[sl, 0] : spans[sl, 1]])
        except ValueError:
            return None
        (qty if sl & 1 else px)[sl >> 1] = v
    key, prices = price_slots(px, nlev)
    offs = np.concatenate(([0], np.cumsum(counts)[:-1]))
    b_off, a_off = offs[0::2].copy(), offs[1::2].copy()
    b_cnt, a_cnt = counts[0::2].copy(), counts[1::2].copy()
    for i, snap in snaps.items():  # the kernel's numbers are the replay's (msgspec) numbers
        for off, cnt, levels in ((b_off[i], b_cnt[i], snap.bids), (a_off[i], a_cnt[i], snap.asks)):
            ref = np.array(levels, dtype=np.float64).reshape(-1, 2)
            if len(ref) != cnt or not (
                np.array_equal(ref[:, 0], px[off : off + cnt]) and np.array_equal(ref[:, 1], qty[off : off + cnt])
            ):
                return None
    ts_recv = np.array(times, dtype=np.int64)
    out_b = np.empty((n, depth, 2))
    out_a = np.empty((n, depth, 2))
    rows, ts, ok, width = rebuild(
        kind, U, u, pu, has_pu, ts_ex, ts_recv, b_off, b_cnt, a_off, a_cnt, qty, key, prices,
        depth, -1, out_b, out_a,
    )  # fmt: skip
    L = min(depth, int(width))
    bids, asks = out_b[:rows], out_a[:rows]
    if L < depth:
        bids, asks = np.ascontiguousarray(bids[:, :L]), np.ascontiguousarray(asks[:, :L])
    return BatchBooks(EXCHANGE_BY_MARKET[market], sym, ts, bids, asks, ok)
