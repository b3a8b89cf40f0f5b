"""Binance diff-depth sync (collector.exchanges.binance) on the real spot and USD-M recordings."""

from __future__ import annotations

import gzip
import os
from functools import lru_cache

import orjson
import pytest

from collector.exchanges.binance import (
    KIND_BOOK_TICKER,
    KIND_DEPTH,
    KIND_OTHER,
    KIND_SNAPSHOT,
    KIND_TRADE,
    BinanceDiffBook,
    BinanceFormatError,
    DepthDiff,
    SyncResult,
    iter_recording,
    normalise_local_ts,
    parse_line,
    parse_stream_message,
)
from depthpilot.paths import data_dir

DATASETS = {
    "spot": "binance-spot-btcusdt-2024-08-08-l2diff",
    "usdm": "binance-usdm-btcusdt-2024-07-18-l2diff",
}


def raw_dir(market: str):
    d = data_dir() / DATASETS[market] / "raw"
    if not d.is_dir():
        msg = f"dataset {DATASETS[market]} not found under {data_dir()} (set DEPTHPILOT_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)  # CI must not pass by skipping
        pytest.skip(msg)
    return d


@lru_cache(maxsize=None)
def _lines(market: str) -> tuple[bytes, ...]:
    out = []
    for f in sorted(raw_dir(market).glob("*.gz")):
        with gzip.open(f, "rb") as fh:
            out.extend(line for line in fh if line.strip())
    return tuple(out)


@lru_cache(maxsize=None)
def _records(market: str):
    return tuple(iter_recording(raw_dir(market)))


def _diffs_and_snapshot(market: str):
    recs = _records(market)
    snap = next(r.msg for r in recs if r.kind == KIND_SNAPSHOT)
    diffs = [r.msg for r in recs if r.kind == KIND_DEPTH]
    return snap, diffs


def _synced_builder(market: str):
    """Builder fed with the snapshot and all diffs up to the snapshot line (+ the rest iterator)."""
    snap, diffs = _diffs_and_snapshot(market)
    b = BinanceDiffBook(market)
    b.on_snapshot_msg(snap)
    return b, snap, diffs


