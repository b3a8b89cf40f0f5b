"""Recordings split into rotated files replay as ONE stream (REPLAY_PATHS = the recorder's
directory, its root or some of its files), for the native Binance and Kraken spot feeds (Bybit
and ccxt: test_recorder_bybit.py / test_recorder_ccxt.py): the multi-file replay equals the
live books, and a file replayed without its predecessor never yields a book built across the
missing sequence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from collector.exchanges.kraken_spot_feed import KrakenSpotSource, kraken_recording_replay
from collector.recorder import Recorder
from collector.recording_set import first_lines, in_receive_order, read_lines, recorded_files
from collector.replay import BinanceRecordingReplay
from collector.replay_formats import replay_sources
from depthpilot import messages as m
from tests.collector.fakes.binance_server import load_recording, record_live
from tests.collector.fakes.data import require
from tests.collector.fakes.kraken_spot_server import FakeKrakenSpot

pytestmark = pytest.mark.timeout(90)

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"
KRAKEN = "kraken-spot-xbtusd-book10-2023-05-29/orderbook.json"


def _key(s: m.BookSnapshot) -> tuple:
    return (s.symbol, s.valid, s.seq, s.ts_recv, s.bids.tobytes(), s.asks.tobytes())


# --------------------------------------------------------------------------- pure reading


def test_files_merge_by_receive_time_and_a_killed_file_is_read_to_its_last_line(tmp_path, caplog):
    with Recorder(tmp_path, "x", rotate_bytes=8) as r:
        for i in range(6):
            r.write("A", b'{"i":%d}' % i, 1000 + 2 * i)
            r.write("B", b'{"j":%d}' % i, 1001 + 2 * i)
    files = recorded_files(tmp_path)  # the root: one sub-directory per exchange
    assert len(files) == 6  # two 7-byte messages per file
    merged = list(in_receive_order(files[::-1]))
    assert [ts for ts, _ in merged] == list(range(1000, 1012))
    assert [b for _, b in merged][:3] == ['{"i":0}', '{"j":0}', '{"i":1}']
    # a gzip without its end (kill -9): every complete line, and a warning naming the file
    d = tmp_path / "x" / "a_19700101_9.gz"
    d.write_bytes(files[0].read_bytes()[:-8])
    with caplog.at_level(logging.WARNING):
        assert [ts for ts, _ in read_lines(d)] == [1000, 1002]
    assert any("truncated gzip" in r.getMessage() and str(d) in r.getMessage() for r in caplog.records)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no recordings in"):
        recorded_files(tmp_path / "empty")
    assert first_lines(tmp_path / "x" / "nothing") == []


def test_merge_equals_a_stable_sort_by_time_for_overlapping_and_disjoint_files(tmp_path):
    import numpy as np

    rng = np.random.default_rng(3)
    for case in range(20):
        files = []
        for k in range(int(rng.integers(1, 6))):
            lo = int(rng.integers(0, 50)) * (1 if case % 2 else 100 * k)  # odd cases overlap, even ones mostly not
            ts = np.sort(rng.integers(lo, lo + 60, int(rng.integers(1, 30))))
            f = tmp_path / f"c{case}_{k}.txt"
            f.write_text("".join(f"{t} m{k}.{i}\n" for i, t in enumerate(ts)))
            files.append(f)
        order = sorted(range(len(files)), key=lambda k: (first_lines(files[k])[0][0], k))
        expected = sorted((x for k in order for x in read_lines(files[k])), key=lambda x: x[0])  # stable
        assert list(in_receive_order(files)) == expected


# --------------------------------------------------------------------------- Binance


def test_binance_recording_rotated_into_many_files_replays_as_one_stream_equal_to_live(tmp_path):
    rec = load_recording(require(SPOT), max_depth_events=900)
    lost = int(rec.depth_events[500]["u"])

    out, _ = record_live(rec, tmp_path, drop_u={lost}, delay_s=0.001, rotate_bytes=150_000, timeout_s=40)
    live = [s for s in out if isinstance(s, m.BookSnapshot)]
    files = sorted((tmp_path / "binance").iterdir())
    assert len(files) >= 3
    (src,) = replay_sources([tmp_path], 20, None)  # the recorder root
    replayed = [s for s in src if isinstance(s, m.BookSnapshot)]
    first = next(i for i, s in enumerate(replayed) if s.valid)  # the replay announces the unsynced book first
    assert [_key(s) for s in replayed[first:]] == [_key(s) for s in live] and len(live) > 800
    # a later file alone never yields a book built across the missing sequence: whatever valid
    # book it gives is the one the whole recording gives at that receive time
    whole = {s.ts_recv: _key(s) for s in replayed if s.valid}
    alone = [s for f in files[1:] for s in BinanceRecordingReplay(f, depth=20) if isinstance(s, m.BookSnapshot)]
    assert alone and all(_key(s) == whole[s.ts_recv] for s in alone if s.valid)


# --------------------------------------------------------------------------- Kraken spot


def test_kraken_recording_rotated_into_many_files_replays_as_one_stream_equal_to_live(tmp_path):
    d = json.loads(require(KRAKEN).read_text())
    init, updates = d["init"], d["updates"]

    async def main():
        async with FakeKrakenSpot(init, updates, corrupt={50}) as srv:
            rec = Recorder(tmp_path, "krakenspot", rotate_bytes=1500)
            src = KrakenSpotSource(["XBT/USD"], depth=10, version=1, ws_url=srv.ws_url, raw_sink=rec.write)
            out: list = []

            async def consume():
                async with contextlib.aclosing(src.stream()) as it:
                    async for x in it:
                        out.append(x)

            task = asyncio.create_task(consume())
            await asyncio.wait_for(srv.done.wait(), 20)
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            rec.close()
            return src, out

    src, live = asyncio.run(main())
    assert src.resubscribes == 1  # the corrupted update: checksum failure, fresh snapshot
    files = sorted((tmp_path / "krakenspot").iterdir())
    assert len(files) >= 3
    for paths in ([tmp_path / "krakenspot"], files[::-1]):
        (rep,) = replay_sources(paths, 10, None)
        assert [_key(s)[1:] for s in rep] == [_key(s)[1:] for s in live]  # validity, seq, time, levels
    assert sum(not s.valid for s in live) == 1
    # a later file alone starts with updates: no book until a snapshot arrives in the data
    ordered = sorted(files, key=lambda f: first_lines(f)[0][0])
    alone = list(kraken_recording_replay(ordered[1]))
    assert all(s.valid for s in alone)  # whatever it yields comes after a snapshot in that file ...
    n_snap = sum(1 for _, b in read_lines(ordered[1]) if '"as"' in b or '"bs"' in b)
    assert bool(alone) == (n_snap > 0)  # ... and without one it yields nothing
