"""The catalogue of rebuilt books: :func:`backtest.data.load_recording` keeps the :class:`Books` it
rebuilt from a recording, and the next load of the same input at the same depth reads them back
(raw ``.npy``, memory speed) instead of running the builders again.

* **Key:** the depth, the files the loader reads (path as read and resolved, size,
  ``st_mtime_ns``, in the loader's order) and a fingerprint of the code that builds books (the source bytes of every
  ``collector/**/*.py``, ``backtest/data.py``, this module and ``features/io.py``): a changed,
  added or removed input file, or a changed builder, misses. Nothing else is read from names.
* **Layout:** ``<cache_dir()>/books/<key>/``: ``ts.npy``, ``valid.npy``, ``bids.npy``,
  ``asks.npy`` (uncompressed) and ``meta.json`` (exchange, symbol, source, depth, files, array
  shapes and dtypes, created, hits). Written into a temporary directory beside it and renamed
  into place; a concurrent writer that loses the race drops its copy. Read back memory-mapped
  copy-on-write: callers may change the arrays in memory, the files never change.
* **Safety:** an entry that does not read back whole (truncated ``.npy``, bad meta, shapes that
  disagree) is never used: one warning naming it, deleted, rebuilt. An unwritable cache: one
  warning, the books are returned uncached. Not stored: an input modified less than 2 s before
  the load (its timestamp could not tell a same-size rewrite inside the clock's granularity
  apart: git's "racy" files) or one that changed while it was rebuilt.
* **Size:** ``DEPTHPILOT_BOOK_CACHE_MB`` (MiB, default 4096): after a store the least recently
  used entries (meta mtime, touched on each hit) go until the rest fits; an entry bigger than
  the cap is not stored. ``DEPTHPILOT_BOOK_CACHE=0`` turns the catalogue off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from backtest.data import Books
from depthpilot.paths import cache_dir

log = logging.getLogger(__name__)

FORMAT = 1
ARRAYS = ("ts", "valid", "bids", "asks")
DEFAULT_CAP_MB = 4096.0
RACY_NS = 2_000_000_000  # an input younger than this is not stored
STALE_TMP_S = 3600.0  # a writer's temporary directory older than this was left by a crash
MMAP: Any = "c"  # np.load mmap_mode: copy-on-write (measured against a plain read: see the README)
REPO = Path(__file__).resolve().parent.parent
BUILDER_SOURCES = ("collector/**/*.py", "backtest/data.py", "backtest/book_cache.py", "features/io.py")

# what the catalogue did in this process: hit, miss, store, corrupt, evicted, racy, changed,
# too_big, unwritable, lost_race (tests and benchmarks read it; nothing depends on it)
stats: Counter[str] = Counter()
_warned: set[str] = set()


def enabled() -> bool:
    """``DEPTHPILOT_BOOK_CACHE`` is not 0 / false / no / off."""
    return os.environ.get("DEPTHPILOT_BOOK_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cap_bytes() -> int:
    raw = os.environ.get("DEPTHPILOT_BOOK_CACHE_MB", "").strip()
    mb = DEFAULT_CAP_MB
    if raw:
        try:
            mb = float(raw)
            if not mb >= 0:  # NaN too
                raise ValueError(raw)
        except ValueError:
            _warn_once(f"DEPTHPILOT_BOOK_CACHE_MB={raw!r} is not a size in MB: using {DEFAULT_CAP_MB:g}")
            mb = DEFAULT_CAP_MB
    return int(mb * 2**20)


def books_root(root: Path | None = None) -> Path:
    return (root if root is not None else cache_dir()) / "books"


@lru_cache(maxsize=None)
def code_fingerprint(repo: Path = REPO) -> str:
    """sha256 over the relative path and source bytes of every module that builds books."""
    h = hashlib.sha256()
    for f in sorted({f for pat in BUILDER_SOURCES for f in repo.glob(pat) if f.is_file()}):
        for part in (f.relative_to(repo).as_posix().encode(), f.read_bytes()):
            h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def file_stats(files: Sequence[Path]) -> list[list[Any]]:
    """``[path, resolved path, size, st_mtime_ns]`` of each file, in the order given: the path
    as the loader reads it (absolute, links kept: the loader tells some formats by their name)
    and the file it resolves to."""
    out: list[list[Any]] = []
    for f in files:
        st = f.stat()
        out.append([os.path.abspath(f), str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def entry_key(stats_: list[list[Any]], depth: int) -> str:
    doc = {"format": FORMAT, "depth": depth, "files": stats_, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:32]


def cached(
    files: Sequence[Path], depth: int, source: str, build: Callable[[], Books], *, root: Path | None = None
) -> Books:
    """The books of ``files`` at ``depth`` from the catalogue, else ``build()`` stored there.
    ``source`` (the path as the caller gave it) is the returned books' source either way."""
    try:
        before = file_stats(files)
    except OSError:  # an input vanished under us: the loader names it
        return build()
    entry = books_root(root) / entry_key(before, depth)
    books = read_entry(entry, before, depth, source)
    if books is not None:
        return books
    stats["miss"] += 1
    books = build()
    store(entry, books, files, before, depth)
    return books


