"""Kraken Futures book builder on the real cryptofeed clip: consecutive seq, no crossed book."""

from __future__ import annotations

import copy

import pytest

from collector.exchanges.core import ApplyResult
from collector.exchanges.cryptofeed_clips import CLIPS_DATASET, iter_clip
from collector.exchanges.kraken import KrakenFuturesBookBuilder
from tests.collector.fakes.data import require

CLIP = f"{CLIPS_DATASET}/raw/KRAKEN_FUTURES.ws.1.0.gz"
SYMBOL = "FI_XBTUSD_210924"


def _msgs() -> list[dict]:
    return [m.msg for m in iter_clip(require(CLIP))]


def _own(msgs, sym=SYMBOL):
    return [m for m in msgs if m.get("feed") in ("book", "book_snapshot") and m.get("product_id") == sym]


def _reference_book(msgs, sym=SYMBOL):
    """Independent straightforward reconstruction: dicts, no sequence logic beyond ordering."""
    bids, asks, started = {}, {}, False
    for m in _own(msgs, sym):
        if m["feed"] == "book_snapshot":
            bids = {lv["price"]: lv["qty"] for lv in m["bids"] if lv["qty"] > 0}
            asks = {lv["price"]: lv["qty"] for lv in m["asks"] if lv["qty"] > 0}
            started = True
        elif started:
            side = bids if m["side"] == "buy" else asks
            if m["qty"] > 0:
                side[m["price"]] = m["qty"]
            else:
                side.pop(m["price"], None)
    return bids, asks


def test_clip_rebuilds_with_consecutive_seq_and_no_crossed_book():
    msgs = _msgs()
    own = _own(msgs)
    seqs = [m["seq"] for m in own]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the recording itself is gap-free
    b = KrakenFuturesBookBuilder(SYMBOL.lower())  # product ids are case-insensitive
    checked = 0
    for m in msgs:
        r = b.process(m)
        if r in (ApplyResult.SNAPSHOT, ApplyResult.APPLIED):
            checked += 1
            assert b.valid, b.reason
            assert not b.book.is_crossed()
    assert checked == len(own) > 1000
    assert b.stats.deltas == len(own) - 1 and b.stats.gaps == 0 and b.stats.crossed == 0
    assert b.book.seq == seqs[-1]
    assert b.book.best_bid() == (32207.0, 50.0) and b.book.best_ask() == (32225.0, 1.0)
    ref_b, ref_a = _reference_book(msgs)
    assert b.book.bids == ref_b and b.book.asks == ref_a


def test_every_product_in_clip_is_gap_free_and_uncrossed():
    msgs = _msgs()
    products = sorted({m["product_id"] for m in msgs if m.get("feed") == "book_snapshot"})
    assert len(products) == 10
    for p in products:
        b = KrakenFuturesBookBuilder(p)
        for m in msgs:
            b.process(m)
        assert b.stats.snapshots == 1 and b.stats.deltas > 0, p
        assert b.stats.gaps == 0 and b.stats.crossed == 0 and b.valid, p


def test_skipped_seq_is_a_gap_then_resync_on_snapshot():
    own = _own(_msgs())
    b = KrakenFuturesBookBuilder(SYMBOL)
    for m in own[:50]:
        b.process(m)
    assert b.valid
    r = b.process(own[51])  # own[50] lost
    assert r is ApplyResult.GAP and r.needs_resync
    assert b.needs_resync and not b.valid and "gap" in b.reason and b.stats.gaps == 1
    assert b.process(own[52]) is ApplyResult.AWAITING_SNAPSHOT
    assert b.process(own[0]) is ApplyResult.SNAPSHOT and b.valid and not b.needs_resync


def test_replayed_delta_is_stale_and_deltas_before_snapshot_wait():
    own = _own(_msgs())
    b = KrakenFuturesBookBuilder(SYMBOL)
    assert b.process(own[1]) is ApplyResult.AWAITING_SNAPSHOT
    for m in own[:20]:
        b.process(m)
    before = dict(b.book.bids), dict(b.book.asks)
    assert b.process(own[10]) is ApplyResult.STALE
    assert (b.book.bids, b.book.asks) == before


def test_crossed_book_is_flagged_invalid_with_reason():
    own = _own(_msgs())
    b = KrakenFuturesBookBuilder(SYMBOL)
    for m in own[:5]:
        b.process(m)
    best_ask = b.book.best_ask()[0]
    bad = copy.deepcopy(own[5])
    bad.update(side="buy", price=best_ask + 0.5, qty=10.0, seq=b.book.seq + 1)
    assert b.process(bad) is ApplyResult.APPLIED  # applied, but the book is not tradeable
    assert not b.valid and b.reason.startswith("crossed") and b.stats.crossed == 1
    assert not b.to_snapshot(10).valid
    # removing the offending level uncrosses it
    fix = dict(bad, qty=0.0, seq=bad["seq"] + 1)
    assert b.process(fix) is ApplyResult.APPLIED and b.valid


def test_clip_reader_rejects_garbage(tmp_path):
    from collector.exchanges.cryptofeed_clips import ClipFormatError

    p = tmp_path / "X.ws.1.0"
    p.write_text('wss://x <-> 1.0\n1.5: {"a": 1}\nnot a line\n')
    it = iter_clip(p)
    assert next(it).msg == {"a": 1}
    with pytest.raises(ClipFormatError):
        next(it)
