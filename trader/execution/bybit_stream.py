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

pybit's connect has no deadline: its socket has no timeout (websocket-client's default), and
its ``_connect`` waits ``while the socket thread is alive`` until the opening handshake is done,
so a peer that accepts the TCP connection but never answers the handshake (or a SYN that gets
no answer) holds the caller forever. ``ensure()`` therefore runs pybit's constructor in a
daemon thread and waits at most ``connect_timeout_s``: past it the attempt is abandoned (its
socket is shut down, so the handshake read ends; a connection that still opens later is closed
at once), the failure is logged as one line and kept in ``last_error``, and REST covers. An
unanswered handshake or a refused / unanswered auth is retried with backoff (``reconnect_s``
doubled per consecutive failure, at most ``max_backoff_s``); a new attempt never starts while an
abandoned one is still running.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any

from pybit.unified_trading import WebSocket

from depthpilot.redact import mask_secrets

log = logging.getLogger(__name__)

TOPICS = ("order", "execution", "position")
MAINNET_URL = "wss://stream.bybit.com/v5/private"
TESTNET_URL = "wss://stream-testnet.bybit.com/v5/private"


class _EndpointWebSocket(WebSocket):
    def __init__(self, *, endpoint: str, conn: _Conn, **kwargs: Any) -> None:
        self._endpoint_override = endpoint
        conn.pending = self  # reachable before the constructor returns: abort() needs it
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
        # the connect, run in a thread (pybit's has no deadline)
        self.pending: _EndpointWebSocket | None = None  # set as soon as pybit's constructor starts
        self.error: Exception | None = None  # pybit's constructor raised
        self.abandoned = False  # the caller stopped waiting: a late connection is closed at once
        self.handoff = threading.Lock()

    def open(self, **kwargs: Any) -> None:
        """Thread target: pybit's constructor (connect + auth request)."""
        try:
            ws = _EndpointWebSocket(conn=self, **kwargs)
        except Exception as e:  # noqa: BLE001 - pybit raises websocket / plain exceptions on connect
            self.error = e
            return
        with self.handoff:
            late = self.abandoned
            if not late:
                self.ws = ws
        if late:
            _exit(ws)

    def abort(self) -> None:
        """Wake an abandoned connect: stop pybit's socket thread and shut its socket down, so a
        handshake waiting for an answer ends (pybit may try once more: call until it is done)."""
        app = getattr(self.pending, "ws", None)  # websocket.WebSocketApp of the current attempt
        if app is None:
            return
        app.keep_running = False
        raw = getattr(getattr(app, "sock", None), "sock", None)  # the TCP socket, once connected
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError as e:  # already closed
                log.debug("bybit private stream abort: %s", type(e).__name__)

    def on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "auth":
            self.auth = bool(msg.get("success"))
            if not self.auth:
                log.error("bybit private stream: authentication refused: %s", mask_secrets(str(msg.get("ret_msg", ""))))
        elif op == "subscribe":
            self.subscribed = bool(msg.get("success"))
        elif "topic" in msg:
            with self._lock:
                self._queue.append(msg)


def _exit(ws: _EndpointWebSocket) -> None:
    try:
        ws.exit()
    except Exception as e:  # noqa: BLE001 - a socket already gone
        log.debug("bybit private stream close: %s", type(e).__name__)


def _abort_until_done(conn: _Conn, worker: threading.Thread) -> None:
    while worker.is_alive():
        conn.abort()
        worker.join(0.05)


class BybitPrivateStream:
    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        reconnect_s: float = 5.0,
        auth_wait_s: float = 2.0,
        connect_timeout_s: float = 10.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.url = url
        self._key, self._secret = api_key, api_secret
        self.reconnect_s = reconnect_s
        self.auth_wait_s = auth_wait_s
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.failures = 0  # consecutive unanswered handshakes / refused or unanswered auths
        self.last_error: str | None = None  # why the latest attempt failed (None once healthy)
        self._worker: threading.Thread | None = None  # the latest connect
        self._conn: _Conn | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._last_attempt = -1e9
        self.connects = 0
        self.down_since: float | None = time.monotonic()  # not connected yet: REST covers

    def healthy(self) -> bool:
        c = self._conn
        ok = c is not None and c.ws is not None and c.ws.is_connected() and bool(c.auth) and c.subscribed
        if ok:
            self.failures, self.last_error = 0, None
        if not ok and self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("bybit private stream %s is down: REST polling until it is back", self.url)
        return ok

    def retry_in(self) -> float:
        """Seconds between attempts: ``reconnect_s``, doubled per consecutive failure (capped)."""
        if not self.failures:
            return self.reconnect_s
        return min(self.reconnect_s * 2 ** min(self.failures - 1, 30), max(self.max_backoff_s, self.reconnect_s))

    def _failed(self, why: str) -> bool:
        self.failures += 1
        self.last_error = why
        log.error(
            "bybit private stream %s: %s (%d in a row); REST polling, next attempt in %g s",
            self.url,
            why,
            self.failures,
            self.retry_in(),
        )
        return False

    def ensure(self) -> bool:
        """Healthy, or (re)connect when the last attempt is ``retry_in()`` old. True if healthy.
        Never blocks longer than ``connect_timeout_s`` plus ``auth_wait_s`` (plus a close):
        pybit's connect runs in a thread (see the module doc), and pybit's own ``subscribe``
        would wait forever for a socket that closed, so we subscribe ourselves."""
        if self.healthy():
            return True
        now = time.monotonic()
        if now - self._last_attempt < self.retry_in():
            return False
        if self._worker is not None and self._worker.is_alive():
            return False  # an abandoned connect is still being aborted: no second one beside it
        self._last_attempt = now
        self.close()
        conn = _Conn(self._queue, self._lock)
        kwargs = dict(
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
        # connects and sends the auth (pybit); every decoded message goes to conn.on_message
        worker = threading.Thread(target=conn.open, kwargs=kwargs, name="bybit-private-connect", daemon=True)
        self._worker = worker
        worker.start()
        worker.join(self.connect_timeout_s)
        with conn.handoff:
            if conn.ws is None and conn.error is None:
                conn.abandoned = True
        if conn.abandoned:
            threading.Thread(
                target=_abort_until_done, args=(conn, worker), name="bybit-private-abort", daemon=True
            ).start()
            return self._failed(f"no connection within {self.connect_timeout_s:g} s (opening handshake unanswered)")
        if conn.ws is None:  # pybit raised: stay on REST
            log.warning(
                "bybit private stream %s: connect failed (%s); REST polling", self.url, type(conn.error).__name__
            )
            self.last_error = f"connect failed ({type(conn.error).__name__})"
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
            if conn.auth is None:
                return self._failed(f"no answer to the auth within {self.auth_wait_s:g} s")
            return self._failed("authentication refused")
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
            _exit(conn.ws)