def read_entry(entry: Path, files: list[list[Any]], depth: int, source: str) -> Books | None:
    """The stored books, or None (absent; or unreadable: warned and deleted)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not an object")
        want = [[f["path"], f["resolved"], f["size"], f["mtime_ns"]] for f in meta["files"]]
        if meta["format"] != FORMAT or meta["depth"] != depth or want != files:
            raise ValueError("meta.json does not describe this key")
        arrs = {n: np.load(entry / f"{n}.npy", mmap_mode=MMAP, allow_pickle=False) for n in ARRAYS}
        for n, a in arrs.items():
            spec = meta["arrays"][n]
            if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
                raise ValueError(f"{n}.npy is {a.dtype}{list(a.shape)}, meta.json says {spec['dtype']}{spec['shape']}")
        if len({a.shape[0] for a in arrs.values()}) != 1:
            raise ValueError("the arrays disagree on the number of books")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        stats["corrupt"] += 1
        why = " ".join(str(exc).split())  # one line
        log.warning("book cache entry %s is unreadable (%s: %s): deleted, rebuilding", entry, type(exc).__name__, why)
        _remove(entry)
        return None
    stats["hit"] += 1
    _touch(entry, meta)
    a = {n: x.view(np.ndarray) if isinstance(x, np.memmap) else x for n, x in arrs.items()}
    return Books(str(meta["exchange"]), str(meta["symbol"]), a["ts"], a["bids"], a["asks"], a["valid"], source)


def store(entry: Path, books: Books, files: Sequence[Path], before: list[list[Any]], depth: int) -> bool:
    """Write ``books`` as ``entry`` (atomically), then evict down to the cap. False: not stored."""
    try:
        after = file_stats(files)
    except OSError:
        after = []
    if after != before:
        stats["changed"] += 1
        log.info("book cache: an input changed while it was read, not stored (%s)", books.source)
        return False
    if any(m > time.time_ns() - RACY_NS for *_, m in before):
        stats["racy"] += 1
        log.info("book cache: an input was modified in the last 2 s, not stored (%s)", books.source)
        return False
    arrays = {"ts": books.ts, "valid": books.valid, "bids": books.bids, "asks": books.asks}
    cap = cap_bytes()
    if sum(int(np.asarray(a).nbytes) for a in arrays.values()) > cap:
        stats["too_big"] += 1
        log.info("book cache: %s is bigger than DEPTHPILOT_BOOK_CACHE_MB, not stored", books.source)
        return False
    base = entry.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=base))
    except OSError as exc:
        stats["unwritable"] += 1
        _warn_once(f"book cache {base} is not writable ({exc}): books are not cached")
        return False
    meta = {
        "format": FORMAT,
        "exchange": books.exchange,
        "symbol": books.symbol,
        "source": books.source,
        "depth": depth,
        "files": [{"path": p, "resolved": r, "size": s, "mtime_ns": m} for p, r, s, m in before],
        "code": code_fingerprint(),
        "arrays": {n: {"shape": list(np.shape(a)), "dtype": str(np.asarray(a).dtype)} for n, a in arrays.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hits": 0,
    }
    try:
        for n, a in arrays.items():
            np.save(tmp / f"{n}.npy", np.asarray(a), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(tmp, entry)
    except OSError as exc:
        _remove(tmp)
        if (entry / "meta.json").is_file():  # a concurrent writer got there first: its entry stands
            stats["lost_race"] += 1
            return False
        stats["unwritable"] += 1
        _warn_once(f"book cache {base}: cannot store an entry ({exc}): books are not cached")
        return False
    stats["store"] += 1
    evict(base, cap, keep=entry)
    return True


def entries(base: Path) -> list[tuple[Path, int, int]]:
    """``(entry, bytes, last used ns)`` of every entry under ``base`` (``books/``)."""
    out: list[tuple[Path, int, int]] = []
    if not base.is_dir():
        return out
    for d in base.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            meta = d / "meta.json"
            used = (meta if meta.exists() else d).stat().st_mtime_ns
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        except OSError as exc:  # removed by another process meanwhile
            log.debug("book cache: %s: %s", d, exc)
            continue
        out.append((d, size, used))
    return out


def evict(base: Path, cap: int, keep: Path | None = None) -> int:
    """Remove least recently used entries until the rest fits ``cap`` bytes (never ``keep``),
    and writers' temporary directories left by a crash. Returns the entries removed."""
    ents = sorted(entries(base), key=lambda e: e[2])
    total = sum(size for _, size, _ in ents)
    n = 0
    for d, size, _ in ents:
        if total <= cap:
            break
        if d == keep:
            continue
        _remove(d)
        total -= size
        n += 1
    stats["evicted"] += n
    for d in base.glob(".tmp-*"):
        try:
            if time.time() - d.stat().st_mtime > STALE_TMP_S:
                _remove(d)
        except OSError as exc:
            log.debug("book cache: %s: %s", d, exc)
    return n