# --------------------------------------------------------------------------- the must-show test


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_rebuilt_bbo_equals_exchange_book_ticker(market):
    """Rebuild from snapshot + diffs; at every update id where a bookTicker coincides with the
    book's last applied update id, best bid/ask price AND size must equal the ticker's.

    Tickers are parsed independently here (orjson + float(str)), not by the module under test.
    """
    lines = _lines(market)
    b = BinanceDiffBook(market)
    pending: dict[int, tuple[float, float, float, float]] = {}
    comparisons = mismatches = crossed_after_diff = 0
    results: dict[SyncResult, int] = {}
    for line in lines:
        rec = parse_line(line)
        if rec.kind == KIND_DEPTH:
            res = b.on_diff(rec.msg)
            results[res] = results.get(res, 0) + 1
            if res is SyncResult.APPLIED:
                if b.book.is_crossed():
                    crossed_after_diff += 1
                want = pending.pop(b.last_update_id, None)
                if want is not None:
                    comparisons += 1
                    got = (*b.book.best_bid(), *b.book.best_ask())
                    mismatches += got != want
                if len(pending) > 10_000:  # tickers older than the book can never match any more
                    pending = {u: v for u, v in pending.items() if u > b.last_update_id}
        elif rec.kind == KIND_SNAPSHOT:
            b.on_snapshot_msg(rec.msg)
        elif rec.kind == KIND_BOOK_TICKER:
            t = orjson.loads(line[line.index(b" ") + 1 :])["data"]
            want = (float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"]))
            u = int(t["u"])
            if b.synced and u == b.last_update_id:
                comparisons += 1
                got = (*b.book.best_bid(), *b.book.best_ask())
                mismatches += got != want
            elif u > b.last_update_id:
                pending[u] = want  # the diff ending at u may arrive after the ticker
    assert mismatches == 0, f"{mismatches} of {comparisons} BBO comparisons differ"
    assert comparisons >= 500, f"only {comparisons} comparisons: the test would be too weak"
    assert crossed_after_diff == 0
    assert b.crossed == 0
    assert b.gaps == 0
    assert b.resyncs == 0
    assert b.applied > 6000 and b.dropped >= 1
    assert results.get(SyncResult.GAP, 0) == 0
    assert b.valid and b.reason == ""


# --------------------------------------------------------------------------- gaps and resync


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_removed_diff_is_a_gap_and_a_fresh_snapshot_resyncs(market):
    b, snap, diffs = _synced_builder(market)
    ref, _, _ = _synced_builder(market)
    # feed both through the first 1000 diffs
    for d in diffs[:1000]:
        b.on_diff(d)
        ref.on_diff(d)
    assert b.valid and ref.valid
    drop_at = 1000
    ref.on_diff(diffs[drop_at])  # reference sees it, b does not
    res = b.on_diff(diffs[drop_at + 1])
    ref.on_diff(diffs[drop_at + 1])
    assert res is SyncResult.GAP
    assert b.gaps == 1 and b.needs_snapshot and not b.valid
    assert "sequence break" in b.reason and "resync" in b.reason
    applied_before = b.applied
    # the book stays invalid, diffs are buffered, nothing is applied until a new snapshot
    for d in diffs[drop_at + 2 : drop_at + 200]:
        assert b.on_diff(d) is SyncResult.BUFFERED
        ref.on_diff(d)
        assert not b.valid
    assert b.applied == applied_before
    # a "REST snapshot" taken from the reference book at a point the buffered diffs pass
    resnap_bids = list(ref.book.bids.items())
    resnap_asks = list(ref.book.asks.items())
    resnap_id = ref.last_update_id
    for d in diffs[drop_at + 200 : drop_at + 220]:  # arrive while the snapshot request is in flight
        assert b.on_diff(d) is SyncResult.BUFFERED
        ref.on_diff(d)
    assert b.on_snapshot(resnap_id, resnap_bids, resnap_asks) is SyncResult.APPLIED
    assert b.valid and b.resyncs == 1 and b.snapshots == 2
    assert b.last_update_id == ref.last_update_id
    assert b.book.bids == ref.book.bids and b.book.asks == ref.book.asks
    for d in diffs[drop_at + 220 :]:
        assert b.on_diff(d) is ref.on_diff(d)
    assert b.book.bids == ref.book.bids and b.book.asks == ref.book.asks
    assert b.gaps == 1 and b.valid


def test_gap_without_a_new_snapshot_keeps_the_book_invalid():
    b, snap, diffs = _synced_builder("spot")
    for d in diffs[:500]:
        b.on_diff(d)
    results = [b.on_diff(d) for d in diffs[501:]]
    assert results[0] is SyncResult.GAP
    assert all(r is SyncResult.BUFFERED for r in results[1:])
    assert not b.valid and b.needs_snapshot and b.gaps == 1


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_crossed_book_is_flagged_invalid_with_reason(market):
    b, snap, diffs = _synced_builder(market)
    for d in diffs[:300]:
        b.on_diff(d)
    assert b.valid
    last = b.last_update_id
    best_ask = b.book.best_ask()[0]
    bad_bid = best_ask + 1.0
    kw = {"pu": last} if market == "usdm" else {}
    crossing = DepthDiff(U=last + 1, u=last + 2, b=[(bad_bid, 1.0)], a=[], **kw)
    assert b.on_diff(crossing) is SyncResult.APPLIED
    assert b.book.is_crossed()
    assert not b.valid
    assert b.reason.startswith("crossed") and str(bad_bid) in b.reason
    assert b.crossed == 1
    kw = {"pu": last + 2} if market == "usdm" else {}
    fix = DepthDiff(U=last + 3, u=last + 3, b=[(bad_bid, 0.0)], a=[], **kw)
    assert b.on_diff(fix) is SyncResult.APPLIED
    assert b.valid and b.reason == "" and b.crossed == 1


# --------------------------------------------------------------------------- rule details (synthetic ids)


def _snap(b: BinanceDiffBook, last_id: int = 100):
    return b.on_snapshot(last_id, [("10.0", "1")], [("11.0", "1")])


def test_spot_sync_rule_boundaries():
    b = BinanceDiffBook("spot")
    assert b.on_diff(DepthDiff(U=90, u=95)) is SyncResult.BUFFERED  # before the snapshot
    assert _snap(b) is SyncResult.BUFFERED  # buffered diff was stale; waiting for the first
    assert b.dropped == 1
    assert b.on_diff(DepthDiff(U=96, u=100)) is SyncResult.STALE  # u <= L
    assert b.on_diff(DepthDiff(U=101, u=105, b=[(10.5, 2.0)])) is SyncResult.APPLIED  # U == L+1
    assert b.book.best_bid() == (10.5, 2.0)
    assert b.on_diff(DepthDiff(U=106, u=106)) is SyncResult.APPLIED
    assert b.on_diff(DepthDiff(U=103, u=106)) is SyncResult.STALE  # duplicate/old: not a gap
    assert b.on_diff(DepthDiff(U=108, u=110)) is SyncResult.GAP  # 107 missing
    assert b.last_gap.expected == 107 and b.last_gap.got == 108


def test_spot_first_diff_must_straddle_snapshot():
    b = BinanceDiffBook("spot")
    _snap(b, 100)
    assert b.on_diff(DepthDiff(U=102, u=110)) is SyncResult.GAP  # 101 never seen
    assert b.last_gap.after_snapshot and "does not straddle" in b.reason
    # a newer snapshot bridges to the buffered diff
    assert _snap(b, 105) is SyncResult.APPLIED
    assert b.valid and b.last_update_id == 110


def test_usdm_sync_rule_boundaries():
    b = BinanceDiffBook("usdm")
    _snap(b, 100)
    assert b.on_diff(DepthDiff(U=90, u=99, pu=89)) is SyncResult.STALE  # u < L
    assert b.on_diff(DepthDiff(U=95, u=100, pu=94)) is SyncResult.APPLIED  # U <= L <= u
    assert b.on_diff(DepthDiff(U=103, u=107, pu=100)) is SyncResult.APPLIED  # pu == prev u
    assert b.on_diff(DepthDiff(U=110, u=112, pu=108)) is SyncResult.GAP
    assert b.last_gap.expected == 107 and b.last_gap.got == 108


def test_auto_market_detects_futures_by_pu():
    b = BinanceDiffBook("auto")
    _snap(b, 100)
    # futures rule: u == L straddles (spot would call it stale)
    assert b.on_diff(DepthDiff(U=95, u=100, pu=94)) is SyncResult.APPLIED
    s = BinanceDiffBook("auto")
    _snap(s, 100)
    assert s.on_diff(DepthDiff(U=95, u=100)) is SyncResult.STALE


def test_dict_diff_equals_struct_diff():
    snap, diffs = _diffs_and_snapshot("usdm")
    lines = [ln for ln in _lines("usdm") if b"@depth" in ln[:80]][:400]
    a = BinanceDiffBook("usdm")
    b = BinanceDiffBook("usdm")
    a.on_snapshot_msg(snap)
    b.on_snapshot(snap.lastUpdateId, [(str(p), str(q)) for p, q in snap.bids], [(str(p), str(q)) for p, q in snap.asks])
    for ln in lines:
        data = orjson.loads(ln[ln.index(b" ") + 1 :])["data"]
        assert a.on_diff(parse_line(ln).msg) is b.on_diff(data)
    assert a.applied > 300 and a.book.bids == b.book.bids and a.book.asks == b.book.asks


def test_bad_diff_dict_raises_format_error():
    b = BinanceDiffBook("spot")
    with pytest.raises(BinanceFormatError):
        b.on_diff({"U": "x", "u": 1})
    with pytest.raises(ValueError):
        BinanceDiffBook("margin")


# --------------------------------------------------------------------------- recording format


def test_parse_line_kinds_and_ns_timestamps():
    kinds = {}
    for ln in _lines("spot")[:2000]:
        rec = parse_line(ln)
        kinds[rec.kind] = kinds.get(rec.kind, 0) + 1
        assert rec.ts_recv == int(ln[: ln.index(b" ")])  # already ns
        assert 1.7e18 < rec.ts_recv < 1.8e18
    assert set(kinds) == {KIND_DEPTH, KIND_TRADE, KIND_BOOK_TICKER, KIND_SNAPSHOT}
    assert kinds[KIND_SNAPSHOT] == 1


def test_microsecond_variant_is_normalised_to_ns(tmp_path):
    src = sorted(raw_dir("spot").glob("*.gz"))[0]
    dst = tmp_path / "btcusdt_20230101.dat.gz"
    n = 0
    with gzip.open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
        for ln in fin:
            sp = ln.index(b" ")
            fout.write(str(int(ln[:sp]) // 1000).encode() + ln[sp:])
            n += 1
            if n == 3000:
                break
    ns = [r for r, _ in zip(iter_recording(src), range(3000))]
    us = list(iter_recording(dst))
    assert len(us) == 3000
    for a, b in zip(ns, us):
        assert b.ts_recv == (a.ts_recv // 1000) * 1000
        assert a.kind == b.kind and a.symbol == b.symbol == "BTCUSDT"
    assert normalise_local_ts(1_723_161_253_937) == 1_723_161_253_937_000_000  # ms
    assert normalise_local_ts(1_723_161_253) == 1_723_161_253_000_000_000  # s
    with pytest.raises(BinanceFormatError):
        normalise_local_ts(12345)


def test_other_payload_shapes():
    # raw (non-combined) stream payload, futures shape
    kind, sym, msg = parse_stream_message(
        b'{"e":"depthUpdate","E":1,"T":1,"s":"ETHUSDT","U":5,"u":7,"pu":4,"b":[["1.5","2"]],"a":[]}'
    )
    assert kind == KIND_DEPTH and sym == "ETHUSDT" and msg.pu == 4 and msg.b == [(1.5, 2.0)]
    # spot bookTicker without "e", raw stream
    kind, sym, msg = parse_stream_message('{"u":9,"s":"BTCUSDT","b":"1.0","B":"2.0","a":"1.1","A":"3"}')
    assert kind == KIND_BOOK_TICKER and (msg.b, msg.B, msg.a, msg.A) == (1.0, 2.0, 1.1, 3.0)
    # streams the collector does not use pass through as "other"
    kind, sym, msg = parse_stream_message(
        b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1,"s":"BTCUSDT","p":"1"}}'
    )
    assert kind == KIND_OTHER and sym == "BTCUSDT" and msg["e"] == "markPriceUpdate"
    kind, _, _ = parse_stream_message(
        b'{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":1,"bids":[],"asks":[]}}'
    )
    assert kind == KIND_OTHER  # partial-depth snapshots are not diffs
    kind, _, msg = parse_stream_message(
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","a":7,"p":"1","q":"2","m":true,"T":5}}'
    )
    assert kind == KIND_TRADE and msg.a == 7 and msg.m is True


@pytest.mark.parametrize(
    "line",
    [
        b"garbage",
        b"abc {}",
        b"1723161253937085768 {",
        b"1723161253937085768 [1,2]",
        b'1723161253937085768 {"stream":"btcusdt@depth@100ms","data":{"U":"x"}}',
        b"12 {}",
    ],
)
def test_bad_lines_raise_one_error_type(line):
    with pytest.raises(BinanceFormatError):
        parse_line(line)


def test_iter_recording_reports_file_and_line(tmp_path):
    f = tmp_path / "ethusdt_20240101.gz"  # the name says ETHUSDT; the data says BTCUSDT: the data wins
    with gzip.open(f, "wb") as fh:
        fh.write(b'1723161253937085768 {"lastUpdateId":5,"bids":[],"asks":[]}\n')
        fh.write(
            b'1723161253937085769 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,'
            b'"s":"BTCUSDT","U":6,"u":7,"b":[],"a":[]}}\n'
        )
        fh.write(b"not a line\n")
    it = iter_recording(f)
    first = next(it)
    assert first.kind == KIND_SNAPSHOT and first.symbol == "BTCUSDT"  # from the depth stream, not the name
    assert next(it).kind == KIND_DEPTH
    with pytest.raises(BinanceFormatError, match=r"ethusdt_20240101.gz:3"):
        next(it)
