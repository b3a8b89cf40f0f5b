"""A local fake exchange REST server (aiohttp on 127.0.0.1, random port) for ccxt tests.

Serves fixed JSON payloads per path, or the answer of a callable route (``query dict ->
payload``, e.g. :class:`BinanceAggTrades`), and can be told to misbehave the next N times a
path is requested: answer HTTP 429 (rate limit), 500 (server error) or hang (client
timeout). Every request is recorded (path, query, monotonic time, what was answered) so
tests can check what the real client sent and how it backed off.

:class:`BinanceAggTrades` plays Binance's ``GET /api/v3/aggTrades`` (what ccxt's binance
``fetch_trades`` calls for spot) over REAL recorded trades (``<sym>@trade`` events of a
raw recording), aggregated the way Binance does (consecutive fills of one taker at one
price and time -> one aggregate trade). The exchange "clock" advances ``per_request``
trades with every request, like a live market: a request sees only the trades played so
far.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
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
        route = self.routes[request.path]
        payload = route(rec.query) if callable(route) else route
        return web.Response(text=json.dumps(payload), content_type="application/json")

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


def aggregate_trades(trades: list[dict], first_agg_id: int = 0) -> list[dict]:
    """Binance ``@trade`` events -> ``/api/v3/aggTrades`` rows: consecutive trades with the
    same time, price and maker flag are one aggregate (quantities summed exactly as decimals).
    Fields as Binance: a (aggregate id), p, q, f/l (first/last trade id), T, m, M."""
    out: list[dict] = []
    for t in trades:
        last = out[-1] if out else None
        if last is not None and last["T"] == t["T"] and last["p"] == t["p"] and last["m"] == t["m"]:
            last["q"] = format(Decimal(last["q"]) + Decimal(t["q"]), "f")
            last["l"] = t["t"]
            continue
        out.append(
            {
                "a": first_agg_id + len(out),
                "p": t["p"],
                "q": t["q"],
                "f": t["t"],
                "l": t["t"],
                "T": t["T"],
                "m": t["m"],
                "M": t.get("M", True),
            }
        )
    return out


class BinanceAggTrades:
    """Callable route for ``/api/v3/aggTrades``: Binance's rules (``fromId``; ``startTime``/
    ``endTime`` inclusive, oldest first; neither: the most recent; ``limit`` default 500,
    max 1000) over the aggregates played so far. ``start`` aggregates are played before the
    first request, then ``per_request`` more before answering each request."""

    def __init__(self, agg: list[dict], *, start: int = 0, per_request: int = 50) -> None:
        self.agg = agg
        self.played = min(start, len(agg))
        self.per_request = per_request
        self.pages: list[list[int]] = []  # aggregate ids answered per request

    def __call__(self, q: dict[str, str]) -> Any:
        self.played = min(len(self.agg), self.played + self.per_request)
        visible = self.agg[: self.played]
        limit = min(int(q.get("limit", "500")), 1000)
        if "fromId" in q:
            rows = [a for a in visible if a["a"] >= int(q["fromId"])][:limit]
        elif "startTime" in q or "endTime" in q:
            lo = int(q.get("startTime", 0))
            hi = int(q.get("endTime", 2**63))
            rows = [a for a in visible if lo <= a["T"] <= hi][:limit]
        else:
            rows = visible[-limit:]
        self.pages.append([a["a"] for a in rows])
        return rows
