"""Fetch the public market-data recordings the project tests and benchmarks use.

``make sample-data`` / ``depthpilot sample-data`` call :func:`fetch`. Every file comes from a public
GitHub repository at a **pinned commit**, so its bytes (and therefore its sha256) never change:

    https://raw.githubusercontent.com/{repo}/{commit}/{path in repo}

:data:`MANIFEST` (the catalogue, :mod:`depthpilot.sample_catalogue`, re-exported here) lists
every file. The layout written under ``dest`` is the same as the shared dataset directory, so
``DEPTHPILOT_DATA_DIR=dest`` (or ``dest=./data``) works for the test-suite.

Two kinds of raw file:

* byte-identical copies (most files): the downloaded bytes must hash to ``sha256``;
* gzip-of-upstream (``gzip=True``: cryptofeed captures, Binance klines): the upstream file is plain
  text; its bytes must hash to ``upstream_sha256``, then it is stored gzip-compressed. With GNU
  ``gzip`` on PATH (``gzip -9n``) the stored file is byte-identical to the shared set (``sha256``);
  without it Python's zlib is used and only the decompressed content is guaranteed identical.

``derived_*`` files (:data:`DERIVED`) are rebuilt locally from the raw files and are **not**
downloadable; :func:`fetch` skips them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from depthpilot.sample_catalogue import (
    DATASET_NAMES,
    DATASETS,
    DEFAULT_BASE_URL,
    DERIVED,
    MANIFEST,
    Dataset,
    SampleDataError,
    SourceFile,
    files,
)

__all__ = [
    "DATASET_NAMES",
    "DATASETS",
    "DEFAULT_BASE_URL",
    "DERIVED",
    "MANIFEST",
    "Dataset",
    "SampleDataError",
    "SourceFile",
    "files",
    "sha256_file",
    "is_present",
    "fetch",
]

_CHUNK = 1 << 16


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_gunzip(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except (OSError, EOFError):  # not a valid gzip file -> not a valid copy
        return None
    return h.hexdigest()


def is_present(path: Path, entry: SourceFile) -> bool:
    """True if ``path`` holds a verified copy of ``entry``.

    Byte-identical to the shared copy, or (gzip entries) a gzip whose content hashes to the
    upstream checksum (a copy compressed by a different gzip implementation).
    """
    if not path.is_file():
        return False
    if sha256_file(path) == entry.sha256:
        return True
    return entry.gzip and _sha256_gunzip(path) == entry.upstream_sha256


class _Retryable(Exception):
    """Transient failure (network error, HTTP 5xx/429): worth another attempt."""


def _download(
    client: httpx.Client, entry: SourceFile, url: str, tmp: Path, progress: Callable[[str, int, int], None] | None
) -> str:
    """Stream ``url`` into ``tmp``; return the sha256 of the bytes received."""
    h = hashlib.sha256()
    limit = entry.download_size
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _Retryable(f"HTTP {resp.status_code} for {url}")
            if resp.status_code != 200:
                raise SampleDataError(f"{entry.name}: HTTP {resp.status_code} for {url}")
            total = limit or int(resp.headers.get("content-length") or 0)
            done = 0
            with open(tmp, "wb") as out:
                for chunk in resp.iter_bytes(_CHUNK):
                    done += len(chunk)
                    if limit is not None and done > limit:
                        raise SampleDataError(f"{entry.name}: {url} sent more than the expected {limit} bytes")
                    h.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(entry.name, done, total)
    except httpx.TransportError as exc:  # connect/read timeouts, resets, protocol errors
        raise _Retryable(f"{type(exc).__name__} for {url}: {exc}") from exc
    return h.hexdigest()


def _gzip_into(src: Path, dst: Path, expected_sha256: str) -> None:
    """Compress ``src`` into ``dst``; prefer GNU ``gzip -9n`` (reproduces the shared files' bytes)."""
    exe = shutil.which("gzip")
    if exe is not None:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            rc = subprocess.run([exe, "-9", "-n", "-c"], stdin=fin, stdout=fout, check=False).returncode
        if rc == 0 and sha256_file(dst) == expected_sha256:
            return
    with open(src, "rb") as fin, open(dst, "wb") as raw_out:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw_out, mtime=0) as gz:
            shutil.copyfileobj(fin, gz, _CHUNK)


