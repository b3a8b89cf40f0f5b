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
The server thread and Bybit's op answers are shared with the private-stream fake
(``tests/fake_ws.py``).
"""

from __future__ import annotations

import asyncio
import copy
import json

import websockets

from tests.fake_ws import LoopbackWSServer, bybit_reply


class FakeBybitWS(LoopbackWSServer):
    PATH = "/v5/public/linear"
    NAME = "fake-bybit-ws"

    def __init__(
        self,
        messages: list[dict],
        *,
        skip_u: int | None = None,
        delay_s: float = 0.001,
        trades: list[dict] | None = None,
        close_after: int | None = None,
    ) -> None:
        super().__init__()
        self.messages = messages
        self.close_after = close_after
        self.connections = 0
        self.trades = trades or []
        self.skip_u = skip_u
        self.delay_s = delay_s
        self.received: list[dict] = []
        self.replays = 0

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
                    await ws.send(bybit_reply("ping", ret_msg="pong"))
                elif op == "subscribe":
                    await ws.send(bybit_reply("subscribe", req_id=msg.get("req_id", "")))
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
                    await ws.send(bybit_reply("unsubscribe", req_id=msg.get("req_id", "")))
        except websockets.ConnectionClosed:
            pass
        finally:
            for t in tasks.values():
                t.cancel()
