"""A local fake Bybit v5 PRIVATE websocket (``websockets`` on 127.0.0.1, random port), run by
:class:`tests.trader.fakes.bybit_v5.FakeBybit` (``FakeBybit(ws=True)``) which publishes its
order / execution / position changes here.

Auth like Bybit: ``{"op": "auth", "args": [api_key, expires_ms, signature]}`` with signature =
HMAC-SHA256(secret, "GET/realtime" + expires) and ``expires`` in the future; a refused auth is
answered ``success: false`` and the connection gets nothing. ``subscribe`` before auth is
refused. ``drop()`` aborts every connection; with ``refuse = True`` new connections are closed
at once (the stream is "down"). Pings are answered with Bybit's text pong.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve


class FakeBybitPrivateWS:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.refuse = False
        self.auths: list[bool] = []
        self.published: list[dict] = []
        self.url = ""
        self._conns: dict[ServerConnection, set[str]] = {}  # authed connection -> topics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # ----------------------------------------------------------------- protocol
    def _check(self, args: list[Any]) -> bool:
        try:
            key, expires, sig = str(args[0]), int(args[1]), str(args[2])
        except (IndexError, TypeError, ValueError):
            return False
        secret = self.keys.get(key)
        if secret is None or expires <= int(time.time() * 1000):
            return False
        want = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, sig)

    async def _handler(self, ws: ServerConnection) -> None:
        if self.refuse:
            await ws.close(1011, "fake: stream down")
            return
        authed = False
        try:
            async for raw in ws:
                msg = json.loads(raw)
                op, req_id = msg.get("op"), msg.get("req_id", "")
                if op == "ping":
                    await ws.send(
                        json.dumps(
                            {"success": True, "ret_msg": "pong", "conn_id": "fake", "req_id": req_id, "op": "ping"}
                        )
                    )
                elif op == "auth":
                    authed = self._check(msg.get("args") or [])
                    self.auths.append(authed)
                    await ws.send(
                        json.dumps(
                            {
                                "success": authed,
                                "ret_msg": "" if authed else "Request not authorized",
                                "op": "auth",
                                "conn_id": "fake",
                            }
                        )
                    )
                    if authed:
                        self._conns[ws] = set()
                elif op == "subscribe":
                    ok = authed
                    if ok:
                        self._conns[ws].update(msg.get("args") or [])
                    await ws.send(
                        json.dumps(
                            {
                                "success": ok,
                                "ret_msg": "" if ok else "Request not authorized",
                                "op": "subscribe",
                                "req_id": req_id,
                                "conn_id": "fake",
                            }
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

    # ----------------------------------------------------------------- lifecycle
    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/v5/private"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), name="fake-bybit-private-ws", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Bybit private websocket did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
