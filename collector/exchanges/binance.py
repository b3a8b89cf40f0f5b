"""Binance diff-depth order-book sync and the raw-recording parser (pure logic, no network).

Sync rule (Binance "How to manage a local order book correctly"):

* take a REST depth snapshot (``lastUpdateId`` = L) while buffering stream diffs;
* spot: drop diffs with ``u <= L``; the first applied diff must straddle
  ``U <= L + 1 <= u``; afterwards every diff must continue ``U == prev_u + 1``;
* USD-M futures: drop diffs with ``u < L``; the first applied diff must straddle
  ``U <= L <= u``; afterwards every diff must continue ``pu == prev_u``;
* levels carry absolute quantities, quantity 0 removes the level (removing an unknown level
  is normal).

A break of the rule is a *gap*: :class:`BinanceDiffBook` returns :attr:`SyncResult.GAP`,
marks the book invalid and waits for a fresh snapshot (buffering the diffs that arrive
meanwhile so they can bridge to it). A crossed book (best bid >= best ask) is flagged
invalid with a reason.

Recording format (hftbacktest's Binance collector; see the datasets' PROVENANCE.md): one
message per line, ``<local_receive_ts> <json>``, where the JSON is a combined-stream
payload ``{"stream": "<sym>@<channel>", "data": {...}}`` (``depth``/``depth@100ms``/
``depth@0ms`` diffs, ``trade``, ``aggTrade``, ``bookTicker``, anything else is passed
through as ``other``) or a REST depth snapshot ``{"lastUpdateId": ..., "bids": ..., "asks":
...}``. The local timestamp is ns (2024 files) or µs (older files): it is normalised to ns by
magnitude, per line.
"""
from __future__ import annotations

import enum
import gzip
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import msgspec
import orjson

from collector.book import L2Book
from depthpilot.messages import Side, Trade

__all__ = [
    "BinanceFormatError",
    "DepthDiff",
    "DepthSnapshot",
    "TradeMsg",
    "BookTickerMsg",
    "Record",
    "SyncResult",
    "GapInfo",
    "BinanceDiffBook",
    "KIND_DEPTH",
    "KIND_SNAPSHOT",
    "KIND_TRADE",
    "KIND_BOOK_TICKER",
    "KIND_OTHER",
    "normalise_local_ts",
    "parse_line",
    "parse_stream_message",
    "iter_recording",
    "recording_files",
    "symbol_from_filename",
    "trade_message",
    "EXCHANGE_SPOT",
    "EXCHANGE_USDM",
]

EXCHANGE_SPOT = "binance"
EXCHANGE_USDM = "binanceusdm"


class BinanceFormatError(ValueError):
    """A Binance message or recording line that cannot be parsed."""


# --------------------------------------------------------------------------- message types
# strict=False decoders turn Binance's quoted decimals ("61837.63000000") into floats in C.


class DepthDiff(msgspec.Struct, kw_only=True, gc=False):
    """A ``depthUpdate`` diff. ``pu`` is present on futures streams only."""

    U: int
    u: int
    pu: int | None = None
    E: int = 0  # event time, ms
    T: int = 0  # transaction time, ms (futures)
    s: str = ""
    b: list[tuple[float, float]] = []
    a: list[tuple[float, float]] = []


class DepthSnapshot(msgspec.Struct, kw_only=True, gc=False):
    """REST ``/depth`` response (spot: no times; futures: ``E``/``T`` in ms)."""

    lastUpdateId: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    E: int = 0
    T: int = 0


class TradeMsg(msgspec.Struct, kw_only=True, gc=False):
    """``trade`` (id ``t``) or ``aggTrade`` (id ``a``) event; ``m`` = buyer is maker."""

    e: str = "trade"
    E: int = 0
    T: int = 0
    s: str = ""
    p: float
    q: float
    m: bool
    t: int | None = None
    a: int | None = None
    X: str = ""  # futures: MARKET / INSURANCE_FUND / ...


