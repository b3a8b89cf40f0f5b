"""Bybit v5 private WebSocket (``order``, ``execution``, ``position`` topics) through pybit's
``WebSocket(channel_type="private")``: messages are queued for ``poll_events``.

pybit authenticates with ``{"op": "auth", "args": [key, expires, HMAC(secret, "GET/realtime" +
expires)]}`` right after connecting. Every decoded message goes to our ``callback_function`` (a
supported constructor argument), so auth / subscribe answers are ours to read. pybit only reconnects after a socket *error*, not
after a server-side close, so this wrapper watches the connection itself: ``healthy()`` is
connected, authenticated AND subscribed; when it is not, the adapter polls REST, and ``ensure()`` builds a
fresh connection at most every ``reconnect_s``. (pybit's ``retries=N`` allows N-1 attempts: its
loop raises when the counter reaches 0 even after a successful connect, hence ``retries=2``.)

pybit builds its URL from ``wss://{SUBDOMAIN}.{DOMAIN}.{TLD}/v5/private`` (no full-URL
argument): :class:`_EndpointWebSocket` changes only the URL handed to ``_connect`` (a mirror
or a local test server).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
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


class _Conn:
    """One connection's state, fed by pybit's socket thread."""

    def __init__(self, queue: deque[dict[str, Any]], lock: threading.Lock) -> None:
        self.ws: _EndpointWebSocket | None = None
        self.auth: bool | None = None  # None until Bybit answered the auth
        self.subscribed = False
        self._queue, self._lock = queue, lock

    def on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "auth":
            self.auth = bool(msg.get("success"))
            if not self.auth:
                log.error("bybit private stream: authentication refused: %s", msg.get("ret_msg", ""))
        elif op == "subscribe":
            self.subscribed = bool(msg.get("success"))
        elif "topic" in msg:
            with self._lock:
                self._queue.append(msg)


class BybitPrivateStream:
    def __init__(
        self, *, url: str, api_key: str, api_secret: str, reconnect_s: float = 5.0, auth_wait_s: float = 2.0
    ) -> None:
        self.url = url
        self._key, self._secret = api_key, api_secret
        self.reconnect_s = reconnect_s
        self.auth_wait_s = auth_wait_s
        self._conn: _Conn | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._last_attempt = -1e9
        self.connects = 0
        self.down_since: float | None = time.monotonic()  # not connected yet: REST covers

    def healthy(self) -> bool:
        c = self._conn
        ok = c is not None and c.ws is not None and c.ws.is_connected() and bool(c.auth) and c.subscribed
        if not ok and self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("bybit private stream %s is down: REST polling until it is back", self.url)
        return ok

    def ensure(self) -> bool:
        """Healthy, or (re)connect when the last attempt is ``reconnect_s`` old. True if healthy.
        Never blocks longer than pybit's connect plus ``auth_wait_s`` (pybit's own ``subscribe``
        would wait forever for a socket that closed, so we subscribe ourselves)."""
        if self.healthy():
            return True
        now = time.monotonic()
        if now - self._last_attempt < self.reconnect_s:
            return False
        self._last_attempt = now
        self.close()
        conn = _Conn(self._queue, self._lock)
        try:  # connects and sends the auth (pybit); every decoded message goes to conn.on_message
            conn.ws = _EndpointWebSocket(
                endpoint=self.url,
                channel_type="private",
                testnet=False,
                api_key=self._key,
                api_secret=self._secret,
                retries=2,
                restart_on_error=False,
                # pybit's default auth expiry is 1 s after signing: a busy host or a slow link
                # gets a correct key refused; 10 s still bounds a replayed auth message
                private_auth_expire=10,
                callback_function=conn.on_message,
            )
        except Exception as e:  # noqa: BLE001 - pybit raises websocket / plain exceptions on connect: stay on REST
            log.warning("bybit private stream %s: connect failed (%s); REST polling", self.url, type(e).__name__)
            return False
        self._conn = conn
        self.connects += 1
        deadline = time.monotonic() + self.auth_wait_s
        while conn.auth is None and conn.ws.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        if conn.auth:
            try:
                conn.ws.ws.send(json.dumps({"op": "subscribe", "req_id": uuid.uuid4().hex, "args": list(TOPICS)}))
            except Exception as e:  # noqa: BLE001 - the socket went away in between
                log.warning("bybit private stream: subscribe failed (%s)", type(e).__name__)
            while not conn.subscribed and conn.ws.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            self.close()
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
        conn, self._conn = self._conn, None
        if conn is not None and conn.ws is not None:
            try:
                conn.ws.exit()
            except Exception as e:  # noqa: BLE001 - a socket already gone
                log.debug("bybit private stream close: %s", type(e).__name__)
