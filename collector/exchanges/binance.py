"""Binance venue: parsing (:mod:`.binance_parse`), recording files (:mod:`.binance_recording`)
and the diff-depth sync rule (:mod:`.binance_sync`), re-exported here as one namespace."""
from __future__ import annotations

from collector.exchanges.binance_parse import (
    EXCHANGE_BY_MARKET,
    EXCHANGE_COINM,
    EXCHANGE_SPOT,
    EXCHANGE_USDM,
    KIND_BOOK_TICKER,
    KIND_DEPTH,
    KIND_OTHER,
    KIND_SNAPSHOT,
    KIND_TRADE,
    MARKETS,
    BinanceFormatError,
    BookTickerMsg,
    DepthDiff,
    DepthSnapshot,
    Record,
    TradeMsg,
    market_of_diff,
    market_of_trade,
    normalise_local_ts,
    parse_line,
    parse_stream_message,
    size_unit,
    trade_message,
)
from collector.exchanges.binance_recording import (
    FileInfo,
    describe_file,
    iter_recording,
    open_recording,
    plan_streams,
    recording_files,
)
from collector.exchanges.binance_sync import BinanceDiffBook, GapInfo, SyncResult

__all__ = [
    "EXCHANGE_BY_MARKET", "EXCHANGE_COINM", "EXCHANGE_SPOT", "EXCHANGE_USDM", "KIND_BOOK_TICKER", "KIND_DEPTH",
    "KIND_OTHER", "KIND_SNAPSHOT", "KIND_TRADE", "MARKETS", "BinanceFormatError", "BookTickerMsg", "DepthDiff",
    "DepthSnapshot", "Record", "TradeMsg", "market_of_diff", "market_of_trade", "normalise_local_ts", "parse_line",
    "parse_stream_message", "size_unit", "trade_message", "FileInfo", "describe_file", "iter_recording",
    "open_recording", "plan_streams", "recording_files", "BinanceDiffBook", "GapInfo", "SyncResult",
]