class BookTickerMsg(msgspec.Struct, kw_only=True, gc=False):
    """``bookTicker``: best bid ``b``/``B`` and best ask ``a``/``A`` as of update id ``u``."""

    u: int
    s: str = ""
    b: float
    B: float
    a: float
    A: float
    E: int = 0
    T: int = 0


# combined-stream envelopes: the stream name is read from the raw bytes before decoding (it
# picks the decoder), so only ``data`` is decoded here (the ``stream`` value is skipped)


class _DepthEnv(msgspec.Struct, gc=False):
    data: DepthDiff


class _TradeEnv(msgspec.Struct, gc=False):
    data: TradeMsg


class _TickerEnv(msgspec.Struct, gc=False):
    data: BookTickerMsg


_dec_depth_env = msgspec.json.Decoder(_DepthEnv, strict=False)
_dec_trade_env = msgspec.json.Decoder(_TradeEnv, strict=False)
_dec_ticker_env = msgspec.json.Decoder(_TickerEnv, strict=False)
_dec_snapshot = msgspec.json.Decoder(DepthSnapshot, strict=False)
_dec_depth = msgspec.json.Decoder(DepthDiff, strict=False)

KIND_DEPTH = "depth"
KIND_SNAPSHOT = "snapshot"
KIND_TRADE = "trade"
KIND_BOOK_TICKER = "bookTicker"
KIND_OTHER = "other"

_TYPE_BY_KIND: dict[str, type] = {
    KIND_DEPTH: DepthDiff,
    KIND_SNAPSHOT: DepthSnapshot,
    KIND_TRADE: TradeMsg,
    KIND_BOOK_TICKER: BookTickerMsg,
}


def _channel_kind(channel: str) -> str:
    """Kind of a combined-stream channel (the part after ``<sym>@``)."""
    if channel == "depth" or channel.startswith("depth@"):
        return KIND_DEPTH  # diff depth: depth, depth@100ms, depth@0ms, depth@500ms ...
    if channel == "trade" or channel == "aggTrade":
        return KIND_TRADE
    if channel == "bookTicker":
        return KIND_BOOK_TICKER
    return KIND_OTHER  # partial depth (depth20@100ms), markPrice, kline, ...


class Record(NamedTuple):
    """One parsed recording line. ``msg`` is a DepthDiff / DepthSnapshot / TradeMsg /
    BookTickerMsg, or the decoded JSON for ``other``. ``symbol`` is upper case, or "" when the
    message does not name one (REST snapshots)."""

    ts_recv: int  # ns
    kind: str
    symbol: str
    msg: Any


def normalise_local_ts(ts: int) -> int:
    """Local receive timestamp in ns, s/ms/µs/ns detected by magnitude (epoch 2001..2286)."""
    if ts >= 10**19:
        raise BinanceFormatError(f"local timestamp {ts} is not an epoch time in s/ms/us/ns")
    if ts >= 10**18:
        return ts
    if ts >= 10**15:
        return ts * 1_000
    if ts >= 10**12:
        return ts * 1_000_000
    if ts >= 10**9:
        return ts * 1_000_000_000
    raise BinanceFormatError(f"local timestamp {ts} is not an epoch time in s/ms/us/ns")


def _convert(obj: Any, kind: str) -> Any:
    typ = _TYPE_BY_KIND.get(kind)
    if typ is None:
        return obj
    try:
        return msgspec.convert(obj, typ, strict=False)
    except msgspec.ValidationError as exc:
        raise BinanceFormatError(f"bad {kind} message: {exc}") from None


