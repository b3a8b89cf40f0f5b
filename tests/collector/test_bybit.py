"""Bybit v5 orderbook builder on the official ob500 archive sample (+ the v2 2021 clip)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from collector.exchanges.bybit import BybitBookBuilder, BybitV2BookBuilder
from collector.exchanges.core import ApplyResult, BookMessageError
from collector.exchanges.cryptofeed_clips import CLIPS_DATASET, iter_clip
from tests.collector.fakes.data import bybit_ob500_messages, require


def _reference(msgs):
    """Independent reconstruction keyed by the original price strings (Decimal-free, exact)."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for m in msgs:
        if m["type"] == "snapshot":
            bids = {p: q for p, q in m["data"]["b"]}
            asks = {p: q for p, q in m["data"]["a"]}
            continue
        for side, rows in ((bids, m["data"]["b"]), (asks, m["data"]["a"])):
            for p, q in rows:
                if float(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
    b = np.array(sorted(((float(p), float(q)) for p, q in bids.items()), reverse=True)).reshape(-1, 2)
    a = np.array(sorted((float(p), float(q)) for p, q in asks.items())).reshape(-1, 2)
    return b, a


def test_snapshot_plus_deltas_equal_independent_reconstruction_at_every_step():
    msgs = bybit_ob500_messages()
    assert msgs[0]["type"] == "snapshot" and len(msgs) == 50
    b = BybitBookBuilder("XRPUSDT")
    for k, m in enumerate(msgs):
        r = b.process(m)
        assert r is (ApplyResult.SNAPSHOT if k == 0 else ApplyResult.APPLIED)
        assert b.valid and b.book.seq == m["data"]["u"]
        got_b, got_a = b.book.top(10_000)
        ref_b, ref_a = _reference(msgs[: k + 1])
        np.testing.assert_array_equal(got_b, ref_b)
        np.testing.assert_array_equal(got_a, ref_a)
    assert b.stats.deltas == 49 and b.stats.gaps == 0 and b.stats.crossed == 0
    assert b.last_cross_seq == msgs[-1]["data"]["seq"]
    assert b.book.ts_exchange == msgs[-1]["cts"] * 1_000_000
    assert 1.9 < b.book.best_bid()[0] < b.book.best_ask()[0] < 2.0  # XRP on 2024-12-01


def test_skipped_u_triggers_resync():
    msgs = bybit_ob500_messages()
    b = BybitBookBuilder("XRPUSDT")
    for m in msgs[:10]:
        b.process(m)
    r = b.process(msgs[11])  # msgs[10] lost
    assert r is ApplyResult.GAP and r.needs_resync
    assert b.needs_resync and not b.valid and b.stats.resyncs_requested == 1
    assert "u 20254880 after 20254878" in b.reason
    assert b.process(msgs[12]) is ApplyResult.AWAITING_SNAPSHOT
    # resubscribing yields a new snapshot: the book is live again
    assert b.process(msgs[0]) is ApplyResult.SNAPSHOT and b.valid and not b.needs_resync
    assert b.process(msgs[1]) is ApplyResult.APPLIED


def test_u_equal_one_is_a_fresh_snapshot():
    """Bybit: ``u == 1`` means its book service restarted; the message is a full snapshot."""
    msgs = bybit_ob500_messages()
    b = BybitBookBuilder("XRPUSDT")
    for m in msgs[:20]:
        b.process(m)
    restart = copy.deepcopy(msgs[0])  # a full book ...
    restart["type"] = "delta"  # ... even if flagged as a delta
    restart["data"]["u"] = 1
    restart["data"]["b"] = restart["data"]["b"][:5]
    restart["data"]["a"] = restart["data"]["a"][:5]
    assert b.process(restart) is ApplyResult.SNAPSHOT
    assert len(b.book.bids) == 5 and len(b.book.asks) == 5 and b.book.seq == 1
    nxt = copy.deepcopy(msgs[1])
    nxt["data"]["u"] = 2
    assert b.process(nxt) is ApplyResult.APPLIED


def test_delta_before_snapshot_and_stale_and_other_symbols():
    msgs = bybit_ob500_messages()
    b = BybitBookBuilder("XRPUSDT")
    assert b.process(msgs[1]) is ApplyResult.AWAITING_SNAPSHOT
    assert b.process({"success": True, "op": "subscribe"}) is ApplyResult.IGNORED
    other = copy.deepcopy(msgs[0])
    other["topic"] = "orderbook.500.BTCUSDT"
    assert b.process(other) is ApplyResult.IGNORED
    for m in msgs[:5]:
        b.process(m)
    assert b.process(msgs[3]) is ApplyResult.STALE
    with pytest.raises(BookMessageError):
        b.process({"topic": "orderbook.50.XRPUSDT", "type": "delta", "data": {"b": [], "a": []}})


def test_v2_inverse_clip_rebuilds():
    msgs = [m.msg for m in iter_clip(require(f"{CLIPS_DATASET}/raw/BYBIT.ws.26.0.gz"))]
    b = BybitV2BookBuilder("BTCUSD")
    for m in msgs:
        b.process(m)
        if b.has_snapshot:
            assert b.valid, b.reason
    assert b.stats.snapshots == 1 and b.stats.deltas == 506 and b.stats.gaps == 0 and b.stats.crossed == 0
    assert len(b.book.bids) == 25 and len(b.book.asks) == 25
    assert b.book.best_bid()[0] == 60622.5 and b.book.best_ask()[0] == 60623.0  # per PROVENANCE.md
    bad = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "delta",
        "cross_seq": b.book.seq + 1,
        "data": {"delete": [{"id": 1, "side": "Buy", "symbol": "BTCUSD"}], "update": [], "insert": []},
    }
    assert b.process(bad) is ApplyResult.GAP and b.needs_resync
