"""Reading what :mod:`collector.recorder` wrote, as ONE stream: ``<local_receive_ns> <message>``
lines from one or more files (gzip by its magic bytes, or plain text).

* :func:`recorded_files`: a file, a directory of them (the recorder's ``<dir>/<exchange>/``),
  or the recorder's root (``<dir>``, holding one sub-directory per exchange); hidden files and
  notes (``.md``, ``.txt``, ``.json``) are skipped.
* :func:`in_receive_order`: the lines of several files merged by receive time. The recorder
  rotates a symbol's file (day boundary, ``rotate_bytes``) between two messages, so a symbol's
  files never overlap in time: merged, they give back exactly the sequence the live builder
  saw, and the builder simply continues across the boundary. A missing file in the middle is
  a sequence gap the builder detects (it waits for the next snapshot); it never builds a book
  across a hole.
* A gzip cut short (recorder killed) is read up to its last complete line, with a warning naming
  the file. Nothing is read from file names (their order only breaks ties of equal first
  receive times).
"""

from __future__ import annotations

import gzip
import io
import heapq
import logging
import zlib
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["RecordingFormatError", "first_lines", "in_receive_order", "read_lines", "recorded_files"]

log = logging.getLogger(__name__)

_SKIP_SUFFIXES = (".md", ".txt", ".json")


class RecordingFormatError(ValueError):
    """A recording file that cannot be read (one line naming the file)."""


def recorded_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Recording files of a file, a directory (recursively) or a list of them."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(
                f
                for f in item.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(item).parts)
                and not f.name.endswith(_SKIP_SUFFIXES)
            )
            if not found:
                raise FileNotFoundError(f"no recordings in {item}")
            out.extend(found)
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"recording not found: {item}")
    return out


def _open(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(receive ns, message text)`` of each ``<digits> <message>`` line of one file."""
    n = 0
    try:
        with _open(path) as fh:
            for raw in fh:
                head, _, body = raw.rstrip(b"\r\n").partition(b" ")
                if head.isdigit() and body:
                    n += 1
                    yield int(head), body.decode()
    except EOFError:
        log.warning(
            "%s: truncated gzip (recorder killed or still writing?): read %d lines, the tail is skipped", path, n
        )
    except (OSError, zlib.error, UnicodeDecodeError) as exc:
        raise RecordingFormatError(f"{path}: unreadable after {n} lines ({type(exc).__name__}: {exc})") from None


def first_lines(path: Path, n: int = 1) -> list[tuple[int, str]]:
    """The first ``n`` message lines of a file ([] when it has none or cannot be read)."""
    out: list[tuple[int, str]] = []
    try:
        for x in read_lines(path):
            out.append(x)
            if len(out) >= n:
                break
    except RecordingFormatError:
        return []
    return out


def in_receive_order(files: Iterable[Path]) -> Iterator[tuple[int, str]]:
    """The lines of ``files`` as one stream, merged by receive time (each file in its own order;
    equal times keep the order of the files' first lines)."""
    heads: list[tuple[int, int, Path]] = []
    for i, f in enumerate(files):
        first = first_lines(f)
        if not first:
            raise RecordingFormatError(f"{f}: empty recording (no '<ns> <message>' line)")
        heads.append((first[0][0], i, f))
    heads.sort()
    return _merge([read_lines(f) for _, _, f in heads])


def _merge(its: list[Iterator[tuple[int, str]]]) -> Iterator[tuple[int, str]]:
    """k-way merge by time that stays on one file while its lines come before every other file's
    next line: one comparison per line for rotated files, which do not overlap in time."""
    heap: list[tuple[int, int, str]] = []  # (ts, file index, body) of each other file's next line
    for k, it in enumerate(its):
        for ts, body in it:
            heap.append((ts, k, body))
            break
    heapq.heapify(heap)
    while heap:
        ts, k, body = heapq.heappop(heap)
        yield ts, body
        bound = heap[0] if heap else None
        for ts, body in its[k]:
            if bound is None or (ts, k) < bound[:2]:
                yield ts, body
                continue
            heapq.heappush(heap, (ts, k, body))
            break
