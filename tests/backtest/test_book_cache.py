"""The catalogue of rebuilt books (backtest.book_cache): a hit gives back the cold load's arrays
bit for bit without running the builders; changed inputs or builders miss; a damaged entry is
never used; an unwritable cache, the size cap and the off switches behave."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import backtest.data as D
from backtest import book_cache as bc
from backtest.data import Books, load_recording
from tests.backtest.conftest import USDM
from tests.trader.helpers import need_data

CLIP = "cryptofeed-l2-clips-2021-2022/raw/BYBIT.ws.26.0.gz"
CSV = "hyperliquid-btc-l2book-2025-01-26/derived_book_snapshot_20.csv"  # plain text: appendable
OLD_NS = 1_600_000_000 * 10**9  # an input timestamp far from "racy"

# every branch of load_recording: raw Binance dir (batch rebuild), Tardis CSV export, cryptofeed
# clip, Bybit archive
INPUTS = [
    (USDM, 250),
    (f"{USDM}/derived_book_snapshot_25.csv.gz", 250),
    (CLIP, 25),
    ("tardis-format-fixtures/xrpusdt-ob500.data.zip", 50),
]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DEPTHPILOT_CACHE_DIR", str(root))
    monkeypatch.delenv("DEPTHPILOT_BOOK_CACHE", raising=False)
    monkeypatch.delenv("DEPTHPILOT_BOOK_CACHE_MB", raising=False)
    return root


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every run of the loader's builders (backtest.data._rebuild), by input path."""
    calls: list[Path] = []
    real = D._rebuild

    def counting(p: Path, depth: int) -> Books:
        calls.append(p)
        return real(p, depth)

    monkeypatch.setattr(D, "_rebuild", counting)
    return calls


def assert_same(a: Books, b: Books) -> None:
    assert (a.exchange, a.symbol, a.source) == (b.exchange, b.symbol, b.source)
    for name in ("ts", "valid", "bids", "asks"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        assert x.tobytes() == y.tobytes(), name  # bit for bit, NaN padding included


def entries(root: Path) -> list[Path]:
    return sorted(e for e, _, _ in bc.entries(root / "books"))


def meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def copy_old(src: Path, dst: Path) -> Path:
    """A copy with an old timestamp (a fresh file is not stored: see test_racy_input...)."""
    shutil.copyfile(src, dst)
    os.utime(dst, ns=(OLD_NS, OLD_NS))
    return dst


@pytest.mark.parametrize(("rel", "depth"), INPUTS, ids=["raw-usdm", "tardis-csv", "clip", "bybit-archive"])
def test_miss_then_hit_is_bit_for_bit(rel, depth, cache, builds, monkeypatch):
    path = need_data(rel)
    cold = load_recording(path, depth, cache=False)
    assert len(builds) == 1 and not cache.exists()  # cache=False neither reads nor writes
    rebuilds = []
    if rel == USDM:  # the raw recording goes through the numba batch rebuild: count it too
        import collector.binance_batch as B

        real = B.rebuild_recording
        monkeypatch.setattr(B, "rebuild_recording", lambda *a: rebuilds.append(a) or real(*a))
    first = load_recording(path, depth)
    assert len(builds) == 2 and len(rebuilds) == (rel == USDM)
    [entry] = entries(cache)
    assert meta(entry)["hits"] == 0 and meta(entry)["depth"] == depth
    hit = load_recording(path, depth)
    assert len(builds) == 2 and len(rebuilds) == (rel == USDM)  # the builders did not run
    assert meta(entry)["hits"] == 1
    assert_same(first, cold)
    assert_same(hit, cold)
    hit.bids[0] = -1.0  # copy-on-write: the caller may scribble, the entry stays as stored
    assert_same(load_recording(path, depth), cold)
    assert meta(entry)["hits"] == 2 and len(builds) == 2


def test_the_key_is_the_depth_and_the_files_as_read(tmp_path, cache, builds):
    path = need_data(CLIP)
    load_recording(path, 10)
    load_recording(path, 5)
    assert len(entries(cache)) == 2 and len(builds) == 2  # the depth is in the key
    spelled = path.parent / ".." / "raw" / path.name  # the same file spelled otherwise: a hit
    assert load_recording(spelled, 10).source == str(spelled) and len(builds) == 2
    # a link under another name: the loader tells a clip by its name, so this is another input
    link = tmp_path / "renamed.gz"
    link.symlink_to(path)
    with contextlib.suppress(D.BacktestInputError):
        load_recording(link, 10)
    assert len(builds) == 3


def test_changed_added_or_removed_inputs_miss(tmp_path, cache, builds):
    rec = tmp_path / "rec"
    rec.mkdir()
    raw = sorted((need_data(USDM) / "raw").iterdir())
    for f in raw:
        copy_old(f, rec / f.name)
    full = load_recording(rec, 25)
    assert len(builds) == 1
    assert_same(load_recording(rec, 25), full) and len(builds) == 1
    os.utime(rec / raw[0].name, ns=(OLD_NS + 10**9, OLD_NS + 10**9))  # touched: same bytes, new mtime
    assert_same(load_recording(rec, 25), full)
    assert len(builds) == 2
    (rec / raw[1].name).rename(tmp_path / "aside")  # a file removed: fewer books
    part = load_recording(rec, 25)
    assert len(builds) == 3 and len(part) < len(full)
    (tmp_path / "aside").rename(rec / raw[1].name)  # back as it was: the old entry answers
    assert_same(load_recording(rec, 25), full) and len(builds) == 3
    copy_old(rec / raw[1].name, rec / "zz-more.gz")  # a file added (the second day again): a miss
    load_recording(rec, 25)
    assert len(builds) == 4


def test_appended_copy_misses_and_a_racy_input_is_not_stored(tmp_path, cache, builds):
    src = need_data(CSV)
    f = copy_old(src, tmp_path / "book.csv")
    before = load_recording(f, 20)
    load_recording(f, 20)
    assert len(builds) == 1
    with f.open("a") as fh:  # one more row (the last one again): size and mtime change
        fh.write(src.read_text().splitlines()[-1] + "\n")
    racy = bc.stats["racy"]
    after = load_recording(f, 20)
    assert len(builds) == 2 and len(after) == len(before) + 1
    # modified just now: a same-size rewrite within the clock's granularity could not be told
    # apart, so it is not stored
    assert bc.stats["racy"] == racy + 1
    load_recording(f, 20)
    assert len(builds) == 3
    os.utime(f, ns=(OLD_NS, OLD_NS))
    load_recording(f, 20)
    assert_same(load_recording(f, 20), after) and len(builds) == 4


def _truncate(entry: Path) -> None:
    p = entry / "bids.npy"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bad_meta(entry: Path) -> None:
    (entry / "meta.json").write_text('{"format": 1, "depth"')


def _shape_mismatch(entry: Path) -> None:
    a = np.load(entry / "asks.npy")
    np.save(entry / "asks.npy", a[:-1])


def _no_meta(entry: Path) -> None:
    (entry / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_truncate, _bad_meta, _shape_mismatch, _no_meta])