def _fetch_one(
    client: httpx.Client,
    entry: SourceFile,
    target: Path,
    base_url: str,
    progress: Callable[[str, int, int], None] | None,
    retries: int,
    retry_wait: float,
) -> None:
    url = entry.url(base_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    gz_tmp: Path | None = None
    try:
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            stop=stop_after_attempt(max(0, retries) + 1),
            wait=wait_exponential(multiplier=retry_wait, max=max(retry_wait, 30.0)),
            reraise=False,
        )
        try:
            got = retrying(_download, client, entry, url, tmp, progress)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise SampleDataError(f"{entry.name}: giving up after {max(0, retries) + 1} attempts: {last}") from last
        if got != entry.download_sha256:
            raise SampleDataError(
                f"{entry.name}: sha256 mismatch for {url}: expected {entry.download_sha256}, got {got}"
            )
        if entry.gzip:
            fd, gz_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".gz.part")
            os.close(fd)
            gz_tmp = Path(gz_name)
            _gzip_into(tmp, gz_tmp, entry.sha256)
            os.replace(gz_tmp, target)
            gz_tmp = None
        else:
            os.replace(tmp, target)
    finally:
        for p in (tmp, gz_tmp):
            if p is not None:
                p.unlink(missing_ok=True)


def _remove_empty(dirs: list[Path]) -> None:
    """Remove those of ``dirs`` (parents first) that are empty, deepest first."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            pass  # not empty (a completed file) or already gone: keep it


def _provenance_note(ds: Dataset, entries: list[SourceFile], base_url: str) -> str:
    lines = [
        f"# {ds.name}",
        "",
        "Fetched by `depthpilot sample-data` (depthpilot/sample_data.py). The full description of this",
        "set (time range, format, verification) is in the project's shared dataset PROVENANCE.md.",
        "",
        f"- source repo: `{ds.repo}` (GitHub), commit `{ds.commit}`",
        f"- licence: {ds.licence}",
        "",
        "| file | source | sha256 |",
        "|---|---|---|",
    ]
    for e in entries:
        how = " (gzip -9n of upstream)" if e.gzip else ""
        lines.append(f"| `{e.path}` | {e.url(base_url)}{how} | `{e.sha256}` |")
    derived = [p for d, p in DERIVED if d == ds.name]
    if derived:
        lines += [
            "",
            "Not downloaded (derived locally from the raw files, not in the source repo): "
            + ", ".join(f"`{p}`" for p in derived)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def fetch(
    dest: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    datasets: list[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    timeout: float = 60,
    retries: int = 3,
    retry_wait: float = 1.0,
) -> list[Path]:
    """Download the raw sample recordings into ``dest/<dataset>/<path>``.

    Files already present with the right checksum are skipped. Each file is streamed to a temporary
    file next to its target, its sha256 checked (mismatch -> :class:`SampleDataError` naming the
    file; temp file removed), gzip-compressed if the manifest says so, then atomically renamed
    into place. Network errors and HTTP 5xx/429 are retried ``retries`` times (so up to
    ``retries + 1`` attempts) with exponential backoff starting at ``retry_wait`` seconds; other
    HTTP statuses fail at once. A short ``PROVENANCE.md`` is written in each dataset folder that
    has none. ``progress(name, bytes_done, bytes_total)`` is called as bytes arrive.

    Returns the paths downloaded by this call (empty when everything was already present). A failed
    fetch keeps the files it completed but leaves no empty directory behind (``dest`` included).
    """
    dest = Path(dest)
    selected = files(datasets)
    downloaded: list[Path] = []
    created: list[Path] = []  # directories this call made, parents first
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            for entry in selected:
                target = dest / entry.dataset / entry.path
                if is_present(target, entry):
                    continue
                created.extend(
                    d for d in reversed([target.parent, *target.parent.parents]) if d not in created and not d.exists()
                )
                _fetch_one(client, entry, target, base_url, progress, retries, retry_wait)
                downloaded.append(target)
    except BaseException:
        _remove_empty(created)
        raise
    for ds in DATASETS:
        note = dest / ds.name / "PROVENANCE.md"
        if any(e.dataset == ds.name for e in selected) and not note.exists():
            entries = [e for e in MANIFEST if e.dataset == ds.name]
            note.write_text(_provenance_note(ds, entries, DEFAULT_BASE_URL), encoding="utf-8")
    return downloaded
