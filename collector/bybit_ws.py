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

Threading: pybit runs the socket in its own thread; ``on_update`` is called on that
thread, with the builder locked. Use :meth:`BybitBookStream.snapshot` from elsewhere.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable, Mapping

from pybit.unified_trading import WebSocket

from collector.exchanges.bybit import BybitBookBuilder
from collector.exchanges.core import ApplyResult
from depthpilot.messages import BookSnapshot

__all__ = ["BybitBookStream", "EndpointWebSocket", "ORDERBOOK_DEPTHS"]

log = logging.getLogger(__name__)

# Bybit v5 docs / pybit docstring: linear & inverse 1, 50, 200, 500 (1000 added later, as ccxt lists);
# spot 1, 50, 200, 1000.
ORDERBOOK_DEPTHS = {"linear": (1, 50, 200, 500, 1000), "inverse": (1, 50, 200, 500, 1000), "spot": (1, 50, 200, 1000)}

UpdateCallback = Callable[[ApplyResult, BybitBookBuilder], Any]


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
        ws_kwargs: Mapping[str, Any] | None = None,
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
        self.ws_kwargs = dict(ws_kwargs or {})
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
        kwargs = dict(self.ws_kwargs, channel_type=self.channel_type, testnet=self.testnet,
                      callback_function=self._on_raw)
        self.ws = EndpointWebSocket(endpoint=self.endpoint, **kwargs) if self.endpoint else WebSocket(**kwargs)
        self._subscribe()

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
        with self._lock:
            result = self.builder.process(msg)
            self.results[result.value] += 1
            if result.needs_resync:
                self._start_resync()
            if self.on_update is not None:
                self.on_update(result, self.builder)

    def _start_resync(self) -> None:
        if self._resync_pending or self.ws is None:
            return
        self.resyncs += 1
        self._resync_pending = True
        log.warning("bybit %s: %s; resubscribing", self.topic, self.builder.reason)
        self.builder.reset()
        self.ws.unsubscribe(self.topic)