def test_a_damaged_entry_is_warned_deleted_and_rebuilt(damage, cache, builds, caplog):
    path = need_data(CLIP)
    cold = load_recording(path, 25, cache=False)
    load_recording(path, 25)
    [entry] = entries(cache)
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="backtest.book_cache"):
        again = load_recording(path, 25)
    assert_same(again, cold)
    assert len(builds) == 3  # cold, store, rebuild after the damage
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(entry) in warned[0] and "\n" not in warned[0], warned
    assert entries(cache) == [entry] and meta(entry)["hits"] == 0  # stored again, whole
    assert_same(load_recording(path, 25), cold) and len(builds) == 3


def test_an_unwritable_cache_carries_on(tmp_path, monkeypatch, builds, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DEPTHPILOT_CACHE_DIR", str(blocker / "cache"))
    path = need_data(CLIP)
    cold = load_recording(path, 25, cache=False)
    with caplog.at_level(logging.WARNING, logger="backtest.book_cache"):
        got = load_recording(path, 25)
        load_recording(path, 25)
    assert_same(got, cold)
    assert len(builds) == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "not writable" in warned[0] and str(blocker) in warned[0], warned


def test_the_size_cap_evicts_the_least_recently_used(cache, builds, monkeypatch):
    path = need_data(CLIP)
    load_recording(path, 5)  # A
    load_recording(path, 10)  # B
    (a, sa, _), (b, sb, _) = sorted(bc.entries(cache / "books"), key=lambda e: e[1])
    os.utime(a / "meta.json", ns=(OLD_NS, OLD_NS))  # A created first ...
    os.utime(b / "meta.json", ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    load_recording(path, 5)  # ... but used last (the hit touches it)
    assert len(builds) == 2
    c_bytes = sum(x.nbytes for x in (lambda k: (k.ts, k.valid, k.bids, k.asks))(load_recording(path, 25, cache=False)))
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE_MB", str((sa + c_bytes + 16384) / 2**20))  # A + C fit, not B too
    load_recording(path, 25)  # C
    left = {e for e, _, _ in bc.entries(cache / "books")}
    assert a in left and b not in left and len(left) == 2
    assert sum(s for _, s, _ in bc.entries(cache / "books")) <= bc.cap_bytes()
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE_MB", str(sa / 2 / 2**20))  # smaller than any entry
    n = bc.stats["too_big"]
    load_recording(path, 20)
    assert bc.stats["too_big"] == n + 1 and len(bc.entries(cache / "books")) == 2  # not stored


def test_a_writer_that_loses_the_race_leaves_the_winner(cache, builds):
    path = need_data(CLIP)
    books = load_recording(path, 25)
    [entry] = entries(cache)
    before = (entry / "bids.npy").stat().st_mtime_ns
    lost = bc.stats["lost_race"]
    files = D._input_files(path)
    assert not bc.store(entry, books, files, bc.file_stats(files), 25)  # a second writer, same key
    assert bc.stats["lost_race"] == lost + 1 and (entry / "bids.npy").stat().st_mtime_ns == before
    assert [d.name for d in (cache / "books").iterdir()] == [entry.name]  # its temporary copy is gone


def test_a_bad_size_cap_is_one_warning_and_the_default(monkeypatch, caplog):
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE_MB", "lots")
    with caplog.at_level(logging.WARNING, logger="backtest.book_cache"):
        assert bc.cap_bytes() == 4096 * 2**20
    assert "DEPTHPILOT_BOOK_CACHE_MB='lots'" in caplog.text
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE_MB", "0.5")
    assert bc.cap_bytes() == 2**19


def test_the_off_switch_neither_reads_nor_writes(cache, builds, monkeypatch):
    path = need_data(CLIP)
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE", "0")
    load_recording(path, 25)
    load_recording(path, 25)
    assert len(builds) == 2 and not cache.exists()
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE", "1")
    load_recording(path, 25)
    [entry] = entries(cache)
    monkeypatch.setenv("DEPTHPILOT_BOOK_CACHE", "off")
    load_recording(path, 25)
    load_recording(path, 25, cache=True)  # the environment wins over the default argument
    monkeypatch.delenv("DEPTHPILOT_BOOK_CACHE")
    load_recording(path, 25, cache=False)
    assert len(builds) == 6 and meta(entry)["hits"] == 0 and entries(cache) == [entry]


def test_no_book_cache_option_and_cache_commands(cache, tmp_path):
    from depthpilot_cli.main import app

    clip = str(need_data(CLIP))
    args = ["backtest", clip, "--random-draws", "1", "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(app, [*args, "--no-book-cache"])
    assert r.exit_code == 0, r.output
    assert not cache.exists()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    [entry] = entries(cache)
    r = CliRunner().invoke(app, [*args, "--no-book-cache"])
    assert r.exit_code == 0 and meta(entry)["hits"] == 0
    r = CliRunner().invoke(app, ["cache", "info"])
    assert r.exit_code == 0 and str(cache / "books") in r.output and "entries: 1," in r.output, r.output
    r = CliRunner().invoke(app, ["cache", "clear"])
    assert r.exit_code == 0 and "removed 1 entries" in r.output, r.output
    assert entries(cache) == []


def test_a_changed_builder_changes_the_key(tmp_path, cache, builds, monkeypatch):
    fp = bc.code_fingerprint
    path = need_data(CLIP)
    load_recording(path, 25)
    load_recording(path, 25)
    assert len(builds) == 1
    monkeypatch.setattr(bc, "code_fingerprint", lambda: "another build of the builders")
    load_recording(path, 25)
    assert len(builds) == 2 and len(entries(cache)) == 2
    # the fingerprint: every builder module's source bytes
    repo = tmp_path / "repo"
    for rel in ("collector", "backtest/data.py", "backtest/book_cache.py", "features/io.py"):
        src = bc.REPO / rel
        if src.is_dir():
            shutil.copytree(src, repo / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, repo / rel)
    assert fp.__wrapped__(repo) == fp()  # what the key uses
    kernel = repo / "collector" / "book_kernel.py"
    kernel.write_text(kernel.read_text() + "\n# changed\n")
    assert fp.__wrapped__(repo) != fp()
    (repo / "collector" / "exchanges" / "new_venue.py").write_text("")
    kernel.write_text((bc.REPO / "collector" / "book_kernel.py").read_text())
    assert fp.__wrapped__(repo) != fp()  # an added builder module
