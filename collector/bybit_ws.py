"""Bybit v5 public order book over pybit's websocket client, built by OUR builder.

pybit's ``WebSocket`` maintains its own book for ``orderbook.*`` topics
(``_process_delta_orderbook``), which is known to go wrong (pybit issue #369) and does no
``u`` continuity check. We therefore hand pybit a raw ``callback_function`` (a supported
constructor argument: every decoded message goes to it instead of pybit's handler) and
feed the raw messages to :class:`collector.exchanges.bybit.BybitBookBuilder`.
Unsubscribe acknowledgements are passed on to pybit so its subscription bookkeeping stays
right (that is what lets us re-subscribe).

Resync: on a gap (``u`` skipped) the builder invalidates the book; this module then
unsubscribes and re-subscribes the topic, and Bybit answers with a fresh snapshot.

Endpoint: pybit builds its URL from ``wss://{SUBDOMAIN}.{DOMAIN}.com/v5/public/{type}``
(constructor args only choose testnet/demo/domain/tld, never a full URL). To reach a
proxy or a local test server, :class:`EndpointWebSocket` subclasses pybit's ``WebSocket``
and changes only the endpoint string passed to ``_connect`` (also used on reconnect).

Trades: with an ``on_trade`` callback the stream also subscribes ``publicTrade.<SYMBOL>``
on the same pybit socket; :func:`parse_public_trades` (pure) turns each raw message into
:class:`depthpilot.messages.Trade` objects (``S`` is the taker side).

Recording: with ``raw_sink(symbol, raw, ts_ns)`` every ``orderbook.*`` and ``publicTrade.*``
message pybit hands us is passed on as compact JSON, with its local receive time, before the
builder sees it (the same time stamps the emitted books and trades): :mod:`collector.recorder`
writes them as ``<ts> <json>`` lines that :func:`collector.clip_replay.bybit_recording_replay`
plays back through the same builder. pybit gives decoded dicts, so the recorded text is their
re-encoding (same keys, same values, same order), not the bytes on the wire.

Threading: pybit runs the socket in its own thread; ``on_update``/``on_trade`` are called
on that thread, with the builder locked. Use :meth:`BybitBookStream.snapshot` from elsewhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Mapping

from pybit.unified_trading import WebSocket

from collector.exchanges.bybit import BybitBookBuilder
from collector.exchanges.core import ApplyResult
from depthpilot.messages import BookSnapshot, Side, Trade

__all__ = ["BybitBookStream", "BybitTradeError", "EndpointWebSocket", "ORDERBOOK_DEPTHS", "parse_public_trades"]

log = logging.getLogger(__name__)

# Bybit v5 docs / pybit docstring: linear & inverse 1, 50, 200, 500 (1000 added later, as ccxt lists);
# spot 1, 50, 200, 1000.
ORDERBOOK_DEPTHS = {"linear": (1, 50, 200, 500, 1000), "inverse": (1, 50, 200, 500, 1000), "spot": (1, 50, 200, 1000)}

UpdateCallback = Callable[[ApplyResult, BybitBookBuilder], Any]
TradeCallback = Callable[[Trade], Any]

_TAKER = {"Buy": Side.BUY, "Sell": Side.SELL}


class BybitTradeError(ValueError):
    """A ``publicTrade`` message that cannot be turned into trades."""


def parse_public_trades(msg: Mapping[str, Any], *, ts_recv: int, exchange: str = "bybit") -> list[Trade]:
    """Bybit v5 ``publicTrade.<SYMBOL>`` message -> trades, in message order.

    Fields per trade (Bybit v5 docs): ``T`` trade time (ms), ``s`` symbol, ``S`` taker side
    (Buy/Sell), ``v`` size, ``p`` price, ``i`` trade id. Anything missing or malformed ->
    :class:`BybitTradeError` (the whole message is refused)."""
    topic = str(msg.get("topic", ""))
    if not topic.startswith("publicTrade."):
        raise BybitTradeError(f"not a publicTrade message: topic={topic!r}")
    rows = msg.get("data")
    if not isinstance(rows, list):
        raise BybitTradeError(f"{topic}: 'data' must be a list, got {type(rows).__name__}")
    out: list[Trade] = []
    for r in rows:
        try:
            side = _TAKER[r["S"]]
            price, size, ts = float(r["p"]), float(r["v"]), int(r["T"])
            symbol, tid = str(r["s"]), str(r["i"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BybitTradeError(f"{topic}: bad trade {r!r}: {type(exc).__name__} {exc}") from None
        if not (price > 0 and size > 0 and ts > 0):
            raise BybitTradeError(f"{topic}: bad trade {r!r}: price, size and time must be > 0")
        out.append(
            Trade(
                exchange=exchange,
                symbol=symbol,
                ts_exchange=ts * 1_000_000,
                ts_recv=ts_recv,
                price=price,
                size=size,
                side=side,
                trade_id=tid,
            )
        )
    return out


class EndpointWebSocket(WebSocket):
    """pybit ``WebSocket`` connecting to an explicit ``endpoint`` URL (only change)."""

    def __init__(self, *, endpoint: str, **kwargs: Any) -> None:
        self._endpoint_override = endpoint
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:  # noqa: D401 - pybit hook
        super()._connect(self._endpoint_override)


class BybitBookStream:
    def __init__(
        self,
        symbol: str,
        *,
        depth: int = 50,
        channel_type: str = "linear",
        testnet: bool = False,
        endpoint: str | None = None,
        on_update: UpdateCallback | None = None,
        on_trade: TradeCallback | None = None,
        ws_kwargs: Mapping[str, Any] | None = None,
        raw_sink: Callable[[str, bytes, int], Any] | None = None,
    ) -> None:
        allowed = ORDERBOOK_DEPTHS.get(channel_type)
        if allowed is None or depth not in allowed:
            raise ValueError(f"bybit {channel_type!r} orderbook depth must be one of {allowed}, got {depth}")
        self.symbol = symbol.upper()
        self.depth = depth
        self.topic = f"orderbook.{depth}.{self.symbol}"
        self.channel_type = channel_type
        self.testnet = testnet
        self.endpoint = endpoint
        self.on_update = on_update
        self.on_trade = on_trade  # given: publicTrade.<SYMBOL> is subscribed too
        self.trade_topic = f"publicTrade.{self.symbol}"
        self.trades = 0
        self.bad_trade_messages = 0
        self.ws_kwargs = dict(ws_kwargs or {})
        self.raw_sink = raw_sink
        self.recv_ns = 0  # local receive time of the message being handled (books, trades, recording)
        self.was_valid = False  # the book's validity before that message
        self.builder = BybitBookBuilder(self.symbol)
        self.results: Counter[str] = Counter()
        self.resyncs = 0
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._resync_pending = False
        self.ws: WebSocket | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect (blocks until pybit reports the socket open) and subscribe."""
        kwargs = dict(
            self.ws_kwargs, channel_type=self.channel_type, testnet=self.testnet, callback_function=self._on_raw
        )
        self.ws = EndpointWebSocket(endpoint=self.endpoint, **kwargs) if self.endpoint else WebSocket(**kwargs)
        self._subscribe()
        if self.on_trade is not None:
            self.ws.trade_stream(self.symbol, self._topic_callback_unused)

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.exit()

    def __enter__(self) -> "BybitBookStream":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def snapshot(self, depth: int | None = None) -> BookSnapshot:
        with self._lock:
            return self.builder.to_snapshot(depth or self.depth)

    # ----------------------------------------------------------------- pybit plumbing
    def _subscribe(self) -> None:
        assert self.ws is not None
        # the per-topic callback is never called: callback_function receives everything
        self.ws.orderbook_stream(self.depth, self.symbol, self._topic_callback_unused)

    @staticmethod
    def _topic_callback_unused(message: Any) -> None:  # pragma: no cover - pybit never calls it here
        log.error("unexpected pybit topic callback: %s", str(message)[:200])

    def _on_raw(self, msg: dict) -> None:
        """pybit raw callback (websocket thread)."""
        op = msg.get("op")
        if op == "unsubscribe":
            assert self.ws is not None
            self.ws._handle_incoming_message(msg)  # pybit bookkeeping: drop subscription + callback
            if self._resync_pending and msg.get("success"):
                self._resync_pending = False
                self._subscribe()  # Bybit answers a new subscription with a snapshot
            return
        if op == "subscribe" or "topic" not in msg:
            if msg.get("success") is False:
                self.errors.append(str(msg.get("ret_msg")))
                log.error("bybit subscription failed: %s", msg)
            return  # acks, pongs
        ts = time.time_ns()
        if self.raw_sink is not None:
            self.raw_sink(self.symbol, json.dumps(msg, separators=(",", ":")).encode(), ts)
        if str(msg["topic"]).startswith("publicTrade."):
            self._on_trades(msg, ts)
            return
        with self._lock:
            self.recv_ns = ts
            self.was_valid = self.builder.valid
            result = self.builder.process(msg)
            self.results[result.value] += 1
            if self.on_update is not None:
                self.on_update(result, self.builder)  # before a resync resets the book: the broken book is shown
            if result.needs_resync:
                self._start_resync()

    def _on_trades(self, msg: dict, ts: int) -> None:
        if self.on_trade is None:
            return
        try:
            trades = parse_public_trades(msg, ts_recv=ts)
        except BybitTradeError as exc:
            self.bad_trade_messages += 1
            self.errors.append(str(exc)[:300])
            log.error("bybit: %s", exc)
            return
        for t in trades:
            self.trades += 1
            self.on_trade(t)

    def _start_resync(self) -> None:
        if self._resync_pending or self.ws is None:
            return
        self.resyncs += 1
        self._resync_pending = True
        log.warning("bybit %s: %s; resubscribing", self.topic, self.builder.reason)
        self.builder.reset()
        self.ws.unsubscribe(self.topic)
