"""Binance message parsing (pure): websocket payloads, REST snapshots and recording lines.

Messages: combined-stream payloads ``{"stream": "<sym>@<channel>", "data": {...}}``
(``depth``/``depth@100ms``/``depth@0ms`` diffs, ``trade``, ``aggTrade``, ``bookTicker``,
anything else is passed through as ``other``), raw-stream payloads (classified by ``e``), and
REST depth snapshots ``{"lastUpdateId": ..., "bids": ..., "asks": ...}``.

Market and symbol come from the data, never from file names: the symbol from the stream
name / the ``s`` field; the market from the diff itself (:func:`market_of_diff`): spot diffs
carry no ``pu``; futures diffs do, and COIN-M ones name a delivery symbol (``BTCUSD_PERP``,
``ETHUSD_240927``) and a pair ``ps``. COIN-M sizes are contracts (``contract_value`` quote
units each); spot and USD-M sizes are in the base asset (:func:`size_unit`).

Recording lines (hftbacktest's Binance collector): ``<local_receive_ts> <json>``; the local
timestamp is ns (2024 files) or µs (older files), normalised to ns by magnitude, per line.
Reading files (ordering, continuation, stream identity) lives in
:mod:`collector.exchanges.binance_recording`; the sync rule in
:mod:`collector.exchanges.binance_sync`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import orjson

from depthpilot.messages import Side, Trade

__all__ = [
    "BinanceFormatError",
    "DepthDiff",
    "DepthSnapshot",
    "TradeMsg",
    "BookTickerMsg",
    "Record",
    "KIND_DEPTH",
    "KIND_SNAPSHOT",
    "KIND_TRADE",
    "KIND_BOOK_TICKER",
    "KIND_OTHER",
    "normalise_local_ts",
    "parse_line",
    "parse_stream_message",
    "trade_message",
    "EXCHANGE_SPOT",
    "EXCHANGE_USDM",
    "EXCHANGE_COINM",
    "MARKETS",
    "EXCHANGE_BY_MARKET",
    "market_of_diff",
    "market_of_trade",
    "size_unit",
]

EXCHANGE_SPOT = "binance"
EXCHANGE_USDM = "binanceusdm"
EXCHANGE_COINM = "binancecoinm"
MARKETS = ("spot", "usdm", "coinm")
EXCHANGE_BY_MARKET = {"spot": EXCHANGE_SPOT, "usdm": EXCHANGE_USDM, "coinm": EXCHANGE_COINM}


class BinanceFormatError(ValueError):
    """A Binance message or recording line that cannot be parsed."""


# --------------------------------------------------------------------------- message types
# strict=False decoders turn Binance's quoted decimals ("61837.63000000") into floats in C.


class DepthDiff(msgspec.Struct, kw_only=True, gc=False):
    """A ``depthUpdate`` diff. ``pu`` is present on futures streams only (USD-M and COIN-M);
    ``ps`` (the pair, e.g. ``BTCUSD``) on COIN-M only."""

    U: int
    u: int
    pu: int | None = None
    ps: str = ""
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
        raise BinanceFormatError(f"bad local timestamp {line[:sp][:20]!r} (want '<timestamp> <json>')") from None
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


# --------------------------------------------------------------------------- market from the data


def _is_coinm_symbol(symbol: str) -> bool:
    """COIN-M contracts are ``<PAIR>_PERP`` or ``<PAIR>_<YYMMDD>``; spot/USD-M symbols have no
    underscore."""
    return "_" in symbol


def market_of_diff(d: DepthDiff, symbol: str = "") -> str:
    """``spot`` | ``usdm`` | ``coinm`` of a diff, from its fields (spot diffs carry no ``pu``)."""
    if d.pu is None:
        return "spot"
    return "coinm" if (d.ps or _is_coinm_symbol(symbol or d.s)) else "usdm"


def market_of_trade(t: TradeMsg, symbol: str = "") -> str:
    """Market of a trade event: futures trades carry ``X`` (MARKET, INSURANCE_FUND, ...)."""
    if _is_coinm_symbol(symbol or t.s):
        return "coinm"
    return "usdm" if t.X else "spot"


# Binance COIN-M contract sizes (USD per contract): BTC pairs 100, all others 10
# (https://www.binance.com/en/support/faq/coin-margined-futures-contract-specifications).
_COINM_BTC_CONTRACT_USD = 100.0
_COINM_OTHER_CONTRACT_USD = 10.0


def size_unit(market: str, symbol: str) -> tuple[str, float]:
    """(unit of book/trade sizes, value of one contract in quote units; 0 for base-asset sizes).

    Spot and USD-M quantities are in the base asset; COIN-M quantities are contracts."""
    if market == "coinm":
        pair = symbol.split("_", 1)[0]
        return "contracts", _COINM_BTC_CONTRACT_USD if pair.startswith("BTC") else _COINM_OTHER_CONTRACT_USD
    return "base", 0.0