def info(root: Path | None = None) -> dict[str, Any]:
    base = books_root(root)
    ents = entries(base)
    return {"root": base, "entries": len(ents), "bytes": sum(s for _, s, _ in ents), "cap_bytes": cap_bytes()}


def clear(root: Path | None = None) -> tuple[int, int]:
    """Remove every entry (and temporary directory); ``(entries, bytes)`` removed."""
    base = books_root(root)
    ents = entries(base)
    for d, _, _ in ents:
        _remove(d)
    for d in base.glob(".tmp-*") if base.is_dir() else ():
        _remove(d)
    return len(ents), sum(s for _, s, _ in ents)


def _touch(entry: Path, meta: dict[str, Any]) -> None:
    """Count the hit in meta.json (rewritten atomically), which also marks the entry used."""
    meta["hits"] = int(meta.get("hits", 0)) + 1
    meta["last_hit"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with tempfile.NamedTemporaryFile("w", dir=entry, prefix=".meta-", suffix=".tmp", delete=False) as fh:
            json.dump(meta, fh, indent=1)
        os.replace(fh.name, entry / "meta.json")
    except OSError as exc:  # a read-only catalogue still serves hits
        log.debug("book cache: cannot count the hit of %s: %s", entry, exc)


def _remove(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        log.debug("book cache: %s already removed", path)
    except OSError as exc:
        log.warning("book cache: cannot remove %s: %s", path, exc)


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


def catalogue_figures(
    path: str | Path,
    depth: int,
    then: Callable[[Books], Any] | None = None,
    *,
    cold_repeats: int = 3,
    warm_repeats: int = 5,
) -> dict[str, float]:
    """Seconds (best of N) of ``load_recording(path, depth)``: ``cold`` (catalogue off), ``store``
    (the first load: rebuild + write), ``warm`` (a hit) and, with ``then`` (e.g.
    ``lambda b: feature_matrix(pred, b)``), ``warm_then`` (a hit + ``then``) and ``then`` alone
    on books in memory; plus ``books``. Uses a temporary catalogue (the user's is left alone)."""
    from backtest.data import load_recording

    pc = time.perf_counter
    saved = os.environ.get("DEPTHPILOT_CACHE_DIR")
    out: dict[str, float] = {}

    def best(n: int, fn: Callable[[], Any]) -> float:
        t = float("inf")
        for _ in range(n):
            t0 = pc()
            fn()
            t = min(t, pc() - t0)
        return t

    with tempfile.TemporaryDirectory(prefix="depthpilot-bench-cache-") as tmp:
        os.environ["DEPTHPILOT_CACHE_DIR"] = tmp
        try:
            books = load_recording(path, depth, cache=False)  # numba's code loaded before timing
            out["books"] = float(len(books))
            out["cold"] = best(cold_repeats, lambda: load_recording(path, depth, cache=False))
            out["store"] = best(1, lambda: load_recording(path, depth))
            out["warm"] = best(warm_repeats, lambda: load_recording(path, depth))
            if then is not None:
                out["then"] = best(warm_repeats, lambda: then(books))
                out["warm_then"] = best(warm_repeats, lambda: then(load_recording(path, depth)))
        finally:
            if saved is None:
                os.environ.pop("DEPTHPILOT_CACHE_DIR", None)
            else:
                os.environ["DEPTHPILOT_CACHE_DIR"] = saved
    return out
