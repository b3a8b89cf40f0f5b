"""A local fake Binance (aiohttp on 127.0.0.1, random port) replaying a REAL raw recording.

The recording (hftbacktest format, ``<ts> <combined-stream json>`` lines plus one REST depth
snapshot line) is played by one "exchange engine" task, shared by all connections like a
real exchange's clock: it walks the recorded depth diffs and trades in order, pausing
``delay_s`` after every ``burst`` diffs, and

* keeps the exchange-side book: the recorded REST snapshot, then every diff whose final id
  ``u`` is past the snapshot's ``lastUpdateId`` (levels as the exchange's strings, absolute
  quantities, 0 = delete). A plain dict, independent of the collector's book code;
* broadcasts every message to each websocket that subscribed to its stream
  (``/stream?streams=a/b``). Routing like Binance: the root path delivers everything, USD-M's
  ``/public`` only diff depth/bookTicker, ``/market`` only the other streams;
* ``drop_u``: diffs with these final ids are not delivered (lost on the wire; the exchange
  book still has them) - a correct client sees a gap;
* ``close_after``: after delivering that many diffs, close every depth connection once (the
  engine keeps going, so the diffs sent while the client is away are missed).

A raw-stream connection (``/ws``, ``/ws/<anything>``: what ccxt.pro uses) starts with no stream
and takes Binance's ``{"method":"SUBSCRIBE","params":[...],"id":n}`` (answered
``{"result":null,"id":n}``); it gets each event's ``data`` object alone, as Binance's raw
streams send it. ``exchange_info``: the ``/api/v3/exchangeInfo`` answer (ccxt's load_markets).

REST ``GET /api/v3/depth`` and ``/fapi/v1/depth`` answer the exchange book as of the last
diff the engine has played (top ``limit`` levels, lastUpdateId = that diff's ``u``; before
any diff past the recorded snapshot, the recorded snapshot itself), with ``E``/``T`` on the
futures path. ``fail(path, "429"|"418"|"500"|"hang", times)`` makes the next requests
misbehave. Every request and websocket connection is recorded.

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

DEPTH_PATHS = ("/api/v3/depth", "/fapi/v1/depth", "/dapi/v1/depth")


@dataclass
class Recording:
    """A raw recording split into the REST snapshot and the stream events (in file order)."""

    snapshot: dict
    events: list[tuple[str, bytes, dict]]  # (stream name, raw combined-stream json, data)

    @property
    def depth_events(self) -> list[dict]:
        return [d for s, _, d in self.events if _is_depth(s)]


def _is_depth(stream: str) -> bool:
    ch = stream.partition("@")[2]
    return ch == "depth" or ch.startswith("depth@")


def load_recording(
    path: str | Path, *, max_depth_events: int | None = None, channels: tuple[str, ...] = ("depth", "trade", "aggTrade")
) -> Recording:
    """Read a raw ``.gz`` recording (the file holding the REST snapshot line)."""
    snapshot = None
    events: list[tuple[str, bytes, dict]] = []
    n_depth = 0
    with gzip.open(path, "rb") as fh:
        for line in fh:
            _, _, body = line.rstrip(b"\n").partition(b" ")
            if not body:
                continue
            obj = orjson.loads(body)
            if "lastUpdateId" in obj:
                snapshot = obj
                continue
            stream = obj["stream"]
            ch = stream.partition("@")[2]
            if not (_is_depth(stream) or ch in channels):
                continue
            if _is_depth(stream):
                if max_depth_events is not None and n_depth >= max_depth_events:
                    break
                n_depth += 1
            events.append((stream, body, obj["data"]))
    if snapshot is None:
        raise ValueError(f"{path}: no REST snapshot line")
    return Recording(snapshot, events)


@dataclass
class WsConn:
    path: str
    streams: frozenset[str] | set[str]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    opened: float = field(default_factory=time.monotonic)
    closed_by_server: bool = False
    raw: bool = False  # /ws: SUBSCRIBE-driven, events sent without the combined-stream wrapper


class FakeBinance:
    def __init__(
        self,
        rec: Recording,
        *,
        futures: bool = False,
        delay_s: float = 0.002,
        burst: int = 4,
        drop_u: set[int] | None = None,
        close_after: int | None = None,
        exchange_info: dict | None = None,
    ) -> None:
        self.rec = rec
        self.exchange_info = exchange_info
        self.burst = max(1, burst)
        self.futures = futures
        self.delay_s = delay_s
        self.drop_u = set(drop_u or ())
        self.close_after = close_after
        snap = rec.snapshot
        self.snapshot_id = int(snap["lastUpdateId"])
        self.bids: dict[str, str] = {p: q for p, q in snap["bids"]}
        self.asks: dict[str, str] = {p: q for p, q in snap["asks"]}
        self.last_u = self.snapshot_id
        self.last_E = int(snap.get("E", 0))
        self.last_T = int(snap.get("T", 0))
        self.played = 0  # depth diffs played by the engine
        self.final_u = max(int(d["u"]) for d in rec.depth_events)
        self.requests: list[tuple[str, dict[str, str], str]] = []  # (path, query, answer)
        self.ws_connections: list[WsConn] = []
        self.done = asyncio.Event()
        self._faults: dict[str, deque[str]] = {}
        self._closed_once = False
        self._engine: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.ws_url = ""

    # ----------------------------------------------------------------- control
    def fail(self, path: str, fault: str, times: int = 1) -> None:
        self._faults.setdefault(path, deque()).extend([fault] * times)

    def depth_requests(self) -> list[tuple[str, dict[str, str], str]]:
        return [r for r in self.requests if r[0] in DEPTH_PATHS]

    # ----------------------------------------------------------------- engine
    def _apply(self, d: dict) -> None:
        for side, book in (("b", self.bids), ("a", self.asks)):
            for p, q in d[side]:
                if float(q) == 0.0:
                    book.pop(p, None)
                else:
                    book[p] = q

    async def _run_engine(self) -> None:
        n_depth = 0
        for stream, body, data in self.rec.events:
            depth = _is_depth(stream)
            if depth:
                u = int(data["u"])
                if u > self.snapshot_id:
                    self._apply(data)
                    self.last_u = u
                    self.last_E, self.last_T = int(data.get("E", 0)), int(data.get("T", 0))
                self.played += 1
                if u in self.drop_u:
                    n_depth += 1
                    if n_depth % self.burst == 0:
                        await asyncio.sleep(self.delay_s)
                    continue
            for c in list(self.ws_connections):
                if not c.closed_by_server and stream in c.streams and self._routed(c.path, depth):
                    c.queue.put_nowait(json.dumps(data).encode() if c.raw else body)
            if depth:
                n_depth += 1
                if self.close_after is not None and n_depth == self.close_after and not self._closed_once:
                    self._closed_once = True
                    for c in self.ws_connections:
                        if any(_is_depth(s) for s in c.streams) and not c.closed_by_server:
                            c.closed_by_server = True
                            c.queue.put_nowait(None)
                if n_depth % self.burst == 0:
                    await asyncio.sleep(self.delay_s)
        self.done.set()

    @staticmethod
    def _routed(path: str, depth: bool) -> bool:
        if path.startswith("/public/"):
            return depth
        if path.startswith("/market/"):
            return not depth
        return True

    # ----------------------------------------------------------------- handlers
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        raw = request.path == "/ws" or request.path.startswith("/ws/")
        streams: frozenset[str] | set[str] = (
            set() if raw else frozenset(s for s in request.query.get("streams", "").split("/") if s)
        )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = WsConn(request.path, streams, raw=raw)
        self.ws_connections.append(conn)
        if self._engine is None:
            self._engine = asyncio.create_task(self._run_engine())

        async def sender() -> None:
            while True:
                body = await conn.queue.get()
                if body is None:
                    await ws.close(code=1001, message=b"fake server closes")
                    return
                await ws.send_str(body.decode())  # Binance sends text frames

        task = asyncio.create_task(sender())
        try:
            async for msg in ws:  # pings are answered by aiohttp (autoping)
                if msg.type == WSMsgType.ERROR:
                    break
                if raw and msg.type == WSMsgType.TEXT:
                    req = json.loads(msg.data)
                    if req.get("method") == "SUBSCRIBE":
                        conn.streams.update(req.get("params") or ())  # type: ignore[union-attr]
                    elif req.get("method") == "UNSUBSCRIBE":
                        conn.streams.difference_update(req.get("params") or ())  # type: ignore[union-attr]
                    await ws.send_str(json.dumps({"result": None, "id": req.get("id")}))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            conn.closed_by_server = True
        return ws

    def book_json(self, limit: int) -> bytes:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        out: dict[str, Any] = {"lastUpdateId": self.last_u}
        if self.futures:
            out["E"] = self.last_E
            out["T"] = self.last_T
        out["bids"] = [list(x) for x in bids]
        out["asks"] = [list(x) for x in asks]
        return json.dumps(out).encode()

    async def _depth(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        faults = self._faults.get(request.path)
        if faults:
            fault = faults.popleft()
            if fault != "ok":  # "ok": answered normally (recorded below)
                self.requests.append((request.path, q, fault))
            if fault in ("429", "418"):
                return web.json_response(
                    {"code": -1003, "msg": "Too many requests; fake server."},
                    status=int(fault),
                    headers={"Retry-After": "0"},
                )
            if fault == "500":
                return web.Response(status=500, text="Internal Server Error")
            if fault == "stale":  # a lagging REST node: the recording's first (now old) snapshot
                return web.Response(body=json.dumps(self.rec.snapshot).encode(), content_type="application/json")
            if fault != "ok":
                await asyncio.sleep(30)  # "hang": longer than any client timeout
        if "symbol" not in q:
            self.requests.append((request.path, q, "400"))
            return web.json_response({"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}, status=400)
        self.requests.append((request.path, q, "200"))
        limit = int(q.get("limit", "100"))
        return web.Response(body=self.book_json(limit), content_type="application/json")

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> FakeBinance:
        app = web.Application()
        for p in DEPTH_PATHS:
            app.router.add_get(p, self._depth)
        for p in ("/stream", "/public/stream", "/market/stream", "/ws", "/ws/{tail:.*}"):
            app.router.add_get(p, self._ws)
        if self.exchange_info is not None:
            info = self.exchange_info

            async def exchange_info(_r: web.Request) -> web.StreamResponse:
                return web.json_response(info)

            app.router.add_get("/api/v3/exchangeInfo", exchange_info)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._engine is not None:
            self._engine.cancel()
            await asyncio.gather(self._engine, return_exceptions=True)
        for c in self.ws_connections:
            c.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinance:  # noqa: PYI034
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeBinanceThread:
    """Runs a :class:`FakeBinance` on its own event loop in a background thread, for code
    under test that runs its own loop (the collector service)."""

    def __init__(self, srv: FakeBinance) -> None:
        import threading

        self.srv = srv
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-binance", daemon=True)

    def call(self, fn: Any, timeout: float = 10.0) -> Any:
        """Run ``fn()`` (sync) on the server's loop and return its result."""

        async def wrap() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def __enter__(self) -> FakeBinance:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.start(), self._loop).result(10)
        return self.srv

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.srv.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def record_live(
    rec: Recording, out_dir: Path, *, drop_u: set[int], delay_s: float, rotate_bytes: int, timeout_s: float
) -> tuple[list, Any]:
    """Run the live :class:`~collector.binance_ws.BinanceDiffSource` (spot, BTCUSDT, depth 20)
    against a :class:`FakeBinance` serving ``rec`` (dropping the depth events ``drop_u``),
    recording every raw message into ``out_dir`` with a rotating :class:`~collector.recorder.Recorder`,
    until the book reaches the fake's last update id. Returns (everything the source yielded, the source)."""
    from collector.binance_ws import BinanceDiffSource
    from collector.recorder import Recorder
    from depthpilot import messages as m

    async def main() -> tuple[list, Any]:
        async with FakeBinance(rec, drop_u=drop_u, delay_s=delay_s, burst=8) as srv:
            recorder = Recorder(out_dir, "binance", rotate_bytes=rotate_bytes)
            src = BinanceDiffSource(
                "spot",
                ["BTCUSDT"],
                depth=20,
                ws_url=srv.ws_url,
                rest_url=srv.base_url,
                depth_stream="depth@100ms",
                trade_stream="trade",
                backoff_initial_s=0.01,
                raw_sink=recorder.write,
            )
            out: list = []
            async with contextlib.aclosing(src.stream()) as it:
                async for x in it:
                    out.append(x)
                    if isinstance(x, m.BookSnapshot) and x.valid and x.seq == srv.final_u:
                        break
            recorder.close()
            return out, src

    return asyncio.run(asyncio.wait_for(main(), timeout_s))
