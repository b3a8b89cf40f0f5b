"""A local fake Bybit v5 PRIVATE websocket (``websockets`` on 127.0.0.1, random port), run by
:class:`tests.trader.fakes.bybit_v5.FakeBybit` (``FakeBybit(ws=True)``) which publishes its
order / execution / position changes here.

Auth like Bybit: ``{"op": "auth", "args": [api_key, expires_ms, signature]}`` with signature =
HMAC-SHA256(secret, "GET/realtime" + expires) and ``expires`` in the future; a refused auth is
answered ``success: false`` and the connection gets nothing. ``subscribe`` before auth is
refused. With ``stall_handshake = True`` a new connection's opening handshake is never answered
(the TCP connection is accepted; a stalled peer: no open timeout on this server) until it is
set back to False. ``drop()`` aborts every connection; with ``refuse = True`` new connections are turned
away at the opening handshake (HTTP 503: the stream is "down"), so a client never sees one of
them open, however late it looks. Pings are answered with Bybit's text pong. The server thread
and Bybit's op answers are shared with the collector's public-stream fake (``tests/fake_ws.py``).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
import time
import uuid
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from tests.fake_ws import LoopbackWSServer, bybit_reply
from tests.trader.fakes.http_venue import signature_ok


class FakeBybitPrivateWS(LoopbackWSServer):
    PATH = "/v5/private"
    NAME = "fake-bybit-private-ws"
    OPEN_TIMEOUT = None  # a stalled handshake stays stalled (see stall_handshake)

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__()
        self.keys = keys
        self.refuse = False
        self.stall_handshake = False
        self.auths: list[bool] = []
        self.published: list[dict] = []
        self._conns: dict[ServerConnection, set[str]] = {}  # authed connection -> topics

    # ----------------------------------------------------------------- protocol
    def _check(self, args: list[Any]) -> bool:
        try:
            key, expires, sig = str(args[0]), int(args[1]), str(args[2])
        except (IndexError, TypeError, ValueError):
            return False
        secret = self.keys.get(key)
        if secret is None or expires <= int(time.time() * 1000):
            return False
        return signature_ok(secret, f"GET/realtime{expires}", sig)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:  # type: ignore[override]
        while self.stall_handshake:
            await asyncio.sleep(0.02)
        if self.refuse:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "fake: stream down\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        if self.refuse:  # refused after its handshake was accepted: closed at once
            await ws.close(1011, "fake: stream down")
            return
        authed = False
        try:
            async for raw in ws:
                msg = json.loads(raw)
                op, req_id = msg.get("op"), msg.get("req_id", "")
                if op == "ping":
                    await ws.send(bybit_reply("ping", ret_msg="pong", req_id=req_id))
                elif op == "auth":
                    authed = self._check(msg.get("args") or [])
                    self.auths.append(authed)
                    await ws.send(
                        bybit_reply("auth", success=authed, ret_msg="" if authed else "Request not authorized")
                    )
                    if authed:
                        self._conns[ws] = set()
                elif op == "subscribe":
                    ok = authed
                    if ok:
                        self._conns[ws].update(msg.get("args") or [])
                    await ws.send(
                        bybit_reply(
                            "subscribe", success=ok, ret_msg="" if ok else "Request not authorized", req_id=req_id
                        )
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            self._conns.pop(ws, None)

    async def _publish(self, msg: dict) -> None:
        data = json.dumps(msg)
        for ws, topics in list(self._conns.items()):
            if msg["topic"] in topics:
                try:
                    await ws.send(data)
                except websockets.ConnectionClosed:
                    self._conns.pop(ws, None)

    def publish(self, topic: str, rows: list[dict]) -> None:
        """Thread-safe: queue ``rows`` on ``topic`` to every subscribed, authenticated connection."""
        msg = {"id": uuid.uuid4().hex, "topic": topic, "creationTime": int(time.time() * 1000), "data": rows}
        self.published.append(msg)
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._publish(msg), self._loop)

    async def _drop(self) -> None:
        for ws in list(self._conns):  # a hard drop (no closing handshake), like a network failure
            ws.transport.abort()
            self._conns.pop(ws, None)

    def drop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(5)

    @property
    def connections(self) -> int:
        return len(self._conns)
