"""The venue registry: exchange name -> adapter. The service, the replay and the CLI look a
venue up here; nothing else branches on exchange names.

A venue adapter bundles, for one exchange (or one market of it):

* ``parser`` / ``builder``: the pure modules that decode its messages and keep its book on
  the shared apply/sync result protocol (:class:`collector.exchanges.core.ApplyResult` /
  :class:`collector.exchanges.binance_sync.SyncResult`), used live AND by the replay;
* ``feeds(ctx, symbols)``: its async live feeds. Every feed is a factory returning a source
  with ``async stream()`` (yielding :class:`BookSnapshot` / :class:`Trade`) and ``async
  close()``; the collector runs each one under the same supervised loop (retry, back-off,
  health).

Adding an exchange: see the README ("Adding an exchange").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence

from depthpilot.messages import BookSnapshot, Trade

if TYPE_CHECKING:
    from collector.binance_ws import Market

__all__ = ["FeedContext", "FeedSpec", "Venue", "VenueError", "VENUES", "venue", "known_venues", "BybitSource"]

log = logging.getLogger(__name__)


class VenueError(ValueError):
    """An exchange name no adapter serves."""


@dataclass
class FeedContext:
    """What live feeds need from the service: settings and the reporting callbacks."""

    settings: Any
    on_retry: Callable[[Any], None]
    on_reconnect: Callable[[Any], None]
    # exchange -> collector.recorder.Recorder when raw messages are recorded (COLLECTOR_RECORD_DIR)
    recorder_for: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class FeedSpec:
    name: str  # "<exchange> <what> <symbols>" (health, logs)
    exchange: str
    symbols: tuple[str, ...]
    what: str  # book | trades | book+trades
    make: Callable[[], Any]  # -> source with async stream() / async close()


@dataclass(frozen=True)
class Venue:
    name: str
    parser: str  # module holding the message parser
    builder: str  # module holding the book builder
    feeds: Callable[[FeedContext, Sequence[str], str], list[FeedSpec]]
    doc: str = ""


# --------------------------------------------------------------------------- Binance (native)

_BINANCE_MARKET: dict[str, Market] = {"binance": "spot", "binanceusdm": "usdm", "binancecoinm": "coinm"}


def _binance_feeds(ctx: FeedContext, symbols: Sequence[str], exchange: str) -> list[FeedSpec]:
    from collector.binance_ws import BinanceDiffSource

    s = ctx.settings
    market = _BINANCE_MARKET[exchange]
    ws_url, rest_url = {
        "spot": (s.binance_ws_url, s.binance_rest_url),
        "usdm": (s.binance_usdm_ws_url, s.binance_usdm_rest_url),
        "coinm": (getattr(s, "binance_coinm_ws_url", None), getattr(s, "binance_coinm_rest_url", None)),
    }[market]

    def make() -> Any:
        return BinanceDiffSource(
            market,
            list(symbols),
            depth=s.book_depth,
            ws_url=ws_url,
            rest_url=rest_url,
            on_retry=ctx.on_retry,
            on_reconnect=ctx.on_reconnect,
            depth_stream=s.binance_depth_stream,
            trade_stream=s.binance_trade_stream,
            trades=s.collector_trades,
            reconnect_initial_s=s.collector_reconnect_initial_s,
            raw_sink=ctx.recorder_for(exchange).write if ctx.recorder_for else None,
        )

    return [FeedSpec(f"{exchange} book+trades {','.join(symbols)}", exchange, tuple(symbols), "book+trades", make)]


# --------------------------------------------------------------------------- Bybit (pybit + own book)


class BybitSource:
    """pybit's threaded websocket as an async source: ``stream()`` connects (a failed connect
    raises into the supervisor, which retries with back-off) and yields our own book's
    snapshots and the trades; it raises when pybit gives up on the socket. Books are emitted
    by the same rule as the replay of a recording (:func:`collector.exchanges.core.publishes`),
    stamped with the message's receive time; ``raw_sink`` records every book/trade message."""

    def __init__(
        self,
        symbol: str,
        *,
        depth: int,
        emit_depth: int,
        testnet: bool,
        trades: bool,
        endpoint: str | None = None,
        connect_retries: int = 3,
        raw_sink: Callable[[str, bytes, int], Any] | None = None,
        ws_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.symbol = symbol
        self.raw_sink = raw_sink
        # one reconnect mechanism: the collector's supervisor, not pybit's own restart
        self.ws_kwargs = {"retries": connect_retries, "restart_on_error": False, **(ws_kwargs or {})}
        self.depth = depth
        self.emit_depth = emit_depth
        self.testnet = testnet
        self.trades = trades
        self.endpoint = endpoint
        self.connect_retries = connect_retries
        self._stream: Any = None

    async def stream(self) -> AsyncIterator[BookSnapshot | Trade]:
        from collector.bybit_ws import BybitBookStream
        from collector.exchanges.core import publishes

        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def put(x: Any) -> None:
            loop.call_soon_threadsafe(q.put_nowait, x)

        def on_update(res: Any, b: Any) -> None:
            if publishes(res, bs.was_valid):
                put(b.to_snapshot(self.emit_depth, bs.recv_ns))

        bs = BybitBookStream(
            self.symbol,
            depth=self.depth,
            testnet=self.testnet,
            endpoint=self.endpoint,
            on_update=on_update,
            on_trade=put if self.trades else None,
            ws_kwargs=self.ws_kwargs,
            raw_sink=self.raw_sink,
        )
        self._stream = bs
        await loop.run_in_executor(None, bs.start)  # raises when pybit cannot connect
        while True:
            try:
                item = await asyncio.wait_for(q.get(), 1.0)
            except asyncio.TimeoutError:
                ws = bs.ws
                if ws is None or getattr(ws, "exited", False) or not ws.is_connected():
                    # the supervisor reconnects (a new subscription starts with a snapshot)
                    raise ConnectionError(f"bybit {self.symbol}: websocket closed") from None
                continue
            yield item

    async def close(self) -> None:
        bs, self._stream = self._stream, None
        if bs is not None:
            await asyncio.get_running_loop().run_in_executor(None, bs.stop)


def _bybit_feeds(ctx: FeedContext, symbols: Sequence[str], exchange: str) -> list[FeedSpec]:
    s = ctx.settings
    depth = 200 if s.book_depth > 50 else 50
    out = []
    for sym in symbols:

        def make(sym: str = sym) -> BybitSource:
            return BybitSource(
                sym,
                depth=depth,
                emit_depth=s.book_depth,
                testnet=s.mode.value == "testnet",
                trades=s.collector_trades,
                endpoint=getattr(s, "bybit_ws_url", None),
                raw_sink=ctx.recorder_for(exchange).write if ctx.recorder_for else None,
            )

        out.append(FeedSpec(f"bybit book+trades {sym}", exchange, (sym,), "book+trades", make))
    return out


# --------------------------------------------------------------------------- ccxt (everything else)


def _ccxt_feeds(ctx: FeedContext, symbols: Sequence[str], exchange: str) -> list[FeedSpec]:
    from collector.ccxt_source import CcxtBookSource, CcxtTradeSource

    s = ctx.settings
    out = []
    for sym in symbols:

        def book(sym: str = sym) -> Any:
            return CcxtBookSource(
                exchange,
                sym,
                depth=s.book_depth,
                mode=s.collector_ccxt_mode,
                on_retry=ctx.on_retry,
                api_base_url=s.ccxt_api_base_url,
                ws_base_url=getattr(s, "ccxt_ws_base_url", None),
                raw_sink=ctx.recorder_for(exchange).write if ctx.recorder_for else None,
            )

        out.append(FeedSpec(f"{exchange} book {sym}", exchange, (sym,), "book", book))
        if s.collector_trades:
            last: list[Any] = []

            def trades(sym: str = sym, last: list[Any] = last) -> Any:
                # a replacement source resumes after the last trade the failed one published
                prev = last.pop() if last else None
                src = CcxtTradeSource(
                    exchange,
                    sym,
                    mode=s.collector_ccxt_mode,
                    on_retry=ctx.on_retry,
                    api_base_url=s.ccxt_api_base_url,
                    ws_base_url=getattr(s, "ccxt_ws_base_url", None),
                    since_ms=prev.since_ms if prev is not None else None,
                    seen_ids=prev.seen_ids() if prev is not None else (),
                    raw_sink=ctx.recorder_for(exchange).write if ctx.recorder_for else None,
                )
                last.append(src)
                return src

            out.append(FeedSpec(f"{exchange} trades {sym}", exchange, (sym,), "trades", trades))
    return out


VENUES: dict[str, Venue] = {
    name: Venue(
        name,
        "collector.exchanges.binance_parse",
        "collector.exchanges.binance_sync",
        _binance_feeds,
        f"Binance {market} native diff-depth",
    )
    for name, market in _BINANCE_MARKET.items()
}
VENUES["bybit"] = Venue(
    "bybit", "collector.bybit_ws", "collector.exchanges.bybit", _bybit_feeds, "Bybit v5 linear via pybit, own book"
)


# --------------------------------------------------------------------------- Kraken spot (native, CRC32-checked)


def _kraken_spot_feeds(ctx: FeedContext, symbols: Sequence[str], exchange: str) -> list[FeedSpec]:
    from collector.exchanges.kraken_spot import DEPTHS
    from collector.exchanges.kraken_spot_feed import KrakenSpotSource

    s = ctx.settings
    depth = next((d for d in DEPTHS if d >= s.book_depth), DEPTHS[-1])

    def make() -> Any:
        return KrakenSpotSource(
            list(symbols),
            depth=depth,
            version=s.kraken_spot_ws_version,
            ws_url=s.kraken_spot_ws_url,
            emit_depth=min(s.book_depth, depth),
            raw_sink=ctx.recorder_for(exchange).write if ctx.recorder_for else None,
        )

    return [FeedSpec(f"{exchange} book {','.join(symbols)}", exchange, tuple(symbols), "book", make)]


VENUES["krakenspot"] = Venue(
    "krakenspot",
    "collector.exchanges.kraken_spot_feed",
    "collector.exchanges.kraken_spot",
    _kraken_spot_feeds,
    "Kraken spot websocket v1/v2 book, CRC32 checksum on every update",
)


def _ccxt_names() -> list[str]:
    from collector.ccxt_source import EXCHANGES

    return sorted(EXCHANGES)


def known_venues() -> list[str]:
    return sorted(set(VENUES) | set(_ccxt_names()))


def venue(name: str) -> Venue:
    """The adapter of ``name``: a native one, else ccxt's; :class:`VenueError` (one line) if none."""
    v = VENUES.get(name)
    if v is not None:
        return v
    if name in _ccxt_names():
        return Venue(name, "collector.ccxt_source", "collector.ccxt_source", _ccxt_feeds, "ccxt")
    raise VenueError(f"unknown exchange {name!r} (DEPTHPILOT_EXCHANGES); known: {', '.join(known_venues())}")
