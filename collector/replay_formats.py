"""Replay input formats, as a table: each entry recognises a file by its content (or its
container: a directory, a zip archive) and builds the source that replays it through that
venue's own book builder. :func:`replay_sources` picks the first format that claims a path;
adding a format is adding a row. Market and symbol always come from the data.

A directory (the recorder's ``<dir>/<exchange>/`` or its root ``<dir>``) stands for the
recording files in it; files of one format that can form a set (``make_set``: the recorder's
rotated files) replay as ONE stream in receive order, so a book continues across a rotation
exactly as it did live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable


if TYPE_CHECKING:
    from collector.replay import ReplayMessage

__all__ = ["ReplayFormat", "REPLAY_FORMATS", "replay_sources", "looks_like_binance"]


@dataclass(frozen=True)
class ReplayFormat:
    name: str
    detect: Callable[[Path], bool]
    make: Callable[[Path, int, float | None], Iterable[ReplayMessage]]
    # several files of one recording (rotated day files) -> one stream in receive order
    make_set: Callable[[list[Path], int, float | None], Iterable[ReplayMessage]] | None = None
    recorder: bool = False  # written by `depthpilot record` for a non-Binance venue


def looks_like_binance(p: Path) -> bool:
    """A raw Binance recording (``<digits> {json}`` lines, gzip or plain) by its first line, or
    a directory of them; an unreadable or empty file also goes to the Binance reader, which
    names the problem in one line."""
    from collector.exchanges.binance_recording import open_recording

    if p.is_dir():
        return True
    if p.name.lower().endswith((".csv", ".csv.gz", ".parquet", ".zip")):
        return False
    try:
        with open_recording(p) as fh:
            line = fh.readline(4096)
    except Exception:  # noqa: BLE001 - unreadable: let the Binance reader raise its one-line error
        return True
    head, _, rest = line.partition(b" ")
    return not line or (head.isdigit() and rest.lstrip().startswith(b"{"))


def _is_clip(p: Path) -> bool:
    from collector.clip_replay import is_clip

    return is_clip(p)


def _is_bybit_archive(p: Path) -> bool:
    from collector.clip_replay import is_bybit_archive

    return is_bybit_archive(p)


def _clip(p: Path, depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.clip_replay import clip_replay

    return clip_replay(p, depth)


def _bybit_archive(p: Path, depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.clip_replay import bybit_archive_replay

    return bybit_archive_replay(p, depth)


def _binance(p: Path | list[Path], depth: int, rate: float | None) -> Iterable[ReplayMessage]:
    from collector.replay_binance import BinanceRecordingReplay

    return BinanceRecordingReplay(p, depth=depth, max_rate_hz=rate)


def _is_bybit_recording(p: Path) -> bool:
    from collector.clip_replay import looks_like_bybit_recording

    return looks_like_bybit_recording(p)


def _bybit_recording(p: Path | list[Path], depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.clip_replay import bybit_recording_replay

    return bybit_recording_replay(p, depth)


def _is_ccxt_recording(p: Path) -> bool:
    from collector.ccxt_recording import looks_like_ccxt_recording

    return looks_like_ccxt_recording(p)


def _ccxt_recording(p: Path | list[Path], depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.ccxt_recording import ccxt_recording_replay

    return ccxt_recording_replay(p, depth)


def _tardis_header(p: Path) -> str:
    import gzip

    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rt") as fh:
            return fh.readline(4096)
    except (OSError, EOFError, UnicodeDecodeError):
        return ""


def _fields(p: Path) -> set[str]:
    return {f.strip() for f in _tardis_header(p).split(",")}


def _tardis_trades(p: Path, _depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.replay import TardisTradesReplay

    return TardisTradesReplay(p)


def _tardis_books(p: Path, _depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.replay import TardisBookSnapshotReplay

    return TardisBookSnapshotReplay(p)


def _is_kraken_spot(p: Path) -> bool:
    from collector.exchanges.kraken_spot_feed import looks_like_kraken_recording

    return looks_like_kraken_recording(p)


def _kraken_spot(p: Path | list[Path], depth: int, _rate: float | None) -> Iterable[ReplayMessage]:
    from collector.exchanges.kraken_spot_feed import kraken_recording_replay

    return kraken_recording_replay(p, depth)


REPLAY_FORMATS: list[ReplayFormat] = [
    ReplayFormat("cryptofeed websocket capture", _is_clip, _clip),
    ReplayFormat("Bybit v5 archive", _is_bybit_archive, _bybit_archive),
    ReplayFormat("Tardis trades CSV", lambda p: {"id", "side", "price", "amount"} <= _fields(p), _tardis_trades),
    ReplayFormat("Tardis book_snapshot CSV", lambda p: "asks[0].price" in _tardis_header(p), _tardis_books),
    ReplayFormat("Kraken spot recording (depthpilot record)", _is_kraken_spot, _kraken_spot, _kraken_spot, True),
    ReplayFormat(
        "Bybit v5 recording (depthpilot record)", _is_bybit_recording, _bybit_recording, _bybit_recording, True
    ),
    ReplayFormat("ccxt recording (depthpilot record)", _is_ccxt_recording, _ccxt_recording, _ccxt_recording, True),
    ReplayFormat("raw Binance recording", looks_like_binance, _binance, _binance),
]


def replay_sources(paths: Iterable[str | Path], depth: int, rate_hz: float | None) -> list[Iterable[ReplayMessage]]:
    """The sources of ``REPLAY_PATHS`` (files or directories), each through its venue's own
    book builder: the files of one set-capable format form one source (a recording split into
    rotated files replays as one stream), any other file is a source of its own. A path no
    format claims, or a bad file, fails here with one line."""
    from collector.recording_set import recorded_files

    groups: dict[str, tuple[ReplayFormat, list[Path]]] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"REPLAY_PATHS: {p} does not exist")
        for f in recorded_files(p) if p.is_dir() else [p]:
            fmt = next((x for x in REPLAY_FORMATS if x.detect(f)), None)
            if fmt is None:
                raise ValueError(f"REPLAY_PATHS: cannot tell the format of {f}")
            key = fmt.name if fmt.make_set is not None else f"{fmt.name}:{f}"
            groups.setdefault(key, (fmt, []))[1].append(f)
    sources: list[Iterable[ReplayMessage]] = []
    for fmt, files in groups.values():
        if fmt.make_set is not None and len(files) > 1:
            sources.append(fmt.make_set(files, depth, rate_hz))
        else:
            sources.extend(fmt.make(f, depth, rate_hz) for f in files)
    return sources
