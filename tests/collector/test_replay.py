"""Replay sources, pacing and throttling (collector.replay)."""

from __future__ import annotations

import asyncio
import gzip

import numpy as np
import pytest

from collector.replay import (
    BinanceRecordingReplay,
    ManualClock,
    ReplayError,
    SnapshotThrottle,
    TardisBookSnapshotReplay,
    TardisTradesReplay,
    apace,
    merge_by_recv,
    pace,
    sleep_schedule,
)
from depthpilot.messages import BookSnapshot, Side, Trade, decode, encode
from depthpilot.paths import data_dir

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"
USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"
FIXTURES = "tardis-format-fixtures"


def ds(name: str):
    d = data_dir() / name
    if not d.is_dir():
        pytest.skip(f"dataset {name} not found under {data_dir()} (set DEPTHPILOT_DATA_DIR)")
    return d


# --------------------------------------------------------------------------- pacing


def test_sleep_schedule_real_time_and_speed():
    ts = [0, 1_000_000_000, 1_500_000_000, 1_500_000_000, 3_000_000_000]
    assert sleep_schedule(ts, 1.0) == pytest.approx([0.0, 1.0, 0.5, 0.0, 1.5])
    assert sleep_schedule(ts, 2.0) == pytest.approx([0.0, 0.5, 0.25, 0.0, 0.75])
    assert sleep_schedule(ts, 0.5) == pytest.approx([0.0, 2.0, 1.0, 0.0, 3.0])
    assert sleep_schedule(ts, None) == [0.0] * 5
    assert sleep_schedule(ts, float("inf")) == [0.0] * 5
    assert sleep_schedule([], 1.0) == []
    # an event out of order never sleeps negatively and does not shift later targets
    assert sleep_schedule([0, 2_000_000_000, 1_000_000_000, 3_000_000_000], 1.0) == pytest.approx([0, 2, 0, 1])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "fast", True])
def test_bad_speed_is_rejected(bad):
    with pytest.raises(ReplayError):
        sleep_schedule([0, 1], bad)


class _Ev:
    def __init__(self, ts):
        self.ts_recv = ts


def test_pace_sleeps_through_injected_clock():
    events = [_Ev(t) for t in (10_000_000_000, 10_100_000_000, 10_100_000_000, 12_000_000_000)]
    clock = ManualClock(now_ns=5)
    out = list(pace(events, speed=1.0, clock=clock))
    assert out == events
    assert sum(clock.sleeps) == pytest.approx(2.0)
    assert clock.sleeps == pytest.approx([0.1, 1.9])
    clock4 = ManualClock()
    list(pace(events, speed=4.0, clock=clock4))
    assert sum(clock4.sleeps) == pytest.approx(0.5)
    clock_fast = ManualClock()
    list(pace(events, speed=None, clock=clock_fast))
    assert clock_fast.sleeps == []


def test_pace_accounts_for_time_spent_by_the_consumer():
    events = [_Ev(t * 1_000_000_000) for t in range(5)]
    clock = ManualClock()
    for _ev in pace(events, speed=1.0, clock=clock):
        clock.now_ns += 300_000_000  # consumer takes 0.3 s per event
    assert clock.sleeps == pytest.approx([0.7, 0.7, 0.7, 0.7])


def test_apace_uses_injected_async_sleep():
    events = [_Ev(t) for t in (0, 500_000_000, 2_000_000_000)]
    clock = ManualClock()

    async def run():
        return [e async for e in apace(events, speed=2.0, clock=clock, sleep=clock.asleep)]

    assert asyncio.run(run()) == events
    assert clock.sleeps == pytest.approx([0.25, 0.75])


# --------------------------------------------------------------------------- throttle


