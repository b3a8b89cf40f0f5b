"""Binance websocket connections (pure routing + the connection loop), used by
:class:`collector.binance_ws.BinanceDiffSource`: which streams go on which connection
(spot: one; USD-M: depth on ``/public`` and trades on ``/market``; COIN-M: one), and the loop
that keeps one connection alive (ping/pong, 24 h rotation, back-off, give-up)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from collector.binance_rest import BinanceSourceError, _check_symbols, _spec

__all__ = ["ReconnectEvent", "StreamConnection", "connection_loop", "stream_connections"]

log = logging.getLogger("collector.binance_ws")


@dataclass(frozen=True)
class StreamConnection:
    """One websocket connection: its URL, streams, and whether it carries diff depth."""

    name: str
    url: str
    streams: tuple[str, ...]
    symbols: tuple[str, ...]
    carries_depth: bool


def stream_connections(
    market: str,
    symbols: Sequence[str],
    ws_url: str | None = None,
    *,
    depth_stream: str | None = None,
    trade_stream: str | None = None,
    trades: bool = True,
) -> list[StreamConnection]:
    """The websocket connections for ``symbols`` (pure; see the module doc for the routing)."""
    spec = _spec(market)
    syms = _check_symbols(symbols)
    base = (ws_url or spec.ws_url).rstrip("/")
    depth_ch = depth_stream or spec.depth_stream
    trade_ch = trade_stream or spec.trade_stream
    routes: dict[str, list[str]] = {}
    routes.setdefault(spec.depth_route, []).extend(f"{s.lower()}@{depth_ch}" for s in syms)
    if trades:
        routes.setdefault(spec.trade_route, []).extend(f"{s.lower()}@{trade_ch}" for s in syms)
    out = []
    for route, streams in routes.items():
        if len(streams) > spec.max_streams:
            raise BinanceSourceError(
                f"{len(streams)} streams on one {spec.exchange} connection; Binance allows {spec.max_streams} "
                f"(use fewer symbols per source)"
            )
        out.append(
            StreamConnection(
                name=f"{spec.exchange}{route or '/'}",
                url=f"{base}{route}/stream?streams=" + "/".join(streams),
                streams=tuple(streams),
                symbols=syms,
                carries_depth=route == spec.depth_route,
            )
        )
    return out


@dataclass(frozen=True)
class ReconnectEvent:
    exchange: str
    symbols: tuple[str, ...]
    connection: str
    reason: str
    delay_s: float
    ts_ns: int = field(default_factory=time.time_ns)


async def connection_loop(self: Any, session: aiohttp.ClientSession, conn: StreamConnection) -> None:
    """One websocket connection of a :class:`collector.binance_ws.BinanceDiffSource` (``self``):
    connect, hand every frame to its queue, rotate before 24 h, and on loss report ``down`` and
    reconnect with jittered exponential back-off (a fatal ``error`` after too many failures)."""
    queue = self._queue
    assert queue is not None
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
        reason = ""
        delivered = False
        rotate = False
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    conn.url,
                    autoping=True,
                    heartbeat=self.heartbeat_s,
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                ),
                self.connect_timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = f"connect failed: {type(exc).__name__}: {exc}"
        else:
            self.connects += 1
            deadline = loop.time() + self.max_connection_age_s
            try:
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        reason, rotate = "connection age limit (Binance disconnects at 24 h)", True
                        break
                    try:
                        msg = await ws.receive(timeout=remaining)
                    except TimeoutError:
                        continue  # the deadline check above rotates
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        data = msg.data
                        delivered = True
                        if data[:11] != b'{"stream":"' and b"serverShutdown" in data:
                            reason, rotate = "serverShutdown event", True
                            break
                        queue.put_nowait(("msg", data, time.time_ns()))
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        reason = f"websocket error: {ws.exception()!r}"
                        break
                    else:  # CLOSE / CLOSING / CLOSED
                        reason = f"closed by server (code {ws.close_code})"
                        break
            finally:
                await ws.close()
        # lost: tell stream() (books invalidated), then reconnect with back-off
        if delivered or rotate:
            failures = 0
        failures += 0 if rotate else 1
        if self.max_reconnect_attempts is not None and failures > self.max_reconnect_attempts:
            queue.put_nowait(
                ("error", BinanceSourceError(f"{conn.name}: {failures - 1} reconnect attempts failed; last: {reason}"))
            )
            return
        if rotate:
            self.rotations += 1
            delay = 0.0
        else:
            delay = min(self.reconnect_max_s, self.reconnect_initial_s * 2 ** max(0, failures - 1))
            delay *= 0.5 + random.random() / 2  # jitter: many collectors must not reconnect in lock-step
        self.reconnects += 1
        queue.put_nowait(("down", conn, reason))
        log.warning("%s: websocket lost (%s); reconnecting in %.2fs", conn.name, reason, delay)
        if self.on_reconnect is not None:
            self.on_reconnect(ReconnectEvent(self.exchange, conn.symbols, conn.name, reason, delay))
        if delay > 0:
            await asyncio.sleep(delay)
