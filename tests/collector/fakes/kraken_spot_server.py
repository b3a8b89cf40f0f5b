"""A local fake Kraken spot websocket (v1 protocol) replaying the REAL book-10 clip.

On ``subscribe`` (``{"event":"subscribe","pair":[...],"subscription":{"name":"book","depth":10}}``)
it sends ``subscriptionStatus``, then the clip's snapshot, then its updates. The exchange book
is kept as a plain dict (independent of the collector's code: levels as strings, 0 deletes,
truncated to depth), so a re-subscription gets a FRESH snapshot of the book as of the last
update played. ``corrupt``: indexes of updates whose first level's volume is altered on the
wire (the exchange book keeps the true value), so the client's checksum fails there.
"""

from __future__ import annotations

import asyncio
import copy
import json

from aiohttp import WSMsgType, web


class FakeKrakenSpot:
    def __init__(self, init: list, updates: list[list], *, corrupt: set[int] = frozenset(), delay_s: float = 0.001):
        self.init, self.updates = init, updates
        self.chan, self.name, self.pair = init[0], init[-2], init[-1]
        self.depth = int(self.name.split("-")[1])
        self.corrupt = set(corrupt)
        self.delay_s = delay_s
        self.asks: dict[str, str] = {}
        self.bids: dict[str, str] = {}
        self.subscribes = 0
        self.unsubscribes = 0
        self.played = 0
        self.done = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.ws_url = ""

    def _apply(self, side: dict[str, str], levels: list, best_high: bool) -> None:
        for lv in levels:
            if float(lv[1]) == 0.0:
                side.pop(lv[0], None)
            else:
                side[lv[0]] = lv[1]
        keep = sorted(side, key=float, reverse=best_high)[: self.depth]
        for p in list(side):
            if p not in keep:
                del side[p]

    def _snapshot(self) -> list:
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))
        return [
            self.chan,
            {
                "as": [[p, v, "1685349999.000000"] for p, v in asks],
                "bs": [[p, v, "1685349999.000000"] for p, v in bids],
            },
            self.name,
            self.pair,
        ]

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"event": "systemStatus", "status": "online", "version": "1.9.0"}))
        player: asyncio.Task | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                if req.get("event") == "unsubscribe":
                    self.unsubscribes += 1
                    if player is not None:
                        player.cancel()
                    await ws.send_str(
                        json.dumps({"event": "subscriptionStatus", "status": "unsubscribed", "pair": self.pair})
                    )
                elif req.get("event") == "subscribe":
                    self.subscribes += 1
                    await ws.send_str(
                        json.dumps(
                            {
                                "event": "subscriptionStatus",
                                "status": "subscribed",
                                "pair": self.pair,
                                "channelName": self.name,
                            }
                        )
                    )
                    if self.subscribes == 1:
                        self.asks = {p: v for p, v, *_ in self.init[1]["as"]}
                        self.bids = {p: v for p, v, *_ in self.init[1]["bs"]}
                        await ws.send_str(json.dumps(self.init))
                    else:
                        await ws.send_str(json.dumps(self._snapshot()))  # fresh book as of now
                    player = asyncio.create_task(self._play(ws))
        finally:
            if player is not None:
                player.cancel()
        return ws

    async def _play(self, ws: web.WebSocketResponse) -> None:
        while self.played < len(self.updates):
            i = self.played
            u = self.updates[i]
            for x in u[1:-2]:
                self._apply(self.asks, x.get("a", []), False)
                self._apply(self.bids, x.get("b", []), True)
            self.played += 1
            wire = u
            if i in self.corrupt:
                wire = copy.deepcopy(u)
                key = "a" if "a" in wire[1] else "b"
                p, v, *rest = wire[1][key][0]
                wire[1][key][0] = [p, f"{float(v) + 0.5:.8f}", *rest]
            await ws.send_str(json.dumps(wire))
            await asyncio.sleep(self.delay_s)
        self.done.set()

    async def start(self) -> FakeKrakenSpot:
        app = web.Application()
        app.router.add_get("/", self._ws)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.ws_url = f"ws://{host}:{port}/"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKrakenSpot:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeKrakenSpotV2(FakeKrakenSpot):
    """The same exchange speaking websocket v2 (``BTC/USD``): the ``instrument`` channel gives
    the precision, book messages carry JSON-number prices and a checksum (snapshots too),
    computed here from the exchange's own dict book, written independently of the collector:
    price with ``PRICE_DP`` and qty with ``QTY_DP`` decimals, '.' removed, leading zeros off."""

    PAIR, PRICE_DP, QTY_DP = "BTC/USD", 1, 8

    def _crc(self) -> int:
        import zlib
        from decimal import Decimal

        def f(x: str, dp: int) -> str:
            return format(Decimal(x), f".{dp}f").replace(".", "").lstrip("0")

        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:10]
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:10]
        s = "".join(f(p, self.PRICE_DP) + f(q, self.QTY_DP) for p, q in asks + bids)
        return zlib.crc32(s.encode())

    def _msg(self, kind: str, bids: list, asks: list) -> str:
        return json.dumps(
            {
                "channel": "book",
                "type": kind,
                "data": [
                    {
                        "symbol": self.PAIR,
                        "bids": [{"price": float(p), "qty": float(q)} for p, q in bids],
                        "asks": [{"price": float(p), "qty": float(q)} for p, q in asks],
                        "checksum": self._crc(),
                        "timestamp": "2023-05-29T17:58:55.000000Z",
                    }
                ],
            }
        )

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        player: asyncio.Task | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                ch = req.get("params", {}).get("channel")
                await ws.send_str(json.dumps({"method": req.get("method"), "success": True, "result": {"channel": ch}}))
                if ch == "instrument" and req["method"] == "subscribe":
                    await ws.send_str(
                        json.dumps(
                            {
                                "channel": "instrument",
                                "type": "snapshot",
                                "data": {
                                    "assets": [],
                                    "pairs": [
                                        {
                                            "symbol": self.PAIR,
                                            "price_precision": self.PRICE_DP,
                                            "qty_precision": self.QTY_DP,
                                            "status": "online",
                                        }
                                    ],
                                },
                            }
                        )
                    )
                elif ch == "book" and req["method"] == "unsubscribe":
                    self.unsubscribes += 1
                    if player is not None:
                        player.cancel()
                elif ch == "book":
                    self.subscribes += 1
                    if self.subscribes == 1:
                        self.asks = {p: v for p, v, *_ in self.init[1]["as"]}
                        self.bids = {p: v for p, v, *_ in self.init[1]["bs"]}
                    await ws.send_str(
                        self._msg(
                            "snapshot",
                            sorted(self.bids.items(), key=lambda kv: -float(kv[0])),
                            sorted(self.asks.items(), key=lambda kv: float(kv[0])),
                        )
                    )
                    player = asyncio.create_task(self._play(ws))
        finally:
            if player is not None:
                player.cancel()
        return ws

    async def _play(self, ws: web.WebSocketResponse) -> None:
        while self.played < len(self.updates):
            i = self.played
            u = self.updates[i]
            asks = [lv for x in u[1:-2] for lv in x.get("a", [])]
            bids = [lv for x in u[1:-2] for lv in x.get("b", [])]
            self._apply(self.asks, asks, False)
            self._apply(self.bids, bids, True)
            self.played += 1
            wire_asks = [(lv[0], lv[1]) for lv in asks]
            wire_bids = [(lv[0], lv[1]) for lv in bids]
            if i in self.corrupt:
                if wire_asks:
                    wire_asks[0] = (wire_asks[0][0], f"{float(wire_asks[0][1]) + 0.5:.8f}")
                else:
                    wire_bids[0] = (wire_bids[0][0], f"{float(wire_bids[0][1]) + 0.5:.8f}")
            await ws.send_str(self._msg("update", wire_bids, wire_asks))
            await asyncio.sleep(self.delay_s)
        self.done.set()
