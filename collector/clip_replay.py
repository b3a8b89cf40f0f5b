"""Replay raw websocket captures through the per-exchange book builders (the same code a live
feed would use), as BookSnapshot messages in receive order:

* the cryptofeed clips (``OKX.ws.*``, ``KRAKEN_FUTURES.ws.*``, ``BITMEX.ws.*``, ``BYBIT.ws.*``),
* Bybit's v5 archive format (``*.data.zip`` of ``orderbook.<depth>.<SYMBOL>`` lines, e.g. the
  ob500 fixture),
* recordings of the live Bybit feed (``depthpilot record --exchange bybit``: ``<ns> <v5 json>``
  lines, one or more rotated files, :mod:`collector.recording_set`), books and trades, through
  the same builder and the same emission rule (:func:`collector.exchanges.core.publishes`) as the
  live feed.

A snapshot is emitted after every message that changed a book, and once when a book turns
invalid (sequence gap, checksum failure: the builder waits for a fresh snapshot).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from collector.exchanges.bitmex import BitmexBookBuilder
from collector.exchanges.bybit import BybitBookBuilder, BybitV2BookBuilder
from collector.exchanges.core import BookBuilder, publishes
from collector.exchanges.cryptofeed_clips import iter_clip
from collector.exchanges.kraken import KrakenFuturesBookBuilder
from collector.exchanges.okx import OkxBookBuilder
from collector.recording_set import first_lines, in_receive_order, recorded_files
from depthpilot.messages import BookSnapshot, Trade

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


def is_clip(path: Path) -> bool:
    return path.name.split(".ws.", 1)[0] in CLIP_KINDS and ".ws." in path.name


def is_bybit_archive(path: Path) -> bool:
    return path.name.endswith(".data.zip")


TradesOf = Callable[[Mapping[str, Any], int], Iterable[Trade]]


class BuilderReplay:
    """Feed (ts_recv_ns, message) pairs to one builder per symbol; yield snapshots (and the
    trades ``trades_of(message, ts)`` finds in non-book messages)."""

    def __init__(
        self,
        messages: Callable[[], Iterator[tuple[int, Any]]],
        builder: type[BookBuilder],
        symbols_of: SymbolsOf,
        depth: int = 25,
        trades_of: TradesOf | None = None,
    ) -> None:
        self._messages = messages
        self._cls = builder
        self._symbols_of = symbols_of
        self._trades_of = trades_of
        self.depth = depth
        self.builders: dict[str, BookBuilder] = {}

    def __iter__(self) -> Iterator[BookSnapshot | Trade]:
        for ts, msg in self._messages():
            if not isinstance(msg, Mapping):
                continue
            syms = self._symbols_of(msg)
            if not syms and self._trades_of is not None:
                yield from self._trades_of(msg, ts)
            for sym in syms:
                b = self.builders.get(sym)
                if b is None:
                    b = self.builders[sym] = self._cls(sym)
                was_valid = b.valid
                res = b.process(msg)
                if publishes(res, was_valid):
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


# --------------------------------------------------------------------------- live Bybit recordings


def _bybit_first(body: str) -> bool:
    try:
        msg = json.loads(body)
    except ValueError:
        return False
    topic = msg.get("topic") if isinstance(msg, dict) else None
    return isinstance(topic, str) and topic.startswith(("orderbook.", "publicTrade.")) and "data" in msg


def looks_like_bybit_recording(path: Path) -> bool:
    """A file whose first line is ``<ns> {"topic":"orderbook.N.SYMBOL"|"publicTrade.SYMBOL",...}``."""
    if not path.is_file():
        return False
    first = first_lines(path)
    return bool(first) and _bybit_first(first[0][1])


def _bybit_trades(msg: Mapping[str, Any], ts: int) -> list[Trade]:
    from collector.bybit_ws import parse_public_trades

    if str(msg.get("topic", "")).startswith("publicTrade."):
        return parse_public_trades(msg, ts_recv=ts)
    return []


def bybit_recording_replay(paths: str | Path | Iterable[str | Path], depth: int = 25) -> BuilderReplay:
    """Books and trades of a live Bybit recording (one file, several rotated files or their
    directory), in receive order, exactly as the live feed emitted them."""
    files = recorded_files(paths)

    def messages() -> Iterator[tuple[int, Any]]:
        for ts, body in in_receive_order(files):
            try:
                yield ts, json.loads(body)
            except ValueError as exc:
                raise ValueError(f"{files[0].parent}: bad JSON line at receive time {ts}: {exc}") from None

    return BuilderReplay(messages, BybitBookBuilder, _bybit_topic("orderbook."), depth, trades_of=_bybit_trades)
