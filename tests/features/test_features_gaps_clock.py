"""State across gaps and the sampled clock, on real books: a closed block is never re-opened,
OFI and the block change baseline restart across a gap / an invalid book (stream == batch),
and the sampled clock gives the same rows streaming and offline, with no lookahead."""

from __future__ import annotations

import numpy as np
import pytest

from depthpilot import messages as m
from features.aggregate import StreamingAggregator, aggregate_blocks
from features.clock import StreamingSampler, sample_clock
from features.engine import feature_rows
from features.pipeline import SymbolPipeline
from features.spec import FeatureSpec, aggregate_names, feature_names

S = 1_000_000_000
SPEC = FeatureSpec(depths=(5, 10, 25), interval_s=1.0, max_gap_s=2.0)


def _snap(ts, b, a, valid=True, reason=""):
    return m.BookSnapshot(
        exchange="binance",
        symbol="X",
        ts_exchange=int(ts),
        ts_recv=int(ts),
        seq=0,
        bids=b,
        asks=a,
        valid=valid,
        reason=reason,
    )


def _same_blocks(got, want):
    """Block means are summed in a different order streaming vs reduceat: 1e-9 relative, NaNs equal."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def _run(pl: SymbolPipeline, snaps):
    vecs = []
    resets = []
    for s in snaps:
        out = pl.on_snapshot(s)
        vecs += out.vectors
        resets += out.resets
    vecs += pl.flush().vectors
    return vecs, resets


def _split(vecs):
    snap = [v for v in vecs if v.interval == ""]
    block = [v for v in vecs if v.interval.endswith("s") and not v.interval.startswith("candle")]
    return snap, block


def test_late_snapshot_never_reopens_a_closed_block(spot25):
    ts, bids, asks = (x[:40] for x in spot25)
    pl = SymbolPipeline(SPEC, "binance", "X", emit=("snapshot", "block"), candles_from="trades")
    t0 = (int(ts[0]) // S + 1) * S  # start of a fresh block
    out = []
    for i in range(5):  # five books in block A
        out += pl.on_snapshot(_snap(t0 + i * 100_000_000, bids[i], asks[i])).vectors
    out += pl.advance(t0 + S + 300_000_000).vectors  # wall clock closes block A (quiet market)
    closed = [v for v in out if v.interval == "1s"]
    assert len(closed) == 1 and closed[0].values[0] == 5.0
    # a lagging snapshot of block A arrives after its block went out: dropped and counted
    out += pl.on_snapshot(_snap(t0 + 900_000_000, bids[5], asks[5])).vectors
    for i in range(6, 9):  # block B
        out += pl.on_snapshot(_snap(t0 + S + (i - 5) * 200_000_000, bids[i], asks[i])).vectors
    out += pl.flush().vectors
    blocks = [v for v in out if v.interval == "1s"]
    assert [v.ts for v in blocks] == [t0 + S - 1, t0 + 2 * S - 1]  # each block once
    assert pl.late == 1 and pl.agg.late == 1
    names = aggregate_names(SPEC)
    a, b = blocks[0].values, blocks[1].values
    j = names.index("d_bid_vol_5")
    # d_* of block B is measured against the FULL block A as emitted (its last book: index 4)
    assert b[j] == b[names.index("last_bid_vol_5")] - a[names.index("last_bid_vol_5")]
    assert a[names.index("last_bid_vol_5")] == pytest.approx(float(np.nansum(bids[4, :5, 1])))


def test_streaming_aggregator_counts_late_rows():
    spec = FeatureSpec(depths=(5,), interval_s=1.0)
    F = len(feature_names(spec))
    agg = StreamingAggregator(spec)
    assert agg.update(0, np.ones(F)) == []
    assert len(agg.advance(S)) == 1
    assert agg.update(S - 1, np.full(F, 7.0)) == [] and agg.late == 1
    assert agg.flush() == []  # nothing re-opened


def _with_gap_and_resync(ts, bids, asks):
    """Books with a 5 s feed outage after row 30 and a resync (two invalid books) at 60-61."""
    ts = ts.copy()
    ts[31:] += 5 * S
    valid = np.ones(len(ts), dtype=bool)
    valid[60:62] = False
    return ts, valid


def test_ofi_and_block_baseline_reset_across_gap_and_resync_stream_equals_batch(spot25):
    ts, bids, asks = (x[:120] for x in spot25)
    ts, valid = _with_gap_and_resync(ts, bids, asks)
    pl = SymbolPipeline(SPEC, "binance", "X", emit=("snapshot", "block"))
    snaps = [_snap(t, b, a, v, "" if v else "resyncing") for t, b, a, v in zip(ts, bids, asks, valid)]
    vecs, resets = _run(pl, snaps)
    assert pl.resets == {"gap": 1, "resync": 1}
    assert [r.split(":")[0] for r in resets] == ["gap", "resync"]
    snap_v, block_v = _split(vecs)
    ofi = feature_names(SPEC).index("ofi")
    by_ts = {v.ts: v.values for v in snap_v}
    assert by_ts[int(ts[31])][ofi] == 0.0 and by_ts[int(ts[62])][ofi] == 0.0  # restarted
    assert any(by_ts[int(t)][ofi] != 0.0 for t in ts[32:60])  # ... and live otherwise
    # batch on the same books (invalid ones as all-NaN rows, as the offline loaders give them)
    b2, a2 = bids.copy(), asks.copy()
    b2[~valid] = np.nan
    a2[~valid] = np.nan
    rts, X, reset = feature_rows(SPEC, ts, (b2, a2))
    np.testing.assert_array_equal(np.stack([v.values for v in snap_v]), X[valid])
    bts, A = aggregate_blocks(SPEC, rts, X, reset=reset)
    assert [v.ts for v in block_v] == bts.tolist()
    _same_blocks(np.stack([v.values for v in block_v]), A)
    # the blocks holding the first row after the gap / the resync have no d_* (NaN), others do
    d = [i for i, n in enumerate(aggregate_names(SPEC)) if n.startswith("d_")]
    broken = {(int(ts[31]) // S + 1) * S - 1, (int(ts[62]) // S + 1) * S - 1}
    for t, row in zip(bts, A):
        assert np.isnan(row[d]).all() == (t in broken or t == bts[0]), t


def test_manual_reset_restarts_ofi(spot25):
    ts, bids, asks = (x[:10] for x in spot25)
    pl = SymbolPipeline(SPEC, "binance", "X", emit=("snapshot",))
    ofi = feature_names(SPEC).index("ofi")
    for i in range(5):
        pl.on_snapshot(_snap(ts[i], bids[i], asks[i]))
    pl.reset("resync")
    v = pl.on_snapshot(_snap(ts[5], bids[5], asks[5])).vectors[0]
    assert v.values[ofi] == 0.0 and pl.resets["resync"] == 1


@pytest.mark.parametrize("dt", [0.1, 0.25, 1.0])
def test_sampled_clock_stream_equals_batch_no_lookahead(spot25, dt):
    ts, bids, asks = (x[:2500] for x in spot25)
    ts, valid = _with_gap_and_resync(ts, bids, asks)
    spec = FeatureSpec(depths=(5, 10, 25), interval_s=1.0, sample_interval_s=dt, max_gap_s=2.0)
    pl = SymbolPipeline(spec, "binance", "X", emit=("snapshot", "block"))
    vecs, _ = _run(pl, [_snap(t, b, a, v, "" if v else "resyncing") for t, b, a, v in zip(ts, bids, asks, valid)])
    snap_v, block_v = _split(vecs)
    b2, a2 = bids.copy(), asks.copy()
    b2[~valid] = np.nan
    a2[~valid] = np.nan
    tick, X, reset = feature_rows(spec, ts, (b2, a2))
    assert [v.ts for v in snap_v] == tick.tolist()
    assert np.all(tick % spec.sample_interval_ns == 0) and np.all(np.diff(tick) > 0)
    np.testing.assert_array_equal(np.stack([v.values for v in snap_v]), X)  # bit-identical
    bts, A = aggregate_blocks(spec, tick, X, reset=reset)
    assert [v.ts for v in block_v] == bts.tolist()
    _same_blocks(np.stack([v.values for v in block_v]), A)
    # no lookahead: each row's mid is the mid of the last valid book at or before its tick
    mid = feature_names(spec).index("mid")
    src = np.searchsorted(ts, tick, side="right") - 1
    assert valid[src].all() and (ts[src] <= tick).all()
    np.testing.assert_array_equal(X[:, mid], 0.5 * (bids[src, 0, 0] + asks[src, 0, 0]))
    # no row inside the 5 s outage beyond max_gap, nor while the book is resyncing
    assert not ((tick > ts[30] + spec.max_gap_ns) & (tick < ts[31])).any()
    assert not ((tick >= ts[60]) & (tick < ts[62])).any()


def test_sampler_holds_books_and_resets_like_batch():
    ts = np.array([0, 50, 130, 170, 900, 910, 1000], dtype=np.int64) * 1_000_000
    ok = np.array([True, True, True, False, True, True, True])
    tick, src, reset = sample_clock(ts, ok, 100_000_000, 300_000_000)
    sm = StreamingSampler(100_000_000, 300_000_000)
    got = []
    for t, o in zip(ts, ok):
        got += sm.update(int(t), int(np.flatnonzero(ts == t)[0]), bool(o))
    got += sm.flush()
    assert [(g.ts, g.book, g.reset) for g in got] == list(zip(tick.tolist(), src.tolist(), reset.tolist()))
    # 0: book 0 (first: reset); 100: book 1 (held for tick 100); 200..: book 3 invalid -> none;
    # 900: book 4, reset after the invalid book; 1000: book 6
    assert tick.tolist() == [0, 100_000_000, 900_000_000, 1_000_000_000]
    assert src.tolist() == [0, 1, 4, 6] and reset.tolist() == [True, False, True, False]


def test_feed_slower_than_the_clock_is_reported(spot25):
    ts, bids, asks = (x[:400] for x in spot25)
    spec = FeatureSpec(depths=(5,), interval_s=1.0, sample_interval_s=0.1, max_gap_s=5.0)
    pl = SymbolPipeline(spec, "binance", "X", emit=("snapshot",))
    t0 = int(ts[0])
    for i in range(30):  # one book every 1 s on a 100 ms clock: 90 % of the ticks hold an old book
        pl.on_snapshot(_snap(t0 + i * S, bids[i], asks[i]))
    assert "too slow for the 0.1 s sample clock" in pl.clock_problem
    for i in range(30, 300):  # back to ~100 ms books
        pl.on_snapshot(_snap(t0 + 30 * S + (i - 30) * 90_000_000, bids[i], asks[i]))
    assert pl.clock_problem == ""


def test_spec_hash_unchanged_by_default_clock_fields():
    # specs written before the clock fields existed keep their hash (bundled models)
    old = {k: v for k, v in FeatureSpec().to_dict().items()}
    assert "sample_interval_s" not in old and "max_gap_s" not in old
    assert FeatureSpec.from_dict(old).hash == FeatureSpec().hash
    s = FeatureSpec(sample_interval_s=0.1)
    assert s.hash != FeatureSpec().hash and FeatureSpec.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="multiple of sample_interval_s"):
        FeatureSpec(interval_s=1.0, sample_interval_s=0.3)
    with pytest.raises(ValueError, match="max_gap_s"):
        FeatureSpec(sample_interval_s=2.0, max_gap_s=1.0)


def test_sampled_book_after_its_tick_was_decided_is_late(spot25):
    ts, bids, asks = (x[:5] for x in spot25)
    spec = FeatureSpec(depths=(5,), interval_s=1.0, sample_interval_s=0.1, max_gap_s=2.0)
    pl = SymbolPipeline(spec, "binance", "X", emit=("snapshot",))
    t0 = (int(ts[0]) // S) * S
    pl.on_snapshot(_snap(t0 + 10_000_000, bids[0], asks[0]))
    assert [v.ts for v in pl.advance(t0 + 350_000_000).vectors] == [
        t0 + 100_000_000,
        t0 + 200_000_000,
        t0 + 300_000_000,
    ]
    out = pl.on_snapshot(_snap(t0 + 250_000_000, bids[1], asks[1]))  # lagging book: tick 300 ms went out
    assert out.vectors == [] and pl.sampler.late == 1 and pl.late == 1
    out = pl.on_snapshot(_snap(t0 + 420_000_000, bids[2], asks[2]))
    assert [v.ts for v in out.vectors] == [t0 + 400_000_000]  # the clock goes on, nothing emitted twice
