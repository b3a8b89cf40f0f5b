"""Reading raw Binance recordings: which files form one stream, in what order (pure file
reading, no network).

* A recording file is gzip (detected by its magic bytes, not its name) or plain text, one
  ``<local_receive_ts> <json>`` message per line (:func:`collector.exchanges.binance_parse.parse_line`).
* Each file is identified by its *content* (:func:`describe_file`): the market and symbol of
  its first depth (or trade) stream message, and its first receive time. File names and
  directory names are never read for meaning.
* Several files are ONE stream when they carry the same (market, symbol); they are played in
  time order (first receive time), so a file continuing the previous day without its own REST
  snapshot simply continues its predecessor's book (:func:`plan_streams`).
* REST snapshot lines name no symbol: they belong to the stream's depth symbol (an error when
  a file carries depth for several symbols and the snapshot cannot be attributed).
* Bad input raises :class:`BinanceFormatError` with ONE line naming the file (and the line):
  an empty file, a file that is neither gzip nor recording lines, a corrupt gzip, a
  garbage line. A gzip cut short (a recorder killed mid-file: :mod:`collector.recorder`) is read
  up to its last complete line, with a warning naming the file.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from collector.exchanges.binance_parse import (
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    BinanceFormatError,
    Record,
    market_of_diff,
    market_of_trade,
    parse_line,
)

__all__ = ["FileInfo", "describe_file", "recording_files", "plan_streams", "iter_recording", "open_recording"]

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (EOFError, OSError, zlib.error)
_SCAN_LINES = 20_000  # lines read at most to find a file's first depth/trade message


_TEXT_BYTES = frozenset(range(32, 127)) | {9, 10, 13}


def open_recording(path: Path) -> io.BufferedIOBase:
    """Binary line reader of a recording file: gzip by content (magic bytes), else plain text
    (a file that is neither is refused with one line)."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    if head[:2] == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    if any(b not in _TEXT_BYTES for b in head):
        raise BinanceFormatError(f"{path}: neither gzip nor a text recording (binary content)")
    return open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of non-blank lines; read errors become one line naming the file."""
    lineno = 0
    try:
        with open_recording(path) as fh:
            for lineno, line in enumerate(fh, 1):  # noqa: B007 - lineno used in the error
                if line.strip():
                    yield lineno, line
    except EOFError:
        # a gzip stream without its end: a recorder killed mid-file (or still writing). Every
        # complete line up to the last flush was read; a partial last line is dropped.
        if lineno == 0:
            raise BinanceFormatError(f"{path}: truncated gzip with no readable line") from None
        log.warning(
            "%s: truncated gzip (recorder killed or still writing?): read %d lines, the unreadable tail is skipped",
            path,
            lineno,
        )
    except _READ_ERRORS as exc:
        raise BinanceFormatError(
            f"{path}: truncated or corrupt gzip after line {lineno}: {exc}"
            if lineno
            else f"{path}: unreadable ({type(exc).__name__}: {exc})"
        ) from None


@dataclass(frozen=True)
class FileInfo:
    path: Path
    first_ts: int  # ns, receive time of the first line
    market: str  # spot | usdm | coinm | "" (unknown: no depth/trade message seen)
    symbol: str  # "" when unknown

    @property
    def stream(self) -> tuple[str, str]:
        return self.market, self.symbol


def describe_file(path: str | Path) -> FileInfo:
    """Stream identity of one recording file, read from its first messages."""
    p = Path(path)
    first_ts = None
    market = symbol = ""
    for lineno, line in _lines(p):
        try:
            rec = parse_line(line)
        except BinanceFormatError as exc:
            raise BinanceFormatError(f"{p}:{lineno}: {exc}") from None
        if first_ts is None:
            first_ts = rec.ts_recv
        if rec.kind == KIND_DEPTH:
            market, symbol = market_of_diff(rec.msg, rec.symbol), rec.symbol
            break
        if rec.kind == KIND_TRADE and not symbol:
            market, symbol = market_of_trade(rec.msg, rec.symbol), rec.symbol  # a depth line may still refine it
        if lineno >= _SCAN_LINES:
            break
    if first_ts is None:
        raise BinanceFormatError(f"{p}: empty recording (no message lines)")
    return FileInfo(p, first_ts, market, symbol)


def recording_files(path: str | Path) -> list[Path]:
    """A recording file, or the regular (non-hidden, non-Markdown) files of a directory."""
    p = Path(path)
    if p.is_dir():
        files = sorted(
            x
            for x in p.iterdir()
            if x.is_file() and not x.name.startswith(".") and not x.name.endswith((".md", ".txt", ".json"))
        )
        if not files:
            raise FileNotFoundError(f"no recordings in {p}")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"recording not found: {p}")
    return [p]


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return recording_files(paths)
    return [f for p in paths for f in recording_files(p)]


def plan_streams(paths: str | Path | Iterable[str | Path]) -> list[list[FileInfo]]:
    """Group files into streams by (market, symbol) from their content, each in time order.

    A file whose stream cannot be told (only a REST snapshot, only other channels) joins the
    single stream when there is exactly one, else it is an error."""
    infos = [describe_file(f) for f in _expand(paths)]
    groups: dict[tuple[str, str], list[FileInfo]] = {}
    unknown = [i for i in infos if not i.symbol]
    for i in infos:
        if i.symbol:
            groups.setdefault(i.stream, []).append(i)
    if unknown:
        if len(groups) > 1 or not groups:
            raise BinanceFormatError(f"{unknown[0].path}: no depth or trade stream message tells its market and symbol")
        next(iter(groups.values())).extend(unknown)
    return [sorted(groups[k], key=lambda i: i.first_ts) for k in sorted(groups)]  # deterministic: by stream


def iter_recording(paths: str | Path | Iterable[str | Path]) -> Iterator[Record]:
    """Records of one or more files of ONE stream, in the order given (see :func:`plan_streams`
    for ordering and splitting). A REST snapshot line gets the stream's depth symbol. Errors
    name ``file:line``; a file without any message line is an error."""
    files = _expand(paths)
    depth_syms: set[str] = set()
    pending: list[tuple[Path, int, Record]] = []  # a snapshot seen before any depth line (+ what follows)
    for f in files:
        n = 0
        for lineno, line in _lines(f):
            n += 1
            try:
                rec = parse_line(line)
            except BinanceFormatError as exc:
                raise BinanceFormatError(f"{f}:{lineno}: {exc}") from None
            kind = rec.kind
            if kind == KIND_DEPTH and rec.symbol not in depth_syms:
                depth_syms.add(rec.symbol)
                if pending:  # the held snapshot belongs to this first depth symbol
                    for _f, _n, r in pending:
                        yield r._replace(symbol=rec.symbol) if r.kind == KIND_SNAPSHOT and not r.symbol else r
                    pending.clear()
            elif kind == KIND_SNAPSHOT and not rec.symbol:
                if len(depth_syms) == 1:
                    rec = rec._replace(symbol=next(iter(depth_syms)))
                elif depth_syms:
                    raise BinanceFormatError(
                        f"{f}:{lineno}: REST snapshot names no symbol and the recording carries depth for "
                        f"{', '.join(sorted(depth_syms))}: cannot tell which book it belongs to"
                    )
                else:
                    pending.append((f, lineno, rec))
                    continue
            if pending:
                pending.append((f, lineno, rec))
                continue
            yield rec
        if n == 0:
            raise BinanceFormatError(f"{f}: empty recording (no message lines)")
    if pending:
        f, lineno, _ = pending[0]
        raise BinanceFormatError(f"{f}:{lineno}: REST snapshot names no symbol and no depth stream follows it")
