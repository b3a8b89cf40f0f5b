"""What the fake exchange websockets share: a ``websockets`` server on 127.0.0.1 (random port)
running its own event loop in a background thread (the clients under test are thread based),
and Bybit v5's answer to an ``op`` (ping, auth, subscribe, unsubscribe).

Used by the public Bybit stream of the collector tests (``tests/collector/fakes/bybit_ws_server.py``)
and the private Bybit stream of the trader tests (``tests/trader/fakes/bybit_private_ws.py``).

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


class LoopbackWSServer:
    """Subclasses set ``PATH`` (the URL path clients are given), ``NAME`` (thread name and errors)
    and implement ``_handler(ws)``, one call per connection on the server's loop;
    ``_process_request`` may answer the opening handshake with an HTTP response instead."""

    PATH = "/"
    NAME = "fake websocket"
    OPEN_TIMEOUT: float | None = 10.0  # websockets' default: an unfinished opening handshake is dropped

    def __init__(self) -> None:
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    async def _handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return None  # None: go on with the websocket handshake

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request, open_timeout=self.OPEN_TIMEOUT
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}{self.PATH}"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> str:
        """Serve in a background thread; returns the URL once the server listens."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), name=self.NAME, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.NAME} did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def bybit_reply(op: str, *, success: bool = True, ret_msg: str = "", req_id: str | None = None) -> str:
    """Bybit v5's JSON answer to ``{"op": op, ...}`` (``req_id`` echoed when given)."""
    out: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": "fake", "op": op}
    if req_id is not None:
        out["req_id"] = req_id
    return json.dumps(out)
