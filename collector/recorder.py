"""Recording what a live feed receives, in the replay format: gzip day files of
``<local_receive_ns> <raw message>`` lines (the layout of the Binance raw recordings that
:mod:`collector.replay_binance` reads), one file per (exchange, symbol, UTC day).

* Files are written as ``<dir>/<exchange>/<symbol>_<YYYYMMDD>[_<n>].gz.part`` and renamed to
  ``.gz`` when closed (on rotation and on stop). A file that already exists is never appended
  to: a restart opens the next ``_<n>``.
* Rotation: at the UTC day boundary of the receive time, and optionally at ``rotate_bytes``
  of raw message bytes.
* Crash safety: the gzip stream is sync-flushed (``Z_SYNC_FLUSH``) to the OS every
  ``flush_interval_s``, always at a line boundary, and right after a file's first line. A killed recorder leaves every earlier
  file complete and its open ``.part`` file readable up to the last flush; the replay reader
  reads that prefix and warns that the file is truncated.
* Writes are synchronous, in the order the feed handed the messages to its book builder, so
  the replay sees exactly the sequence the live book saw (REST snapshots included).

The naming/rotation rules are pure functions (:func:`day_of`, :func:`file_name`); the
:class:`Recorder` only owns the open files.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Recorder", "RecorderStats", "day_of", "file_name", "rotate_bytes_of", "safe_symbol"]

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DAY_NS = 86_400 * 10**9


def day_of(ts_ns: int) -> str:
    """UTC day (``YYYYMMDD``) of a receive time in ns (exact: integer seconds, no float rounding)."""
    return datetime.fromtimestamp(ts_ns // 10**9, tz=UTC).strftime("%Y%m%d")


def safe_symbol(symbol: str) -> str:
    """A symbol as a file-name part (``BTC/USDT`` -> ``btc-usdt``)."""
    return _SAFE.sub("-", symbol).strip("-").lower() or "unknown"


def rotate_bytes_of(rotate_mb: float) -> int | None:
    """A ``--rotate-mb`` / ``COLLECTOR_RECORD_ROTATE_MB`` value as :class:`Recorder`'s
    ``rotate_bytes``: ``None`` for 0 (daily files only), at least 1 byte otherwise."""
    return max(1, int(rotate_mb * 2**20)) if rotate_mb else None


def file_name(symbol: str, day: str, n: int) -> str:
    """``btcusdt_20240808.gz`` for the first file of a day, ``btcusdt_20240808_2.gz`` after."""
    base = f"{safe_symbol(symbol)}_{day}"
    return f"{base}.gz" if n <= 1 else f"{base}_{n}.gz"


@dataclass
class RecorderStats:
    messages: int = 0
    bytes: int = 0  # raw message bytes written (uncompressed)
    files: int = 0  # files opened
    gaps: int = 0  # sequence gaps / reconnects the feed reported
    closed: list[str] = field(default_factory=list)  # completed files

    def as_dict(self) -> dict[str, int]:
        return {"messages": self.messages, "bytes": self.bytes, "files": self.files, "gaps": self.gaps}


class _Open:
    __slots__ = ("bytes", "day_index", "fh", "last_flush", "path")

    def __init__(self, path: Path, day_index: int) -> None:
        self.path = path
        self.fh = gzip.open(path, "wb", compresslevel=6)
        self.day_index = day_index  # ts_ns // _DAY_NS: the day check on the hot path is one integer division
        self.bytes = 0
        self.last_flush = -1e18  # the first line is flushed at once: no file on disk without a readable line


class Recorder:
    """Writes raw messages of one exchange into rotating day files under ``root/<exchange>``."""

    def __init__(
        self, root: str | Path, exchange: str, *, rotate_bytes: int | None = None, flush_interval_s: float = 1.0
    ) -> None:
        if rotate_bytes is not None and rotate_bytes <= 0:
            raise ValueError(f"rotate_bytes must be > 0, got {rotate_bytes}")
        self.dir = Path(root) / safe_symbol(exchange)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exchange = exchange
        self.rotate_bytes = rotate_bytes
        self.flush_interval_s = flush_interval_s
        self.stats = RecorderStats()
        self._open: dict[str, _Open] = {}
        self._closed = False
        self._lock = threading.Lock()  # the service closes from its main thread while feeds write

    # ----------------------------------------------------------------- writing
    def write(self, symbol: str, raw: bytes | str, ts_ns: int) -> None:
        """One message as received (``raw``, without newlines) at local time ``ts_ns``."""
        with self._lock:
            self._write(symbol, raw, ts_ns)

    def _write(self, symbol: str, raw: bytes | str, ts_ns: int) -> None:
        if self._closed:
            return
        if isinstance(raw, str):
            raw = raw.encode()
        if b"\n" in raw:
            raw = raw.replace(b"\r", b"").replace(b"\n", b"")  # one message = one line
        day_index = ts_ns // _DAY_NS
        f = self._open.get(symbol)
        if f is not None and (
            f.day_index != day_index or (self.rotate_bytes is not None and f.bytes >= self.rotate_bytes)
        ):
            self._close_one(symbol)
            f = None
        now = time.monotonic()
        if f is None:
            f = self._open[symbol] = self._new_file(symbol, day_index)
        line = b"%d %s\n" % (ts_ns, raw)
        f.fh.write(line)
        f.bytes += len(raw)
        self.stats.messages += 1
        self.stats.bytes += len(raw)
        if now - f.last_flush >= self.flush_interval_s:
            f.fh.flush()  # Z_SYNC_FLUSH + write to the OS: readable up to here after a crash
            f.last_flush = now

    def note_gap(self, n: int = 1) -> None:
        self.stats.gaps += n

    def flush(self) -> None:
        with self._lock:
            now = time.monotonic()
            for f in self._open.values():
                f.fh.flush()
                f.last_flush = now

    def close(self) -> None:
        """Close every file cleanly (complete gzip streams, ``.part`` renamed)."""
        with self._lock:
            for sym in list(self._open):
                self._close_one(sym)
            self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- files
    def _new_file(self, symbol: str, day_index: int) -> _Open:
        day = day_of(day_index * _DAY_NS)
        n = 1
        while True:
            final = self.dir / file_name(symbol, day, n)
            part = final.with_name(final.name + ".part")
            if not final.exists() and not part.exists():
                break
            n += 1
        self.stats.files += 1
        log.info("recording %s %s into %s", self.exchange, symbol, part)
        return _Open(part, day_index)

    def _close_one(self, symbol: str) -> None:
        f = self._open.pop(symbol)
        f.fh.close()
        final = f.path.with_name(f.path.name[: -len(".part")])
        os.replace(f.path, final)
        self.stats.closed.append(str(final))


class RecorderPool:
    """One :class:`Recorder` per exchange under one directory (the collector's
    ``COLLECTOR_RECORD_DIR``), shared by every feed and feed restart; closed at stop."""

    def __init__(self, root: str | Path, *, rotate_bytes: int | None = None, flush_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.rotate_bytes = rotate_bytes
        self.flush_interval_s = flush_interval_s
        self.recorders: dict[str, Recorder] = {}

    def for_exchange(self, exchange: str) -> Recorder:
        r = self.recorders.get(exchange)
        if r is None:
            r = self.recorders[exchange] = Recorder(
                self.root, exchange, rotate_bytes=self.rotate_bytes, flush_interval_s=self.flush_interval_s
            )
        return r

    def stats(self) -> dict[str, int]:
        out = dict.fromkeys(("messages", "bytes", "files", "gaps"), 0)
        for r in self.recorders.values():
            for k, v in r.stats.as_dict().items():
                out[k] += v
        return out

    def close(self) -> None:
        for r in self.recorders.values():
            r.close()
