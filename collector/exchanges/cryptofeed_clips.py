"""Reader for the legacy cryptofeed raw websocket captures (``<EXCHANGE>.ws.<n>.<m>[.gz]``).

Format (see the dataset's PROVENANCE.md)::

    <ws url> <-> <connect epoch>                 # connection header
    <ws url> <- <epoch>: <json sent by client>   # outgoing (subscribe) lines
    <epoch seconds>: <raw exchange JSON>         # every received message, unmodified

:func:`iter_clip` yields the received messages only, decoded, with their receive time.
Pure parsing plus file reading; no network.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from depthpilot.paths import data_dir

__all__ = ["ClipMessage", "ClipFormatError", "iter_clip", "clip_path", "CLIPS_DATASET"]

CLIPS_DATASET = "cryptofeed-l2-clips-2021-2022"


class ClipFormatError(ValueError):
    """A line of a capture file is neither a header, an outgoing line nor ``<epoch>: <json>``."""


@dataclass(frozen=True, slots=True)
class ClipMessage:
    ts_recv_ns: int  # local receive time of the capture, ns since epoch
    msg: Any  # decoded JSON exactly as the exchange sent it
    line_no: int


def clip_path(name: str, root: Path | None = None) -> Path:
    """Path of clip ``name`` (e.g. ``"OKX.ws.1.0"``) in the data dir; ``.gz`` is added if needed."""
    base = (root if root is not None else data_dir()) / CLIPS_DATASET / "raw"
    for cand in (base / name, base / f"{name}.gz"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"cryptofeed clip {name!r} not found under {base}")


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def iter_clip(path: str | Path) -> Iterator[ClipMessage]:
    """Yield every received message of a capture file, in file order.

    Decoding keeps JSON numbers as Python int/float (exchanges that need exact decimal
    strings, like OKX for its checksum, send them as JSON strings already)."""
    path = Path(path)
    with _open(path) as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            head, sep, body = line.partition(": ")
            if not sep:
                if " <-> " in line:
                    continue  # connection header
                raise ClipFormatError(f"{path.name}:{line_no}: no '<epoch>: <json>' separator")
            if " <- " in head:
                continue  # outgoing subscribe line
            try:
                ts = float(head)
            except ValueError as exc:
                raise ClipFormatError(f"{path.name}:{line_no}: bad timestamp {head[:40]!r}") from exc
            try:
                msg = json.loads(body)
            except json.JSONDecodeError as exc:
                raise ClipFormatError(f"{path.name}:{line_no}: invalid JSON: {exc}") from exc
            yield ClipMessage(ts_recv_ns=int(round(ts * 1e9)), msg=msg, line_no=line_no)