def _classify_obj(obj: Any) -> tuple[str, str, Any]:
    """(kind, symbol, typed msg) for an already-decoded JSON object."""
    if not isinstance(obj, dict):
        raise BinanceFormatError(f"expected a JSON object, got {type(obj).__name__}")
    stream = obj.get("stream")
    if isinstance(stream, str) and "data" in obj:
        sym, _, channel = stream.partition("@")
        kind = _channel_kind(channel)
        return kind, sym.upper(), _convert(obj["data"], kind)
    if "lastUpdateId" in obj and "bids" in obj:
        return KIND_SNAPSHOT, str(obj.get("symbol", "")).upper(), _convert(obj, KIND_SNAPSHOT)
    e = obj.get("e")
    if e == "depthUpdate":
        kind = KIND_DEPTH
    elif e in ("trade", "aggTrade"):
        kind = KIND_TRADE
    elif e == "bookTicker" or (e is None and {"u", "b", "B", "a", "A"} <= obj.keys()):
        kind = KIND_BOOK_TICKER
    else:
        return KIND_OTHER, str(obj.get("s", "")).upper(), obj
    return kind, str(obj.get("s", "")).upper(), _convert(obj, kind)


_STREAM_PREFIX = b'{"stream":"'
_LSP = len(_STREAM_PREFIX)
_ENV_DECODERS = {
    KIND_DEPTH: _dec_depth_env.decode,
    KIND_TRADE: _dec_trade_env.decode,
    KIND_BOOK_TICKER: _dec_ticker_env.decode,
}
# stream name (bytes) -> (kind, SYMBOL, typed envelope decoder or None); bounded by the
# number of distinct streams, which is small
_stream_cache: dict[bytes, tuple[str, str, Any]] = {}
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, orjson.JSONDecodeError, ValueError, UnicodeDecodeError)


def _stream_entry(stream: bytes) -> tuple[str, str, Any]:
    ent = _stream_cache.get(stream)
    if ent is None:
        sym, _, channel = stream.decode().partition("@")
        kind = _channel_kind(channel)
        ent = (kind, sym.upper(), _ENV_DECODERS.get(kind))
        if len(_stream_cache) < 4096:
            _stream_cache[stream] = ent
    return ent


def _parse_payload(raw: bytes, start: int = 0) -> tuple[str, str, Any]:
    """(kind, symbol, msg) of the JSON in ``raw[start:]``."""
    try:
        if raw.startswith(_STREAM_PREFIX, start):
            s0 = start + _LSP
            kind, sym, dec = _stream_cache.get(raw[s0 : raw.index(b'"', s0)]) or _stream_entry(
                raw[s0 : raw.index(b'"', s0)]
            )
            if dec is not None:
                return kind, sym, dec(raw[start:] if start else raw).data
        elif raw.startswith(b'{"lastUpdateId"', start):
            return KIND_SNAPSHOT, "", _dec_snapshot.decode(raw[start:] if start else raw)
        return _classify_obj(orjson.loads(raw[start:] if start else raw))
    except _DECODE_ERRORS as exc:
        if isinstance(exc, BinanceFormatError):
            raise
        raise BinanceFormatError(f"bad Binance message: {exc}") from None


def parse_stream_message(raw: bytes | str) -> tuple[str, str, Any]:
    """Parse one websocket payload (combined-stream, raw-stream or REST snapshot JSON).

    Returns ``(kind, symbol, msg)``; raises :class:`BinanceFormatError` on bad input. The
    common combined-stream shape is decoded straight into typed structs (one pass, in C);
    anything else goes through ``orjson`` and is classified by its keys.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    return _parse_payload(raw)


_new_tuple = tuple.__new__


def parse_line(line: bytes) -> Record:
    """Parse one recording line ``<local_ts> <json>`` (local ts normalised to ns)."""
    sp = line.find(b" ")
    if sp <= 0:
        raise BinanceFormatError("recording line has no '<timestamp> <json>' separator")
    try:
        ts = int(line[:sp])
    except ValueError:
        raise BinanceFormatError(f"bad local timestamp {line[:sp][:40]!r}") from None
    if ts < 1_000_000_000_000_000_000 or ts >= 10_000_000_000_000_000_000:
        ts = normalise_local_ts(ts)
    j = sp + 1
    if line.startswith(_STREAM_PREFIX, j):
        # fast path (inlined): known stream -> one typed decode
        s0 = j + _LSP
        ent = _stream_cache.get(line[s0 : line.find(b'"', s0)])
        if ent is not None:
            dec = ent[2]
            if dec is not None:
                try:
                    return _new_tuple(Record, (ts, ent[0], ent[1], dec(line[j:]).data))
                except _DECODE_ERRORS as exc:
                    raise BinanceFormatError(f"bad Binance message: {exc}") from None
    kind, sym, msg = _parse_payload(line, j)
    return _new_tuple(Record, (ts, kind, sym, msg))


def symbol_from_filename(path: str | Path) -> str:
    """``btcusdt_20240808.gz`` -> ``BTCUSDT`` (the recorder names files ``<symbol>_<date>``)."""
    name = Path(path).name
    stem = name.split(".", 1)[0]
    return stem.split("_", 1)[0].upper()


def recording_files(path: str | Path) -> list[Path]:
    """A recording file, or the sorted ``*.gz`` files of a directory (one window, in order)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.is_file() and x.name.endswith(".gz"))
        if not files:
            raise FileNotFoundError(f"no .gz recordings in {p}")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"recording not found: {p}")
    return [p]


