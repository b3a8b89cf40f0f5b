"""Kraken spot live ``book`` feed (websocket v1 or v2, aiohttp) and the replay of its
recordings; the book logic is :class:`collector.exchanges.kraken_spot.KrakenSpotBookBuilder`.

* v2 (default, ``wss://ws.kraken.com/v2``): subscribes ``instrument`` (for the pairs' price /
  qty precision the checksum needs) and ``book``; v1 (``wss://ws.kraken.com``): ``book`` only.
* Every book message is checked against its CRC32; on a mismatch the book is published
  invalid and that pair is re-subscribed (unsubscribe + subscribe), whose fresh snapshot makes
  it valid again. A lost connection ends :meth:`KrakenSpotSource.stream` with an error: the
  collector's supervisor reconnects with back-off.
* ``raw_sink(symbol, raw, ts_ns)`` gets every book message of a pair (and the instrument
  message, for v2) as received: :mod:`collector.recorder` writes them as ``<ts> <json>``
  lines, which :func:`kraken_recording_replay` plays back through the same builder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from collector.exchanges.core import ApplyResult, BookMessageError
from collector.exchanges.kraken_spot import KrakenSpotBookBuilder
from collector.recording_set import first_lines, in_receive_order, recorded_files
from depthpilot.messages import BookSnapshot

__all__ = ["WS_URLS", "KrakenSpotSource", "kraken_recording_replay", "looks_like_kraken_recording"]

log = logging.getLogger(__name__)

WS_URLS = {1: "wss://ws.kraken.com", 2: "wss://ws.kraken.com/v2"}


def _symbol_of(msg: Any) -> str | None:
    """The pair a book message is about (v1 array or v2 object), else None."""
    if isinstance(msg, list) and len(msg) >= 4 and isinstance(msg[-2], str) and msg[-2].startswith("book"):
        return msg[-1]
    if isinstance(msg, dict) and msg.get("channel") == "book" and msg.get("data"):
        return msg["data"][0].get("symbol")
    return None


def _snapshot(b: KrakenSpotBookBuilder, depth: int, ts: int) -> BookSnapshot:
    return b.to_snapshot(depth, ts_recv=ts)


class KrakenSpotSource:
    def __init__(
        self,
        symbols: Sequence[str],
        *,
        depth: int = 10,
        version: int = 2,
        ws_url: str | None = None,
        emit_depth: int | None = None,
        raw_sink: Callable[[str, bytes, int], Any] | None = None,
        connect_timeout_s: float = 10.0,
        heartbeat_s: float = 30.0,
    ) -> None:
        if version not in (1, 2):
            raise ValueError(f"kraken spot websocket version must be 1 or 2, got {version}")
        self.symbols = list(symbols)
        self.version = version
        self.depth = depth
        self.emit_depth = emit_depth or depth
        self.ws_url = ws_url or WS_URLS[version]
        self.raw_sink = raw_sink
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.builders = {s: KrakenSpotBookBuilder(s, depth=depth) for s in self.symbols}
        self.resubscribes = 0
        self.bad_messages = 0
        self._session: aiohttp.ClientSession | None = None

    # ----------------------------------------------------------------- protocol
    def _sub(self, symbols: Sequence[str], on: bool = True) -> dict:
        if self.version == 1:
            return {
                "event": "subscribe" if on else "unsubscribe",
                "pair": list(symbols),
                "subscription": {"name": "book", "depth": self.depth},
            }
        return {
            "method": "subscribe" if on else "unsubscribe",
            "params": {"channel": "book", "symbol": list(symbols), "depth": self.depth, "snapshot": True},
        }

    async def stream(self) -> AsyncIterator[BookSnapshot]:
        self._session = aiohttp.ClientSession()
        try:
            ws = await self._session.ws_connect(
                self.ws_url, heartbeat=self.heartbeat_s, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
            )
            if self.version == 2:
                await ws.send_json({"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}})
            await ws.send_json(self._sub(self.symbols))
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    if frame.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE):
                        break
                    continue
                ts = time.time_ns()
                for out in self._on_text(frame.data, ts):
                    if isinstance(out, dict):
                        await ws.send_json(out)
                    else:
                        yield out
            raise ConnectionError(f"kraken spot websocket closed (code {ws.close_code})")
        finally:
            await self.close()

    def _on_text(self, raw: str, ts: int) -> list[Any]:
        try:
            msg = json.loads(raw)
        except ValueError:
            self.bad_messages += 1
            log.warning("kraken spot: unparseable message: %.200r", raw)
            return []
        if isinstance(msg, dict) and msg.get("channel") == "instrument":
            for builder in self.builders.values():
                builder.process(msg)
            if self.raw_sink is not None:
                for s in self.symbols:
                    self.raw_sink(s, raw.encode(), ts)
            return []
        sym = _symbol_of(msg)
        b = self.builders.get(sym) if sym else None
        if sym is None or b is None:
            if isinstance(msg, dict) and (msg.get("error") or msg.get("errorMessage")):
                log.warning("kraken spot: %s", msg.get("error") or msg.get("errorMessage"))
            return []
        if self.raw_sink is not None:
            self.raw_sink(sym, raw.encode(), ts)
        was_valid = b.valid
        try:
            res = b.process(msg)
        except BookMessageError as exc:
            self.bad_messages += 1
            log.warning("%s", exc)
            return []
        if res in (ApplyResult.APPLIED, ApplyResult.SNAPSHOT):
            return [_snapshot(b, self.emit_depth, ts)]
        if res is ApplyResult.CHECKSUM_FAILED:
            self.resubscribes += 1
            log.warning("kraken spot %s: %s; re-subscribing", sym, b.reason)
            out: list[Any] = [self._sub([sym], on=False), self._sub([sym])]
            if was_valid:
                out.insert(0, _snapshot(b, self.emit_depth, ts))
            return out
        return []

    async def close(self) -> None:
        s, self._session = self._session, None
        if s is not None:
            await s.close()


# --------------------------------------------------------------------------- recordings


def looks_like_kraken_recording(p: Path) -> bool:
    """A recording whose first line is ``<digits> <Kraken spot book/instrument message>``."""
    if not p.is_file():
        return False
    for _ts, body in first_lines(p):
        try:
            msg = json.loads(body)
        except ValueError:
            return False
        return _symbol_of(msg) is not None or (isinstance(msg, dict) and msg.get("channel") == "instrument")
    return False


def kraken_recording_replay(paths: str | Path | Iterable[str | Path], depth: int = 10) -> Iterator[BookSnapshot]:
    """Book snapshots of a Kraken spot recording (one file, or several rotated files / their
    directory as one stream in receive order), through the live feed's builder; the
    subscribed depth comes from the data (v1 channel name ``book-<n>``; v2: the deepest
    snapshot seen, at least 10)."""
    files = recorded_files(paths)  # here: a missing file fails at the call, not at the first next()
    return _kraken_replay(files, depth)


def _kraken_replay(files: list[Path], depth: int) -> Iterator[BookSnapshot]:
    builders: dict[str, KrakenSpotBookBuilder] = {}
    instrument = None
    for ts, body in in_receive_order(files):
        msg = json.loads(body)
        if isinstance(msg, dict) and msg.get("channel") == "instrument":
            instrument = msg
            for builder in builders.values():
                builder.process(msg)
            continue
        sym = _symbol_of(msg)
        if sym is None:
            continue
        b = builders.get(sym)
        if b is None:
            d = int(msg[-2].split("-")[1]) if isinstance(msg, list) else 10
            if isinstance(msg, dict) and msg.get("type") == "snapshot":
                n = max(len(msg["data"][0].get("bids", ())), len(msg["data"][0].get("asks", ())))
                d = next((x for x in (10, 25, 100, 500, 1000) if x >= n), 1000)
            b = builders[sym] = KrakenSpotBookBuilder(sym, depth=d)
            if instrument is not None:
                b.process(instrument)
        was_valid = b.valid
        res = b.process(msg)
        if res in (ApplyResult.APPLIED, ApplyResult.SNAPSHOT) or (res.needs_resync and was_valid):
            yield _snapshot(b, min(depth, b.depth), ts)