def test_throttle_limits_rate_and_keeps_latest_state():
    th = SnapshotThrottle(10.0)
    emitted = []
    state = {}
    ms = 1_000_000
    for i in range(10_000):  # one update per ms for 10 s
        t = i * ms
        for key in th.due(t):
            emitted.append((key, t, state[key]))
        state["A"] = i
        if th.offer("A", t):
            emitted.append(("A", t, i))
    for key in th.flush():
        emitted.append((key, None, state[key]))
    times = [t for _, t, _ in emitted if t is not None]
    assert 95 <= len(times) <= 101
    assert min(np.diff(times)) >= 100 * ms
    assert emitted[-1][2] == 9_999  # the latest state always gets out
    for a in range(0, 9_000 * ms, 1000 * ms):  # at most R in any 1 s window
        assert sum(a <= t < a + 1000 * ms for t in times) <= 10


def test_throttle_trailing_edge_and_keys_are_independent():
    th = SnapshotThrottle(2.0)  # 500 ms
    assert th.offer("A", 0) and th.offer("B", 0)
    assert not th.offer("A", 100_000_000)
    assert th.pending("A") and not th.pending("B")
    assert th.due(400_000_000) == []
    assert th.due(500_000_000) == ["A"]
    assert th.due(600_000_000) == []
    assert not th.offer("A", 700_000_000)  # 200 ms after the trailing emission
    th.force("A", 800_000_000)
    assert not th.pending("A")
    with pytest.raises(ReplayError):
        SnapshotThrottle(0)


# --------------------------------------------------------------------------- Binance recordings


@pytest.mark.parametrize("name", [SPOT, USDM])
def test_binance_replay_matches_independently_derived_files(name):
    """Every rebuilt top-25 equals the dataset's derived book_snapshot_25 rows (built by
    other code when the set was added) and the trades equal derived_trades."""
    d = ds(name)
    src = BinanceRecordingReplay(d / "raw", depth=25)
    msgs = list(src)
    books = [m for m in msgs if isinstance(m, BookSnapshot)]
    trades = [m for m in msgs if isinstance(m, Trade)]
    assert all(b.valid for b in books)
    ref_books = list(TardisBookSnapshotReplay(d / "derived_book_snapshot_25.csv.gz"))
    assert len(books) == len(ref_books) > 6000
    for ours, ref in zip(books, ref_books):
        assert ours.bids.shape == (25, 2) and ours.asks.shape == (25, 2)
        assert np.array_equal(ours.bids, ref.bids) and np.array_equal(ours.asks, ref.asks)
        assert ours.ts_exchange == ref.ts_exchange
    ref_trades = list(TardisTradesReplay(d / "derived_trades.csv.gz"))
    assert len(trades) == len(ref_trades)
    for ours, ref in zip(trades, ref_trades):
        assert (ours.trade_id, ours.price, ours.size, ours.side, ours.ts_exchange) == (
            ref.trade_id,
            ref.price,
            ref.size,
            ref.side,
            ref.ts_exchange,
        )
        assert ours.ts_recv // 1000 == ref.ts_recv // 1000
    b = src.builders["BTCUSDT"]
    assert b.gaps == 0 and b.crossed == 0
    ex = {m.exchange for m in msgs}
    assert ex == ({"binance"} if name == SPOT else {"binanceusdm"})
    # messages survive the bus codec
    assert decode(encode(books[-1])).bids.tolist() == books[-1].bids.tolist()


def test_binance_replay_throttled_emits_at_most_rate_and_the_final_state():
    d = ds(SPOT)
    full = [m for m in BinanceRecordingReplay(d / "raw", depth=10, trades=False)]
    thr = [m for m in BinanceRecordingReplay(d / "raw", depth=10, trades=False, max_rate_hz=2.0)]
    assert all(isinstance(m, BookSnapshot) for m in thr)
    span_s = (full[-1].ts_recv - full[0].ts_recv) / 1e9
    assert len(thr) <= span_s * 2 + 3
    assert len(thr) >= span_s * 2 * 0.8  # diffs arrive every 100 ms, so the cap is reached
    emit_times = np.array([m.ts_recv for m in thr])
    assert np.all(np.diff(emit_times) >= 0)
    assert np.array_equal(thr[-1].bids, full[-1].bids) and np.array_equal(thr[-1].asks, full[-1].asks)
    assert thr[-1].seq == full[-1].seq


