"""Replay raw websocket captures through the per-exchange book builders (the same code a live
feed would use), as BookSnapshot messages in receive order:

* the cryptofeed clips (``OKX.ws.*``, ``KRAKEN_FUTURES.ws.*``, ``BITMEX.ws.*``, ``BYBIT.ws.*``),
* Bybit's v5 archive format (``*.data.zip`` of ``orderbook.<depth>.<SYMBOL>`` lines, e.g. the
  ob500 fixture).

A snapshot is emitted after every message that changed a book, and once when a book turns
invalid (sequence gap, checksum failure: the builder waits for a fresh snapshot).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from collector.exchanges.bitmex import BitmexBookBuilder
from collector.exchanges.bybit import BybitBookBuilder, BybitV2BookBuilder
from collector.exchanges.core import ApplyResult, BookBuilder
from collector.exchanges.cryptofeed_clips import iter_clip
from collector.exchanges.kraken import KrakenFuturesBookBuilder
from collector.exchanges.okx import OkxBookBuilder
from depthpilot.messages import BookSnapshot

SymbolsOf = Callable[[Mapping[str, Any]], list[str]]


def _okx(msg: Mapping[str, Any]) -> list[str]:
    arg = msg.get("arg") or {}
    return [arg["instId"]] if "data" in msg and str(arg.get("channel", "")).startswith("books") else []


def _kraken(msg: Mapping[str, Any]) -> list[str]:
    return [msg["product_id"]] if msg.get("feed") in ("book", "book_snapshot") and "product_id" in msg else []


def _bitmex(msg: Mapping[str, Any]) -> list[str]:
    if msg.get("table") != "orderBookL2":
        return []
    return sorted({row["symbol"] for row in msg.get("data") or [] if "symbol" in row})


def _bybit_topic(prefix: str) -> SymbolsOf:
    def symbols(msg: Mapping[str, Any]) -> list[str]:
        topic = str(msg.get("topic", ""))
        return [topic.rsplit(".", 1)[1]] if topic.startswith(prefix) else []

    return symbols


CLIP_KINDS: dict[str, tuple[type[BookBuilder], SymbolsOf]] = {
    "OKX": (OkxBookBuilder, _okx),
    "KRAKEN_FUTURES": (KrakenFuturesBookBuilder, _kraken),
    "BITMEX": (BitmexBookBuilder, _bitmex),
    "BYBIT": (BybitV2BookBuilder, _bybit_topic("orderBookL2")),
}

_CHANGED = (ApplyResult.APPLIED, ApplyResult.SNAPSHOT)
_BROKE = (ApplyResult.GAP, ApplyResult.CHECKSUM_FAILED)


def is_clip(path: Path) -> bool:
    return path.name.split(".ws.", 1)[0] in CLIP_KINDS and ".ws." in path.name


def is_bybit_archive(path: Path) -> bool:
    return path.name.endswith(".data.zip")


class BuilderReplay:
    """Feed (ts_recv_ns, message) pairs to one builder per symbol; yield snapshots."""

    def __init__(
        self,
        messages: Callable[[], Iterator[tuple[int, Any]]],
        builder: type[BookBuilder],
        symbols_of: SymbolsOf,
        depth: int = 25,
    ) -> None:
        self._messages = messages
        self._cls = builder
        self._symbols_of = symbols_of
        self.depth = depth
        self.builders: dict[str, BookBuilder] = {}

    def __iter__(self) -> Iterator[BookSnapshot]:
        for ts, msg in self._messages():
            if not isinstance(msg, Mapping):
                continue
            for sym in self._symbols_of(msg):
                b = self.builders.get(sym)
                if b is None:
                    b = self.builders[sym] = self._cls(sym)
                was_valid = b.valid
                res = b.process(msg)
                if res in _CHANGED or (res in _BROKE and was_valid):
                    yield b.to_snapshot(self.depth, ts)


def clip_replay(path: str | Path, depth: int = 25) -> BuilderReplay:
    p = Path(path)
    kind = p.name.split(".ws.", 1)[0]
    if kind not in CLIP_KINDS:
        raise ValueError(f"{p.name}: not a known cryptofeed capture ({', '.join(CLIP_KINDS)})")
    cls, symbols_of = CLIP_KINDS[kind]
    return BuilderReplay(lambda: ((c.ts_recv_ns, c.msg) for c in iter_clip(p)), cls, symbols_of, depth)


def _bybit_archive_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".data")]
        if not names:
            raise ValueError(f"{path.name}: no .data member")
        for name in names:
            with zf.open(name) as fh:
                for line in fh:
                    if line.strip():
                        msg = json.loads(line)
                        yield int(msg.get("ts", 0)) * 1_000_000, msg


def bybit_archive_replay(path: str | Path, depth: int = 25) -> BuilderReplay:
    p = Path(path)
    return BuilderReplay(lambda: _bybit_archive_lines(p), BybitBookBuilder, _bybit_topic("orderbook."), depth)