def iter_recording(paths: str | Path | Iterable[str | Path]) -> Iterator[Record]:
    """Records of one or more recording files (a directory = all its ``*.gz`` in name order).

    REST snapshot lines name no symbol; they get the symbol of the file name
    (``<symbol>_<date>.gz``). Errors carry ``file:line``.
    """
    if isinstance(paths, (str, Path)):
        files = recording_files(paths)
    else:
        files = [f for p in paths for f in recording_files(p)]
    for f in files:
        file_sym = symbol_from_filename(f)
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = parse_line(line)
                except BinanceFormatError as exc:
                    raise BinanceFormatError(f"{f}:{lineno}: {exc}") from None
                if not rec.symbol:
                    rec = rec._replace(symbol=file_sym)
                yield rec


def trade_message(t: TradeMsg, exchange: str, ts_recv: int, symbol: str = "") -> Trade:
    """A Binance trade/aggTrade as a :class:`depthpilot.messages.Trade` (side = aggressor)."""
    tid = t.t if t.t is not None else t.a
    return Trade(
        exchange=exchange,
        symbol=symbol or t.s,
        ts_exchange=(t.T or t.E) * 1_000_000,
        ts_recv=ts_recv,
        price=t.p,
        size=t.q,
        side=Side.SELL if t.m else Side.BUY,  # buyer is maker -> seller was the taker
        trade_id="" if tid is None else str(tid),
    )


# --------------------------------------------------------------------------- sync state machine


class SyncResult(str, enum.Enum):
    APPLIED = "applied"  # diff applied, book in sync
    STALE = "stale"  # diff older than the book (u before the snapshot / already applied): dropped
    BUFFERED = "buffered"  # no usable snapshot yet: kept to bridge to the next snapshot
    GAP = "gap"  # sequence break: book invalid, a fresh snapshot is needed


class GapInfo(NamedTuple):
    expected: int  # spot: the U expected (prev_u + 1); futures: the pu expected (prev_u)
    got: int  # the U (spot) / pu (futures) received
    first_id: int  # U of the offending diff
    final_id: int  # u of the offending diff
    after_snapshot: bool  # True: the first diff after a snapshot did not straddle it

    def describe(self) -> str:
        if self.after_snapshot:
            return (
                f"first diff [{self.first_id}, {self.final_id}] does not straddle snapshot "
                f"lastUpdateId {self.expected}"
            )
        return f"sequence break: expected {self.expected}, got {self.got} (diff [{self.first_id}, {self.final_id}])"


_APPLIED = SyncResult.APPLIED
_AWAIT_SNAPSHOT = 0
_AWAIT_FIRST = 1
_SYNCED = 2


