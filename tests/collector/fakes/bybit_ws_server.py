"""A local fake Bybit v5 public websocket (``websockets`` on 127.0.0.1, random port).

Runs its own event loop in a background thread (pybit's client is thread based). On
``subscribe`` it acknowledges like Bybit and replays recorded raw messages with the
``topic`` set to the subscribed one; ``skip_u`` drops the delta with that update id on
the FIRST replay only (a lost message), so a correct client detects the gap and
re-subscribes, and the second replay is complete. ``unsubscribe`` stops the replay.
A ``publicTrade.*`` subscription replays ``trades`` (raw v5 publicTrade messages, topic
set to the subscribed one) instead. Pings are answered with Bybit's text pong.
``close_after`` closes the FIRST connection after that many book messages (a dropped
socket: pybit reconnects and re-subscribes, and the replay starts again with a snapshot).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from typing import Any

import websockets
from websockets.asyncio.server import serve


class FakeBybitWS:
    def __init__(
        self,
        messages: list[dict],
        *,
        skip_u: int | None = None,
        delay_s: float = 0.001,
        trades: list[dict] | None = None,
        close_after: int | None = None,
    ) -> None:
        self.messages = messages
        self.close_after = close_after
        self.connections = 0
        self.trades = trades or []
        self.skip_u = skip_u
        self.delay_s = delay_s
        self.received: list[dict] = []
        self.replays = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # ----------------------------------------------------------------- protocol
    async def _replay(self, ws, topic: str, skip: int | None, close_after: int | None = None) -> None:
        sent = 0
        for m in self.trades if topic.startswith("publicTrade.") else self.messages:
            if skip is not None and m["type"] == "delta" and m["data"]["u"] == skip:
                continue
            if close_after is not None and sent >= close_after:
                await ws.close()
                return
            out = copy.deepcopy(m)
            out["topic"] = topic
            await ws.send(json.dumps(out))
            sent += 1
            await asyncio.sleep(self.delay_s)

    async def _handler(self, ws) -> None:
        tasks: dict[str, asyncio.Task] = {}
        self.connections += 1
        close_after = self.close_after if self.connections == 1 else None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.received.append(msg)
                op = msg.get("op")
                if op == "ping":
                    await ws.send(json.dumps({"success": True, "ret_msg": "pong", "conn_id": "fake", "op": "ping"}))
                elif op == "subscribe":
                    await ws.send(
                        json.dumps(
                            {
                                "success": True,
                                "ret_msg": "",
                                "conn_id": "fake",
                                "req_id": msg.get("req_id", ""),
                                "op": "subscribe",
                            }
                        )
                    )
                    for topic in msg["args"]:
                        if topic.startswith("publicTrade."):
                            tasks[topic] = asyncio.create_task(self._replay(ws, topic, None))
                            continue
                        skip = self.skip_u if self.replays == 0 else None
                        self.replays += 1
                        tasks[topic] = asyncio.create_task(self._replay(ws, topic, skip, close_after))
                elif op == "unsubscribe":
                    for topic in msg["args"]:
                        t = tasks.pop(topic, None)
                        if t is not None:
                            t.cancel()
                    await ws.send(
                        json.dumps(
                            {
                                "success": True,
                                "ret_msg": "",
                                "conn_id": "fake",
                                "req_id": msg.get("req_id", ""),
                                "op": "unsubscribe",
                            }
                        )
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            for t in tasks.values():
                t.cancel()

    # ----------------------------------------------------------------- lifecycle
    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/v5/public/linear"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), name="fake-bybit-ws", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Bybit websocket server did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "FakeBybitWS":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
