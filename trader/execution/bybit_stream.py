"""Bybit v5 private WebSocket (``order``, ``execution``, ``position`` topics) through pybit's
``WebSocket(channel_type="private")``: messages are queued for ``poll_events``.

pybit authenticates with ``{"op": "auth", "args": [key, expires, HMAC(secret, "GET/realtime" +
expires)]}`` right after connecting and sets ``auth`` on success; a refused auth raises inside
its socket thread and closes the socket. pybit only reconnects after a socket *error*, not
after a server-side close, so this wrapper watches the connection itself: ``healthy()`` is
connected AND authenticated; when it is not, the adapter polls REST, and ``ensure()`` builds a
fresh connection at most every ``reconnect_s``. (pybit's ``retries=N`` allows N-1 attempts: its
loop raises when the counter reaches 0 even after a successful connect, hence ``retries=2``.)

pybit builds its URL from ``wss://{SUBDOMAIN}.{DOMAIN}.{TLD}/v5/private`` (no full-URL
argument): :class:`_EndpointWebSocket` changes only the URL handed to ``_connect`` (a mirror
or a local test server).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from pybit.unified_trading import WebSocket

log = logging.getLogger(__name__)

TOPICS = ("order", "execution", "position")
MAINNET_URL = "wss://stream.bybit.com/v5/private"
TESTNET_URL = "wss://stream-testnet.bybit.com/v5/private"


class _EndpointWebSocket(WebSocket):
    def __init__(self, *, endpoint: str, **kwargs: Any) -> None:
        self._endpoint_override = endpoint
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:  # pybit hook, also used on its reconnects
        super()._connect(self._endpoint_override)


class BybitPrivateStream:
    def __init__(self, *, url: str, api_key: str, api_secret: str, reconnect_s: float = 5.0,
                 auth_wait_s: float = 2.0) -> None:
        self.url = url
        self._key, self._secret = api_key, api_secret
        self.reconnect_s = reconnect_s
        self.auth_wait_s = auth_wait_s
        self._ws: _EndpointWebSocket | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._last_attempt = 0.0
        self.connects = 0
        self.down_since: float | None = time.monotonic()  # not connected yet: REST covers

    def _on_message(self, msg: dict[str, Any]) -> None:
        with self._lock:
            self._queue.append(msg)

    def healthy(self) -> bool:
        ws = self._ws
        ok = ws is not None and ws.is_connected() and bool(getattr(ws, "auth", False))
        if not ok and self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("bybit private stream %s is down: REST polling until it is back", self.url)
        return ok

    def ensure(self) -> bool:
        """Healthy, or (re)connect when the last attempt is ``reconnect_s`` old. True if healthy."""
        if self.healthy():
            return True
        now = time.monotonic()
        if now - self._last_attempt < self.reconnect_s:
            return False
        self._last_attempt = now
        self.close()
        try:
            ws = _EndpointWebSocket(endpoint=self.url, channel_type="private", testnet=False, api_key=self._key,
                                    api_secret=self._secret, retries=2, restart_on_error=False)
            for topic in TOPICS:
                ws.subscribe(topic, self._on_message)
        except Exception as e:  # pybit raises websocket / plain exceptions on connect: stay on REST
            log.warning("bybit private stream %s: connect failed (%s); REST polling", self.url, type(e).__name__)
            return False
        self._ws = ws
        self.connects += 1
        deadline = time.monotonic() + self.auth_wait_s
        while time.monotonic() < deadline and ws.is_connected() and not getattr(ws, "auth", False):
            time.sleep(0.01)
        return self.healthy()

    def mark_recovered(self) -> float | None:
        """Clear the down flag (after the adapter caught up over REST); returns when it went down."""
        since, self.down_since = self.down_since, None
        return since

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            out = list(self._queue)
            self._queue.clear()
        return out

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.exit()
            except Exception as e:  # a socket already gone
                log.debug("bybit private stream close: %s", type(e).__name__)
