"""The Binance data path on recordings it has never seen: market, symbol and order from the
data (random file names, reversed order, a continuation file without its own snapshot), a
COIN-M recording (SYNTHESISED from the real USD-M one: see venue_data.py), old snapshots,
and one-line errors for bad files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pytest

from collector.exchanges.binance import (
    KIND_BOOK_TICKER,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    BinanceDiffBook,
    BinanceFormatError,
    SyncResult,
    iter_recording,
    plan_streams,
)
from collector.replay import BinanceRecordingReplay
from depthpilot import messages as m
from tests.collector.venue_data import COINM_SYMBOL, SPOT, USDM, random_copies, raw_files, synth_coinm


def _tickers(files: list[Path]) -> dict[int, tuple[float, float, float, float]]:
    """bookTicker values by update id, parsed independently of the module under test."""
    out = {}
    for f in files:
        with gzip.open(f, "rb") as fh:
            for line in fh:
                if b"@bookTicker" in line:
                    t = orjson.loads(line[line.index(b" ") + 1 :])["data"]
                    out[int(t["u"])] = (float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"]))
    return out


def _check_bbo(files: list[Path]) -> tuple[int, BinanceDiffBook]:
    """Replay the stream of ``files`` (as the reader orders them) through one builder; at every
    bookTicker whose update id equals the book's, best bid/ask price AND size must match.
    Returns the number of comparisons."""
    (stream,) = plan_streams(files)
    tick = _tickers(files)
    b = BinanceDiffBook("auto")
    pending: dict[int, tuple] = {}
    comparisons = mismatches = 0
    for rec in iter_recording([i.path for i in stream]):
        if rec.kind == KIND_DEPTH:
            if b.on_diff(rec.msg) is SyncResult.APPLIED:
                want = pending.pop(b.last_update_id, None)
                if want is not None:
                    comparisons += 1
                    mismatches += (*b.book.best_bid(), *b.book.best_ask()) != want
                if len(pending) > 10_000:
                    pending = {u: v for u, v in pending.items() if u > b.last_update_id}
        elif rec.kind == KIND_SNAPSHOT:
            b.on_snapshot_msg(rec.msg)
        elif rec.kind == KIND_BOOK_TICKER:
            want = tick[rec.msg.u]
            if b.synced and rec.msg.u == b.last_update_id:
                comparisons += 1
                mismatches += (*b.book.best_bid(), *b.book.best_ask()) != want
            elif rec.msg.u > b.last_update_id:
                pending[rec.msg.u] = want
    assert mismatches == 0, f"{mismatches} of {comparisons} BBO comparisons differ"
    assert b.gaps == 0 and b.resyncs == 0 and b.crossed == 0 and b.valid
    return comparisons, b


@pytest.mark.parametrize("dataset", [SPOT, USDM])
def test_bbo_equals_book_ticker_across_a_two_file_continuation_with_random_names(dataset, tmp_path):
    """Two files per recording; the second has no REST snapshot and continues the first. The
    copies have random names and are given in reverse order: the reader orders them by content."""
    files = random_copies(raw_files(dataset), tmp_path)
    assert len(files) == 2
    comparisons, b = _check_bbo(files)
    assert comparisons >= 500
    assert b.applied > 6000


def test_bbo_equals_book_ticker_on_a_synthesised_coinm_recording(tmp_path):
    """COIN-M: NO real recording exists here; this one is synthesised from the real USD-M
    recording in the documented COIN-M diff-depth format (see venue_data.py)."""
    files = synth_coinm(tmp_path)
    (stream,) = plan_streams(files)
    assert {(i.market, i.symbol) for i in stream} == {("coinm", COINM_SYMBOL)}
    comparisons, b = _check_bbo(files)
    assert comparisons >= 500 and b.market == "auto" and b._futures is True
    snaps = [x for x in BinanceRecordingReplay(files, depth=5, max_rate_hz=2.0) if isinstance(x, m.BookSnapshot)]
    assert snaps and {s.exchange for s in snaps} == {"binancecoinm"} and {s.symbol for s in snaps} == {COINM_SYMBOL}
    assert {(s.size_unit, s.contract_value) for s in snaps} == {("contracts", 100.0)}
    valid = [s for s in snaps if s.valid]
    assert valid and np.all(valid[-1].bids[:, 1] == np.round(valid[-1].bids[:, 1]))  # whole contracts


@pytest.mark.parametrize("dataset,exchange,unit", [(SPOT, "binance", "base"), (USDM, "binanceusdm", "base")])
def test_market_and_symbol_come_from_the_data_not_the_name(dataset, exchange, unit, tmp_path):
    d = tmp_path / "examples_usdm_ethusdt_20240808"  # a misleading directory name
    files = random_copies(raw_files(dataset), d)
    rep = BinanceRecordingReplay(d, depth=5, max_rate_hz=1.0)
    msgs = list(rep)
    books = [x for x in msgs if isinstance(x, m.BookSnapshot)]
    trades = [x for x in msgs if isinstance(x, m.Trade)]
    assert {(x.exchange, x.symbol) for x in books} == {(exchange, "BTCUSDT")}
    assert {(x.exchange, x.symbol) for x in trades} == {(exchange, "BTCUSDT")}
    assert {x.size_unit for x in books} == {unit}
    assert sum(x.valid for x in books) > 100 and rep.builders["BTCUSDT"].gaps == 0
    assert len(files) == 2


def test_a_directory_mixing_markets_is_split_per_stream(tmp_path):
    d = tmp_path / "mixed"
    random_copies(raw_files(SPOT), d)
    random_copies(raw_files(USDM), d)
    rep = BinanceRecordingReplay(d, depth=5, max_rate_hz=1.0)
    assert sorted(rep.stream_names) == ["binance:BTCUSDT", "binanceusdm:BTCUSDT"]
    books = [x for x in rep if isinstance(x, m.BookSnapshot)]
    by = {ex: [b for b in books if b.exchange == ex] for ex in ("binance", "binanceusdm")}
    assert all(sum(b.valid for b in v) > 100 for v in by.values())
    assert all(b.gaps == 0 for b in rep.builders.values())
    ts = [b.ts_recv for b in books]
    assert ts == sorted(ts)  # merged by receive time
    # the offline loader refuses a mix with one line
    from features.io import RecordingError, load_binance_books

    with pytest.raises(RecordingError, match=r"holds 2 streams \(binance:BTCUSDT, binanceusdm:BTCUSDT\)"):
        load_binance_books(d)


def test_older_snapshot_never_rewinds_a_synced_book():
    files = raw_files(SPOT)
    recs = list(iter_recording(files[0]))
    snap = next(r.msg for r in recs if r.kind == KIND_SNAPSHOT)
    b = BinanceDiffBook("spot")
    b.on_snapshot_msg(snap)
    for r in recs:
        if r.kind == KIND_DEPTH:
            b.on_diff(r.msg)
    before = (b.last_update_id, b.book.best_bid(), b.book.best_ask(), b.applied)
    assert b.synced and b.last_update_id > snap.lastUpdateId
    assert b.on_snapshot_msg(snap) is SyncResult.STALE  # the same (now old) REST snapshot again
    old = msgspec.structs.replace(snap, lastUpdateId=snap.lastUpdateId - 5, bids=[(1.0, 1.0)], asks=[(2e6, 1.0)])
    assert b.on_snapshot_msg(old) is SyncResult.STALE
    assert (b.last_update_id, b.book.best_bid(), b.book.best_ask(), b.applied) == before
    assert b.old_snapshots == 2 and b.resyncs == 0 and b.valid


def test_replay_ignores_a_repeated_old_snapshot_line(tmp_path):
    """The REST snapshot line repeated late in the file: counted, ignored, no gap, no rewind."""
    src = raw_files(SPOT)[0]
    with gzip.open(src, "rb") as fh:
        lines = [ln for _, ln in zip(range(4000), fh) if ln.strip()]
    snap_line = next(ln for ln in lines if b'"lastUpdateId"' in ln)
    late = lines[-1].split(b" ", 1)[0]
    f = tmp_path / "x"
    with gzip.open(f, "wb", compresslevel=1) as fh:
        fh.writelines(lines)
        fh.write(late + b" " + snap_line.split(b" ", 1)[1])
    rep = BinanceRecordingReplay(f, depth=5)
    books = [x for x in rep if isinstance(x, m.BookSnapshot)]
    b = rep.builders["BTCUSDT"]
    assert b.old_snapshots == 1 and b.gaps == 0 and b.resyncs == 0
    assert books[-1].valid and books[-1].seq == b.last_update_id


# --------------------------------------------------------------------------- bad files


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    src = raw_files(SPOT)[0]
    out = {}
    out["corrupt"] = tmp_path / "corrupt.gz"  # (a gzip merely cut short is a crashed recording: read, warned)
    with gzip.open(src, "rb") as fin:
        data = bytearray(gzip.compress(b"".join(fin.readline() for _ in range(300))))
    data[-8] ^= 0xFF  # wrong CRC32 in the trailer
    out["corrupt"].write_bytes(bytes(data))
    out["random"] = tmp_path / "random.gz"
    out["random"].write_bytes(np.random.default_rng(1).bytes(5000))
    out["empty"] = tmp_path / "empty.gz"
    out["empty"].write_bytes(b"")
    out["garbage"] = tmp_path / "garbage.gz"
    with gzip.open(src, "rb") as fin, gzip.open(out["garbage"], "wb") as fout:
        for i, line in enumerate(fin):
            fout.write(line)
            if i == 99:
                fout.write(b"garbage here\n")
            if i == 300:
                break
    return out


EXPECT = {
    "corrupt": r"corrupt\.gz: truncated or corrupt gzip after line \d+",
    "random": r"random\.gz: neither gzip nor a text recording",
    "empty": r"empty\.gz: empty recording",
    "garbage": r"garbage\.gz:101: ",
}


@pytest.mark.parametrize("kind", list(EXPECT))
def test_bad_recording_gives_one_line_naming_file_and_line(kind, tmp_path):
    f = _bad_files(tmp_path)[kind]
    with pytest.raises(BinanceFormatError, match=EXPECT[kind]) as ei:
        list(BinanceRecordingReplay(f, depth=5))
    assert "\n" not in str(ei.value)


def test_features_build_answers_bad_files_with_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    files = _bad_files(tmp_path)
    runner = CliRunner()
    for kind, f in files.items():
        r = runner.invoke(app, ["features", "build", "--books", str(f), "-o", str(tmp_path / "o.parquet")])
        assert r.exit_code == 2, (kind, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.startswith("features build:")]
        assert len(lines) == 1 and "Traceback" not in r.output, (kind, r.output)
    r = runner.invoke(app, ["train", "--source", "books", "--path", str(files["garbage"]), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2 and "train: " in r.output and "garbage.gz:101" in r.output
    r = runner.invoke(
        app, ["features", "build", "--books", str(files["empty"]), "-o", str(tmp_path / "o.parquet"), "--debug"]
    )
    assert r.exit_code != 0 and isinstance(r.exception, ValueError)  # --debug: the exception itself


def test_continuation_file_alone_is_refused_but_with_its_predecessor_builds(tmp_path):
    from features.build import load_books
    from features.io import RecordingError

    first, second = raw_files(SPOT)
    with pytest.raises(RecordingError, match="no book could be built"):
        load_books(second, depth=10)
    ts, bids, asks = load_books([second, first], depth=10)  # any order: the reader orders by content
    ok = np.isfinite(bids[:, 0, 0])
    assert ok.sum() > 6000 and np.all(np.diff(ts[ok]) >= 0)
    assert np.all(bids[ok, 0, 0] < asks[ok, 0, 0])


def test_kline_dump_layout_loads_with_or_without_header_in_ms_or_us(tmp_path):
    from features.io import load_klines

    rows = [
        [
            1733011200000,
            "96466.11",
            "96495.52",
            "96440.00",
            "96440.00",
            "6.6158",
            1733011259999,
            "638250.29",
            3577,
            "3.1",
            "299000.1",
            0,
        ],
        [
            1733011260000,
            "96440.01",
            "96454.62",
            "96422.00",
            "96454.62",
            "7.0222",
            1733011319999,
            "677202.97",
            2318,
            "3.5",
            "337000.2",
            0,
        ],
    ]
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore\n"
    )
    for us in (False, True):
        for with_header in (False, True):
            lines = []
            for r in rows:
                r = list(r)
                if us:
                    r[0], r[6] = r[0] * 1000 + 0, r[6] * 1000 + 999
                lines.append(",".join(map(str, r)))
            f = tmp_path / f"k_{us}_{with_header}.csv"
            f.write_text((header if with_header else "") + "\n".join(lines) + "\n")
            k = load_klines(f)
            assert k["close"].tolist() == [96440.0, 96454.62]
            assert k["trades"].tolist() == [3577.0, 2318.0]
            # close time in ns: the last instant of the candle, whatever the unit
            assert k["ts"][0] // 1_000_000 == 1733011259999
    from depthpilot.paths import data_dir

    named = data_dir() / "binance-spot-btcusdt-klines-1m-2024-12" / "BTCUSDT_1m.csv.gz"
    if named.is_file() or os.environ.get("CI") == "true":
        assert len(load_klines(named)["ts"]) == 41_761  # the named-column layout still loads


def test_book_snapshot_size_unit_is_additive_and_old_messages_still_decode():
    s = m.BookSnapshot(
        exchange="binancecoinm",
        symbol=COINM_SYMBOL,
        ts_exchange=1,
        ts_recv=2,
        seq=3,
        bids=np.array([[100.0, 5.0]]),
        asks=np.array([[101.0, 7.0]]),
        size_unit="contracts",
        contract_value=100.0,
    )
    back = m.decode(m.encode(s))
    assert (back.size_unit, back.contract_value) == ("contracts", 100.0)
    assert m.from_json(m.to_json(s)).size_unit == "contracts"
    raw = msgspec.msgpack.decode(m.encode(s))  # a message as written before the fields existed
    del raw["size_unit"], raw["contract_value"]
    old = m.decode(msgspec.msgpack.encode(raw))
    assert isinstance(old, m.BookSnapshot) and (old.size_unit, old.contract_value) == ("base", 0.0)
    assert old.v == s.v and np.array_equal(old.bids, s.bids) and np.array_equal(old.asks, s.asks)


def test_a_rest_snapshot_that_cannot_be_attributed_is_refused_with_one_line(tmp_path):
    f = tmp_path / "two_symbols"
    depth = '{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"%s","U":6,"u":7,"b":[],"a":[]}}'
    with gzip.open(f, "wb") as fh:
        fh.write(b"1723161253937085768 " + (depth % ("btcusdt", "BTCUSDT")).encode() + b"\n")
        fh.write(b"1723161253937085769 " + (depth % ("ethusdt", "ETHUSDT")).encode() + b"\n")
        fh.write(b'1723161253937085770 {"lastUpdateId":5,"bids":[],"asks":[]}\n')
    with pytest.raises(BinanceFormatError, match=r"two_symbols:3: REST snapshot names no symbol .* BTCUSDT, ETHUSDT"):
        list(iter_recording(f))


def test_feed_supervision_problems_are_one_line_each():
    from collector.supervision import FeedSupervision

    s = FeedSupervision(down_limit_s=10)
    s.started("a", 0)
    s.started("b", 0)
    assert s.problems(5 * 10**9) == []
    s.ok("a", 8 * 10**9)
    s.failed("b", "connect: OSError: refused")
    assert s.problems(15 * 10**9) == [
        "feed b down: no usable data for 15s (1 failures; last: connect: OSError: refused)"
    ]
    s.ok("b", 15 * 10**9)
    s.died("a", "RuntimeError: boom")
    s.fail("replay failed: x.gz:3: bad line")
    assert s.problems(16 * 10**9) == ["replay failed: x.gz:3: bad line", "feed a died: RuntimeError: boom"]
    assert s.stats() == {"feed_restarts": 1.0, "feeds_dead": 1.0}
