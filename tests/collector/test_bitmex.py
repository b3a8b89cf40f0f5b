"""BitMEX orderBookL2 (id-keyed) builder on the real cryptofeed clip."""

from __future__ import annotations

from collector.exchanges.bitmex import BitmexBookBuilder
from collector.exchanges.core import ApplyResult
from collector.exchanges.cryptofeed_clips import CLIPS_DATASET, iter_clip
from tests.collector.fakes.data import require


def _msgs():
    return [m.msg for m in iter_clip(require(f"{CLIPS_DATASET}/raw/BITMEX.ws.1.0.gz"))]


def test_xbtusd_clip_rebuilds_without_unknown_ids_or_crossing():
    b = BitmexBookBuilder("XBTUSD")
    for m in _msgs():
        b.process(m)
        if b.has_snapshot:
            assert b.valid, b.reason
    assert b.stats.snapshots == 1 and b.stats.deltas > 1000
    assert b.stats.gaps == 0 and b.stats.crossed == 0
    assert len(b.book) == 9352  # per PROVENANCE.md: 9,352 levels at the end
    assert 30_000 < b.book.best_bid()[0] < b.book.best_ask()[0] < 34_000


def test_update_of_unknown_id_is_a_gap():
    msgs = _msgs()
    b = BitmexBookBuilder("XBTUSD")
    for m in msgs:
        b.process(m)
    r = b.process(
        {"table": "orderBookL2", "action": "update", "data": [{"symbol": "XBTUSD", "id": 1, "side": "Buy", "size": 5}]}
    )
    assert r is ApplyResult.GAP and b.needs_resync and not b.valid