class BinanceDiffBook:
    """Builds one symbol's book from a REST snapshot and the diff-depth stream.

    ``market`` is ``"spot"``, ``"usdm"`` (USD-M futures; also right for COIN-M), or
    ``"auto"`` (decided by the first diff: futures diffs carry ``pu``).

    Counters: ``applied``, ``dropped`` (stale diffs), ``gaps``, ``resyncs`` (snapshots applied
    after the book had been in sync before), ``snapshots``, ``crossed`` (times the book became
    crossed), ``buffer_overflow``. ``needs_snapshot`` tells live wiring to fetch a snapshot.
    """

    __slots__ = (
        "market",
        "book",
        "_futures",
        "_state",
        "_last_u",
        "_snap_id",
        "_buffer",
        "_ever_synced",
        "_is_crossed",
        "applied",
        "dropped",
        "gaps",
        "resyncs",
        "snapshots",
        "crossed",
        "buffer_overflow",
        "last_gap",
        "_note",
    )

    def __init__(self, market: str = "auto", max_buffer: int = 10_000) -> None:
        if market not in ("spot", "usdm", "auto"):
            raise ValueError(f"market must be 'spot', 'usdm' or 'auto', not {market!r}")
        self.market = market
        self._futures: bool | None = None if market == "auto" else market == "usdm"
        self.book = L2Book()
        self._state = _AWAIT_SNAPSHOT
        self._last_u = 0
        self._snap_id = 0
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self._ever_synced = False
        self._is_crossed = False
        self.applied = 0
        self.dropped = 0
        self.gaps = 0
        self.resyncs = 0
        self.snapshots = 0
        self.crossed = 0
        self.buffer_overflow = 0
        self.last_gap: GapInfo | None = None
        self._note = ""

    # ----------------------------------------------------------------- state
    @property
    def synced(self) -> bool:
        return self._state == _SYNCED

    @property
    def needs_snapshot(self) -> bool:
        return self._state == _AWAIT_SNAPSHOT

    @property
    def valid(self) -> bool:
        return self._state == _SYNCED and not self._is_crossed

    @property
    def last_update_id(self) -> int:
        """Final update id of the last applied diff (or the snapshot's lastUpdateId)."""
        return self.book.seq

    @property
    def reason(self) -> str:
        """Why the book is not valid ("" when valid)."""
        if self._state == _AWAIT_SNAPSHOT:
            if self.last_gap is not None:
                return f"resync: waiting for a snapshot after {self.last_gap.describe()}"
            return f"waiting for a snapshot ({self._note})" if self._note else "waiting for a snapshot"
        if self._state == _AWAIT_FIRST:
            return f"waiting for the first diff after snapshot {self._snap_id}"
        if self._is_crossed:
            bb, ba = self.book.best_bid_price(), self.book.best_ask_price()
            return f"crossed: best bid {bb} >= best ask {ba}"
        return ""

    def stats(self) -> dict[str, int | bool | str]:
        return {
            "applied": self.applied,
            "dropped": self.dropped,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "snapshots": self.snapshots,
            "crossed": self.crossed,
            "buffer_overflow": self.buffer_overflow,
            "buffered": len(self._buffer),
            "valid": self.valid,
            "reason": self.reason,
            "seq": self.book.seq,
        }

    # ----------------------------------------------------------------- input
    def on_snapshot(
        self,
        last_update_id: int,
        bids: Iterable[tuple[Any, Any]],
        asks: Iterable[tuple[Any, Any]],
        ts_exchange: int = 0,
    ) -> SyncResult:
        """Apply a REST snapshot, then replay buffered diffs through the sync rule.

        Returns APPLIED if the book is in sync afterwards, BUFFERED if it waits for the first
        bridging diff, GAP if the buffered diffs do not connect (fetch a newer snapshot).
        """
        book = self.book
        book.apply_snapshot(bids, asks)
        book.seq = int(last_update_id)
        book.ts_exchange = int(ts_exchange)
        self._snap_id = int(last_update_id)
        self._last_u = int(last_update_id)
        self.snapshots += 1
        if self._ever_synced:
            self.resyncs += 1
        self._state = _AWAIT_FIRST
        self._check_crossed()
        pending = list(self._buffer)
        self._buffer.clear()
        for d in pending:
            self.on_diff(d)
        if self._state == _SYNCED:
            return SyncResult.APPLIED
        return SyncResult.BUFFERED if self._state == _AWAIT_FIRST else SyncResult.GAP

    def on_snapshot_msg(self, snap: DepthSnapshot | Mapping[str, Any]) -> SyncResult:
        if not isinstance(snap, DepthSnapshot):
            snap = _convert(dict(snap), KIND_SNAPSHOT)
        return self.on_snapshot(snap.lastUpdateId, snap.bids, snap.asks, (snap.T or snap.E) * 1_000_000)

    def on_diff(self, d: DepthDiff | Mapping[str, Any]) -> SyncResult:
        """Feed one diff (a :class:`DepthDiff` or the ``data`` dict of a depthUpdate)."""
        if type(d) is not DepthDiff:
            d = _convert(dict(d), KIND_DEPTH)  # type: ignore[arg-type]
        state = self._state
        if state == _SYNCED:  # (_futures is known once a diff has been applied)
            last = self._last_u
            if (d.pu == last) if self._futures else (d.U == last + 1):
                # hot path, inlined _apply
                book = self.book
                book.apply_levels(d.b, d.a)
                u = d.u
                book.seq = u
                book.ts_exchange = d.E * 1_000_000
                self._last_u = u
                self.applied += 1
                if book._bb >= book._ba:
                    if not self._is_crossed:
                        self._is_crossed = True
                        self.crossed += 1
                elif self._is_crossed:
                    self._is_crossed = False
                return _APPLIED
            u = d.u
            if u <= last:
                self.dropped += 1  # duplicate / old diff
                return SyncResult.STALE
            if self._futures:
                return self._gap(d, GapInfo(last, d.pu if d.pu is not None else -1, d.U, u, False))
            return self._gap(d, GapInfo(last + 1, d.U, d.U, u, False))
        futures = self._futures
        if futures is None:
            futures = self._futures = d.pu is not None
        u = d.u
        if state == _AWAIT_FIRST:
            L = self._snap_id
            if (u < L) if futures else (u <= L):
                self.dropped += 1
                return SyncResult.STALE
            if d.U <= (L if futures else L + 1):  # and u >= L (+1): straddles the snapshot
                return self._apply(d)
            return self._gap(d, GapInfo(L, d.U, d.U, u, True))
        # waiting for a snapshot: keep the diff to bridge to it
        buf = self._buffer
        if len(buf) == buf.maxlen:
            self.buffer_overflow += 1
        buf.append(d)
        return SyncResult.BUFFERED

    def _apply(self, d: DepthDiff) -> SyncResult:
        book = self.book
        book.apply_levels(d.b, d.a)
        u = d.u
        book.seq = u
        book.ts_exchange = d.E * 1_000_000
        self._last_u = u
        self._state = _SYNCED
        self._ever_synced = True
        self.applied += 1
        if book._bb >= book._ba:  # crossed (inline: hot path)
            if not self._is_crossed:
                self._is_crossed = True
                self.crossed += 1
        elif self._is_crossed:
            self._is_crossed = False
        return SyncResult.APPLIED

    def _check_crossed(self) -> None:
        was = self._is_crossed
        self._is_crossed = self.book.is_crossed()
        if self._is_crossed and not was:
            self.crossed += 1

    def _gap(self, d: DepthDiff, info: GapInfo) -> SyncResult:
        self.gaps += 1
        self.last_gap = info
        self._note = ""
        self._state = _AWAIT_SNAPSHOT
        self._buffer.clear()
        self._buffer.append(d)  # may bridge to the next snapshot
        return SyncResult.GAP

    def invalidate(self, reason: str = "reconnect") -> None:
        """Force a resync (e.g. after a websocket reconnect): wait for a new snapshot."""
        self._state = _AWAIT_SNAPSHOT
        self._buffer.clear()
        self.last_gap = None
        self._note = reason