def test_binance_replay_gap_emits_invalid_book(tmp_path):
    d = ds(SPOT)
    src = sorted((d / "raw").glob("*.gz"))[0]
    dst = tmp_path / "btcusdt_20240808.gz"
    depth_seen = 0
    with gzip.open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
        for ln in fin:
            if b"@depth" in ln[:80]:
                depth_seen += 1
                if depth_seen == 500:
                    continue  # drop one diff
            fout.write(ln)
    msgs = [m for m in BinanceRecordingReplay(dst, depth=5, trades=False)]
    invalid = [i for i, m in enumerate(msgs) if not m.valid]
    assert len(invalid) == 1  # one invalid snapshot at the gap, then silence (no new REST snapshot)
    i = invalid[0]
    assert "sequence break" in msgs[i].reason
    assert i == len(msgs) - 1
    assert all(m.valid for m in msgs[:i])


# --------------------------------------------------------------------------- Tardis CSV


def test_tardis_book_snapshot_fixture():
    d = ds(FIXTURES)
    rows = list(TardisBookSnapshotReplay(d / "binance-futures_book_snapshot_25_BTCUSDT.csv"))
    assert len(rows) == 10
    first = rows[0]
    assert first.exchange == "binance-futures" and first.symbol == "BTCUSDT"
    assert first.ts_exchange == 1598918403696000 * 1000 and first.ts_recv == 1598918403810979 * 1000
    assert first.depth == 25 and first.bids.shape == (25, 2) and first.asks.shape == (25, 2)
    assert first.asks[0].tolist() == [11657.08, 1.714] and first.bids[0].tolist() == [11657.07, 10.896]
    for r in rows:
        assert np.all(np.diff(r.bids[:, 0]) < 0) and np.all(np.diff(r.asks[:, 0]) > 0)
        assert r.valid
    assert [r.seq for r in rows] == list(range(1, 11))
    five = list(TardisBookSnapshotReplay(d / "binance-futures_book_snapshot_5_BTCUSDT.csv", exchange="binanceusdm"))
    assert five[0].depth == 5 and five[0].exchange == "binanceusdm"


def test_tardis_missing_levels_and_crossed_rows(tmp_path):
    f = tmp_path / "snap.csv"
    f.write_text(
        "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,"
        "asks[1].price,asks[1].amount,bids[1].price,bids[1].amount\n"
        "x,AB,1,2,10.5,1,10.4,2,10.6,3,,\n"
        "x,AB,3,4,10.3,1,10.4,2,10.6,3,10.2,1\n"
    )
    a, b = list(TardisBookSnapshotReplay(f))
    assert a.bids.shape == (1, 2) and a.asks.shape == (2, 2) and a.valid
    assert not b.valid and b.reason.startswith("crossed")


def test_tardis_bad_files(tmp_path):
    with pytest.raises(ReplayError):
        TardisBookSnapshotReplay(tmp_path / "nope.csv")
    f = tmp_path / "bad.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(ReplayError):
        list(TardisBookSnapshotReplay(f))
    with pytest.raises(ReplayError):
        list(TardisTradesReplay(f))
    g = tmp_path / "badside.csv"
    g.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\nx,AB,1,2,7,up,1.0,2.0\n")
    with pytest.raises(ReplayError):
        list(TardisTradesReplay(g))


def test_tardis_trades_fixture_and_merge():
    d = ds(FIXTURES)
    trades = list(TardisTradesReplay(d / "bitmex_trades_XBTUSD.csv"))
    assert len(trades) == 10 and trades[0].exchange == "bitmex"
    assert {t.side for t in trades} <= {Side.BUY, Side.SELL}
    books = list(TardisBookSnapshotReplay(d / "binance-futures_book_snapshot_5_BTCUSDT.csv"))
    merged = list(merge_by_recv(books, trades))
    assert len(merged) == 20
    assert all(a.ts_recv <= b.ts_recv for a, b in zip(merged, merged[1:]))
