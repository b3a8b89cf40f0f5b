"""A local fake exchange REST server (aiohttp on 127.0.0.1, random port) for ccxt tests.

Serves fixed JSON payloads per path and can be told to misbehave the next N times a path
is requested: answer HTTP 429 (rate limit), 500 (server error) or hang (client timeout).
Every request is recorded (path, query, monotonic time) so tests can check what the real
client sent and how it backed off.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Fault = Literal["429", "500", "hang"]


@dataclass
class Request:
    path: str
    query: dict[str, str]
    t: float = field(default_factory=time.monotonic)
    answered: str = "200"


class FakeExchangeHTTP:
    def __init__(self, routes: dict[str, Any], *, hang_s: float = 5.0) -> None:
        self.routes = dict(routes)
        self.hang_s = hang_s
        self.requests: list[Request] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def fail(self, path: str, fault: Fault, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` get ``fault`` instead of the payload."""
        self._faults.setdefault(path, deque()).extend([fault] * times)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = Request(request.path, dict(request.query))
        self.requests.append(rec)
        faults = self._faults.get(request.path)
        if faults:
            fault = faults.popleft()
            rec.answered = fault
            if fault == "429":
                return web.json_response({"code": -1003, "msg": "Too many requests; fake server."}, status=429)
            if fault == "500":
                return web.Response(status=500, text="Internal Server Error")
            await asyncio.sleep(self.hang_s)  # "hang": longer than the client's timeout
        if request.path not in self.routes:
            rec.answered = "404"
            return web.json_response({"code": -1, "msg": f"no route {request.path}"}, status=404)
        return web.Response(text=json.dumps(self.routes[request.path]), content_type="application/json")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeExchangeHTTP":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
