"""depthpilot.sample_data: the manifest matches the real recordings, and fetch() downloads, verifies,
retries and skips correctly against a local HTTP server (127.0.0.1 only; no other traffic)."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from depthpilot import sample_data as sd
from depthpilot.sample_data import DERIVED, MANIFEST, SampleDataError, fetch

# smallest datasets: ~7 KB + ~110 KB, plus one gzip-of-upstream file (cryptofeed OKX, 294 KB raw)
SMALL = ["hyperliquid-btc-l2book-2025-01-26", "tardis-format-fixtures"]
GZ_DATASET = "cryptofeed-l2-clips-2021-2022"
FAST = {"retry_wait": 0.001, "timeout": 10}

_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| (\d+) \| `([0-9a-f]{64})` \|$")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Any name resolution for a non-loopback host fails the test (and proxies are ignored)."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"test tried to reach non-loopback host {h!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------------------------
# (1) the manifest is the provenance: every checksum matches the real files
# ---------------------------------------------------------------------------------------------


def test_manifest_sha256_matches_shared_files(data_dir: Path):
    for e in MANIFEST:
        p = data_dir / e.dataset / e.path
        assert p.is_file(), f"{e.name} missing from {data_dir}"
        assert sd.sha256_file(p) == e.sha256, e.name
        assert p.stat().st_size == e.size, e.name
        if e.gzip:
            raw = gzip.decompress(p.read_bytes())
            assert _sha(raw) == e.upstream_sha256, e.name
            assert len(raw) == e.upstream_size, e.name
        else:
            assert e.upstream_sha256 is None
            assert e.download_sha256 == e.sha256


def test_manifest_covers_every_raw_file_and_no_derived_one(data_dir: Path):
    manifest = {(e.dataset, e.path): e for e in MANIFEST}
    assert len(manifest) == len(MANIFEST), "duplicate manifest entries"
    derived = set(DERIVED)
    assert not derived & set(manifest)
    assert {e.dataset for e in MANIFEST} == set(sd.DATASET_NAMES)
    for ds in sd.DATASETS:
        folder = data_dir / ds.name
        on_disk = {
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.name != "PROVENANCE.md" and not p.name.startswith(".")
        }
        raw_on_disk = {p for p in on_disk if not Path(p).name.startswith("derived_")}
        assert raw_on_disk == {p for d, p in manifest if d == ds.name}, ds.name
        assert {p for p in on_disk if Path(p).name.startswith("derived_")} <= {p for d, p in derived if d == ds.name}
        # the Files table of the dataset's PROVENANCE.md agrees with the manifest
        prov = (folder / "PROVENANCE.md").read_text(encoding="utf-8")
        rows = [m.groups() for m in map(_ROW.match, prov.splitlines()) if m]
        for name, size, _lines, sha in rows:
            if Path(name).name.startswith("derived_"):
                assert (ds.name, name) in derived
                continue
            e = manifest[(ds.name, name)]
            assert (e.sha256, e.size) == (sha, int(size)), f"{ds.name}/{name}"
        for e in (e for e in MANIFEST if e.dataset == ds.name):
            assert (e.repo, e.commit) == (ds.repo, ds.commit)
            assert e.commit in prov and e.repo in prov and e.repo_path in prov, e.name


def test_urls_are_pinned_raw_github():
    for e in MANIFEST:
        assert re.fullmatch(r"[0-9a-f]{40}", e.commit)
        assert e.url() == f"https://raw.githubusercontent.com/{e.repo}/{e.commit}/{e.repo_path}"
    assert (
        MANIFEST[0].url("http://127.0.0.1:1/")
        == f"http://127.0.0.1:1/{MANIFEST[0].repo}/{MANIFEST[0].commit}/{MANIFEST[0].repo_path}"
    )


def test_bench_accessors_name_catalogued_datasets_and_files():
    from depthpilot.sample_catalogue import BINANCE_L2DIFF, DATASET_NAMES, file_name

    assert set(BINANCE_L2DIFF) == {"spot", "usdm"} and set(BINANCE_L2DIFF.values()) <= set(DATASET_NAMES)
    assert all(name.endswith("-l2diff") and market in name for market, name in BINANCE_L2DIFF.items())
    spot = BINANCE_L2DIFF["spot"]
    assert file_name(spot, "raw/btcusdt_20240808.gz") == f"{spot}/raw/btcusdt_20240808.gz"
    assert file_name(spot, "derived_trades.csv.gz") == f"{spot}/derived_trades.csv.gz"
    with pytest.raises(SampleDataError, match="raw/btcusdt_19990101.gz is not in the sample-data catalogue"):
        file_name(spot, "raw/btcusdt_19990101.gz")


def test_unknown_dataset_is_an_error(tmp_path):
    with pytest.raises(SampleDataError, match="unknown dataset"):
        fetch(tmp_path, base_url="http://127.0.0.1:9", datasets=["no-such-set"])


# ---------------------------------------------------------------------------------------------
# local server reproducing the raw.githubusercontent.com layout from the shared files
# ---------------------------------------------------------------------------------------------


class _Server:
    def __init__(self, data_dir: Path, mode: str = "ok", fail_times: int = 2):
        self.hits: Counter[str] = Counter()
        self.mode = mode
        routes = {f"/{e.repo}/{e.commit}/{e.repo_path}": e for e in MANIFEST}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                return

            def do_GET(self):
                outer.hits[self.path] += 1
                e = routes.get(self.path)
                if e is None or outer.mode == "404":
                    self.send_error(404)
                    return
                if outer.mode == "500" or (outer.mode == "flaky" and outer.hits[self.path] <= fail_times):
                    self.send_error(500)
                    return
                if outer.mode == "drop" and outer.hits[self.path] == 1:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # no response at all
                    return
                body = (data_dir / e.dataset / e.path).read_bytes()
                if e.gzip:  # upstream serves the plain file
                    body = gzip.decompress(body)
                if outer.mode == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _selected(datasets):
    return [e for e in MANIFEST if e.dataset in datasets]


def _no_leftovers(root: Path):
    parts = [p for p in root.rglob("*") if p.name.endswith(".part")]
    assert parts == [], f"temporary files left behind: {parts}"


# (2) download a subset; files equal the originals ---------------------------------------------


def test_fetch_downloads_small_datasets_identical(data_dir: Path, tmp_path: Path):
    seen: list[tuple[str, int, int]] = []
    with _Server(data_dir) as srv:
        got = fetch(tmp_path, base_url=srv.url, datasets=SMALL, progress=lambda *a: seen.append(a), **FAST)
    entries = _selected(SMALL)
    assert sorted(got) == sorted(tmp_path / e.dataset / e.path for e in entries)
    for e in entries:
        assert (tmp_path / e.dataset / e.path).read_bytes() == (data_dir / e.dataset / e.path).read_bytes(), e.name
    assert sum(srv.hits.values()) == len(entries)
    # progress: final call per file reports the full size
    last = {name: (done, total) for name, done, total in seen}
    assert last == {e.name: (e.size, e.size) for e in entries}
    # a short provenance note per dataset, nothing derived downloaded
    for ds in SMALL:
        note = (tmp_path / ds / "PROVENANCE.md").read_text()
        assert "commit" in note and "licence" in note
    assert not list(tmp_path.rglob("derived_*"))
    _no_leftovers(tmp_path)


def test_fetch_gzips_plain_upstream_files(data_dir: Path, tmp_path: Path):
    with _Server(data_dir) as srv:
        fetch(tmp_path, base_url=srv.url, datasets=[GZ_DATASET], **FAST)
    for e in _selected([GZ_DATASET]):
        out = tmp_path / e.dataset / e.path
        orig = data_dir / e.dataset / e.path
        assert gzip.decompress(out.read_bytes()) == gzip.decompress(orig.read_bytes()), e.name
        if shutil.which("gzip"):  # GNU gzip -9n reproduces the shared bytes exactly
            assert out.read_bytes() == orig.read_bytes(), e.name
        assert sd.is_present(out, e)
    _no_leftovers(tmp_path)


def test_fetch_gzip_fallback_without_gzip_binary(data_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sd.shutil, "which", lambda name: None)
    okx = next(e for e in MANIFEST if e.path == "raw/OKX.ws.1.0.gz")
    with _Server(data_dir) as srv:
        fetch(tmp_path, base_url=srv.url, datasets=[GZ_DATASET], **FAST)
        out = tmp_path / okx.dataset / okx.path
        assert gzip.decompress(out.read_bytes()) == gzip.decompress((data_dir / okx.dataset / okx.path).read_bytes())
        assert sd.is_present(out, okx)
        before = sum(srv.hits.values())
        assert fetch(tmp_path, base_url=srv.url, datasets=[GZ_DATASET], **FAST) == []  # content-verified copy is kept
        assert sum(srv.hits.values()) == before


# (3) corrupted bytes -> SampleDataError, nothing left behind ----------------------------------


def test_corrupt_download_raises_and_leaves_nothing(data_dir: Path, tmp_path: Path):
    with _Server(data_dir, mode="corrupt") as srv:
        with pytest.raises(
            SampleDataError, match=r"hyperliquid-btc-l2book-2025-01-26/raw/btcusd_20250126\.gz: sha256 mismatch"
        ):
            fetch(tmp_path, base_url=srv.url, datasets=["hyperliquid-btc-l2book-2025-01-26"], **FAST)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert sum(srv.hits.values()) == 1  # a checksum mismatch is not retried


def test_corrupt_gzip_upstream_raises_and_leaves_nothing(data_dir: Path, tmp_path: Path):
    with _Server(data_dir, mode="corrupt") as srv:
        with pytest.raises(SampleDataError, match="sha256 mismatch"):
            fetch(tmp_path, base_url=srv.url, datasets=[GZ_DATASET], **FAST)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_existing_corrupt_file_is_replaced(data_dir: Path, tmp_path: Path):
    e = next(e for e in MANIFEST if e.dataset == "hyperliquid-btc-l2book-2025-01-26")
    target = tmp_path / e.dataset / e.path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the recording")
    with _Server(data_dir) as srv:
        assert fetch(tmp_path, base_url=srv.url, datasets=[e.dataset], **FAST) == [target]
    assert sd.sha256_file(target) == e.sha256


# (4) transient failures are retried ------------------------------------------------------------


def test_http_500_twice_then_success_is_retried(data_dir: Path, tmp_path: Path):
    e = next(e for e in MANIFEST if e.dataset == "hyperliquid-btc-l2book-2025-01-26")
    with _Server(data_dir, mode="flaky", fail_times=2) as srv:
        got = fetch(tmp_path, base_url=srv.url, datasets=[e.dataset], retries=3, **FAST)
    assert got == [tmp_path / e.dataset / e.path]
    assert srv.hits[f"/{e.repo}/{e.commit}/{e.repo_path}"] == 3
    assert sd.sha256_file(got[0]) == e.sha256


def test_dropped_connection_is_retried(data_dir: Path, tmp_path: Path):
    e = next(e for e in MANIFEST if e.dataset == "hyperliquid-btc-l2book-2025-01-26")
    with _Server(data_dir, mode="drop") as srv:
        got = fetch(tmp_path, base_url=srv.url, datasets=[e.dataset], **FAST)
    assert srv.hits[f"/{e.repo}/{e.commit}/{e.repo_path}"] == 2
    assert sd.sha256_file(got[0]) == e.sha256


def test_persistent_500_gives_up_after_retries(data_dir: Path, tmp_path: Path):
    with _Server(data_dir, mode="500") as srv:
        with pytest.raises(SampleDataError, match="giving up after 3 attempts.*HTTP 500"):
            fetch(tmp_path, base_url=srv.url, datasets=["hyperliquid-btc-l2book-2025-01-26"], retries=2, **FAST)
    assert sum(srv.hits.values()) == 3
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_http_404_is_not_retried(data_dir: Path, tmp_path: Path):
    with _Server(data_dir, mode="404") as srv:
        with pytest.raises(SampleDataError, match="HTTP 404"):
            fetch(tmp_path, base_url=srv.url, datasets=["hyperliquid-btc-l2book-2025-01-26"], **FAST)
    assert sum(srv.hits.values()) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# (5) nothing is downloaded again ---------------------------------------------------------------


def test_rerun_with_files_present_downloads_nothing(data_dir: Path, tmp_path: Path):
    with _Server(data_dir) as srv:
        first = fetch(tmp_path, base_url=srv.url, datasets=SMALL + [GZ_DATASET], **FAST)
        assert len(first) == len(_selected(SMALL + [GZ_DATASET]))
        hits = sum(srv.hits.values())
        mtimes = {p: p.stat().st_mtime_ns for p in first}
        calls: list = []
        assert (
            fetch(
                tmp_path, base_url=srv.url, datasets=SMALL + [GZ_DATASET], progress=lambda *a: calls.append(a), **FAST
            )
            == []
        )
        assert sum(srv.hits.values()) == hits
        assert calls == []
        assert {p: p.stat().st_mtime_ns for p in first} == mtimes


def test_derived_files_are_rebuilt_from_raw_like_the_shared_ones(tmp_path, data_dir):
    """After `sample-data` fetched the raw Binance files, the top-25 books and trades CSVs are
    derived by our own replay; they equal the shared derived files."""
    import shutil

    import numpy as np

    from depthpilot_cli.data import _derive_binance
    from features.io import load_book_snapshots_csv, load_trades_csv

    name = "binance-spot-btcusdt-2024-08-08-l2diff"
    ds = tmp_path / name
    shutil.copytree(data_dir / name / "raw", ds / "raw")
    _derive_binance(ds)
    ts, bids, asks = load_book_snapshots_csv(ds / "derived_book_snapshot_25.csv.gz")
    ts0, bids0, asks0 = load_book_snapshots_csv(data_dir / name / "derived_book_snapshot_25.csv.gz")
    np.testing.assert_array_equal(ts, ts0)
    np.testing.assert_array_equal(bids, bids0)
    np.testing.assert_array_equal(asks, asks0)
    tr, tr0 = load_trades_csv(ds / "derived_trades.csv.gz"), load_trades_csv(data_dir / name / "derived_trades.csv.gz")
    for k in ("ts", "price", "size", "side"):
        np.testing.assert_array_equal(tr[k], tr0[k])


def test_failed_fetch_leaves_no_empty_directory(data_dir: Path, tmp_path: Path):
    dest = tmp_path / "new" / "data"
    with _Server(data_dir, mode="404") as srv:
        with pytest.raises(SampleDataError, match="HTTP 404"):
            fetch(dest, base_url=srv.url, datasets=["hyperliquid-btc-l2book-2025-01-26"], **FAST)
    assert not (tmp_path / "new").exists(), list(tmp_path.rglob("*"))
    assert tmp_path.exists()  # what existed before stays
