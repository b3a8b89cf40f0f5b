"""Recording live feeds (collector.recorder, `depthpilot record`): the files replay to the very
books the live feed built, rotate and close cleanly, and survive a kill -9."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collector.exchanges.binance_recording import iter_recording
from collector.recorder import Recorder, day_of, file_name, rotate_bytes_of
from collector.replay import BinanceRecordingReplay
from depthpilot import messages as m
from tests.collector.fakes.binance_server import (
    FakeBinance,
    FakeBinanceThread,
    load_recording,
    record_live,
)
from tests.collector.fakes.data import require

pytestmark = pytest.mark.timeout(90)

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"
REPO = Path(__file__).resolve().parents[2]
DAY = 86_400 * 10**9


# --------------------------------------------------------------------------- pure naming / rotation


def test_day_files_rotate_at_utc_midnight_and_by_size_and_never_append(tmp_path):
    t0 = 1723161253937085768  # 2024-08-08 23:54 UTC
    assert day_of(t0) == "20240808" and day_of(t0 + 10 * 60 * 10**9) == "20240809"
    assert file_name("BTC/USDT", "20240808", 1) == "btc-usdt_20240808.gz"
    assert file_name("BTCUSDT", "20240808", 3) == "btcusdt_20240808_3.gz"
    assert rotate_bytes_of(0) is None and rotate_bytes_of(1.5) == 1_572_864 and rotate_bytes_of(1e-9) == 1
    with Recorder(tmp_path, "binance") as r:
        r.write("BTCUSDT", b'{"a":1}', t0)
        assert [p.name for p in (tmp_path / "binance").iterdir()] == ["btcusdt_20240808.gz.part"]
        r.write("BTCUSDT", b'{"a":2}', t0 + DAY)  # the next UTC day: a new file, the old one closed
        r.write("ETHUSDT", b'{"a":3}', t0)
    names = sorted(p.name for p in (tmp_path / "binance").iterdir())
    assert names == ["btcusdt_20240808.gz", "btcusdt_20240809.gz", "ethusdt_20240808.gz"]
    assert gzip.decompress((tmp_path / "binance" / "btcusdt_20240808.gz").read_bytes()) == b'%d {"a":1}\n' % t0
    with Recorder(tmp_path, "binance", rotate_bytes=10) as r:  # a restart never appends: _2, _3, ...
        for i in range(3):
            r.write("BTCUSDT", b'{"abcdef":%d}' % i, t0 + i)
    assert r.stats.as_dict() == {"messages": 3, "bytes": 36, "files": 3, "gaps": 0}
    assert sorted(p.name for p in (tmp_path / "binance").iterdir() if p.name.startswith("btcusdt_20240808")) == [
        "btcusdt_20240808.gz",
        "btcusdt_20240808_2.gz",
        "btcusdt_20240808_3.gz",
        "btcusdt_20240808_4.gz",
    ]


def test_the_day_boundary_is_exact_to_the_nanosecond(tmp_path):
    midnight = 1723161600 * 10**9  # 2024-08-09 00:00:00 UTC
    assert day_of(midnight - 1) == "20240808" and day_of(midnight) == "20240809"
    with Recorder(tmp_path, "binance") as r:
        r.write("BTCUSDT", b'{"a":1}', midnight - 1)
        r.write("BTCUSDT", b'{"a":2}', midnight)
    names = sorted(p.name for p in (tmp_path / "binance").iterdir())
    assert names == ["btcusdt_20240808.gz", "btcusdt_20240809.gz"]


def test_a_crashed_file_is_read_up_to_its_last_flush_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(7)
    lines = [
        b'%d {"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":%d,"p":"1.0","q":"2.0",'
        b'"T":1,"m":true,"x":"%s"}}' % (1_700_000_000_000_000_000 + i, i, rng.bytes(100).hex().encode())
        for i in range(2000)
    ]
    r = Recorder(tmp_path, "binance", flush_interval_s=0.0)  # flush after every line ...
    for i, ln in enumerate(lines):
        if i == 1000:
            r.flush_interval_s = 1e9  # ... then no more: the rest sits in the compressor or half on disk
            flushed = len(next((tmp_path / "binance").iterdir()).read_bytes())
        ts, _, raw = ln.partition(b" ")
        r.write("BTCUSDT", raw, int(ts))
    (part,) = (tmp_path / "binance").iterdir()
    data = part.read_bytes()  # what a kill -9 leaves: no gzip trailer, maybe half a deflate block
    assert len(data) > flushed
    for cut in (flushed, (flushed + len(data)) // 2, len(data)):
        part.write_bytes(data[:cut])
        with pytest.raises(EOFError):
            gzip.decompress(part.read_bytes())  # not a complete gzip ...
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            recs = list(iter_recording(part))  # ... but the reader keeps every complete line, and says so
        ids = [x.msg.t for x in recs]
        assert ids == list(range(len(ids))) and len(ids) >= 1000
        assert any("truncated gzip" in x.getMessage() and str(part) in x.getMessage() for x in caplog.records)


# --------------------------------------------------------------------------- live feed -> recording -> replay


def _books(msgs) -> list[tuple[bool, int, bytes, bytes]]:
    out = [(s.valid, s.seq, s.bids.tobytes(), s.asks.tobytes()) for s in msgs if isinstance(s, m.BookSnapshot)]
    first = next(i for i, x in enumerate(out) if x[0])
    return out[first:]


def test_recording_of_a_live_feed_replays_to_the_same_books(tmp_path):
    """The live source (against the fake exchange, with a wire gap that forces a REST resync)
    records every message and snapshot it applied; replaying the files yields the same books."""
    rec = load_recording(require(SPOT), max_depth_events=700)
    lost = int(rec.depth_events[300]["u"])

    live, src = record_live(rec, tmp_path, drop_u={lost}, delay_s=0.002, rotate_bytes=400_000, timeout_s=30)
    assert src.builders["BTCUSDT"].gaps == 1 and src.snapshots_applied == 2  # start + resync
    files = sorted((tmp_path / "binance").iterdir())
    assert len(files) >= 2 and all(f.name.endswith(".gz") for f in files)  # rotated, all closed
    replayed = list(BinanceRecordingReplay(tmp_path / "binance", depth=20))
    # every book, and every invalid marker once the book was up (the replay also announces the
    # not-yet-synced book at its very start; the live source stays silent until it is synced)
    assert _books(replayed) == _books(live) and len(_books(live)) > 600
    assert [t.trade_id for t in replayed if isinstance(t, m.Trade)] == [
        t.trade_id for t in live if isinstance(t, m.Trade)
    ]
    assert sum(not s.valid for s in live if isinstance(s, m.BookSnapshot)) >= 1  # the gap is in both


def _spawn_record(srv: FakeBinance, out: Path, cwd: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`depthpilot record --exchange binance --symbols BTCUSDT --out <out> <extra>` as a subprocess
    against the fake exchange, stdout and stderr merged."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BINANCE_WS_URL": srv.ws_url,
        "BINANCE_REST_URL": srv.base_url,
        "BINANCE_DEPTH_STREAM": "depth@100ms",
        "AMQP_URL": "memory://",
        "MONGO_URL": "mongomock://",
    }
    cmd = [sys.executable, "-m", "depthpilot_cli", "record", "--exchange", "binance", "--symbols", "BTCUSDT"]
    return subprocess.Popen(
        [*cmd, "--out", str(out), *extra], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_depthpilot_record_killed_with_sigkill_leaves_every_earlier_file_readable(tmp_path):
    """`depthpilot record` as a subprocess against the fake exchange, rotating by size; kill -9;
    every closed file is a complete gzip, the crashed one reads up to its last flush, and the
    whole directory replays to valid books with no gap."""
    rec = load_recording(require(SPOT), max_depth_events=3000)
    out = tmp_path / "rec"
    with FakeBinanceThread(FakeBinance(rec, delay_s=0.02, burst=4)) as srv:
        p = _spawn_record(srv, out, tmp_path, "--rotate-mb", "0.15", "--flush-s", "0.1")
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and p.poll() is None:
                d = out / "binance"
                if d.exists() and len([f for f in d.iterdir() if f.name.endswith(".gz")]) >= 2:
                    break
                time.sleep(0.1)
            time.sleep(0.5)  # a few flushes into the current file
            assert p.poll() is None, p.stdout.read().decode()  # type: ignore[union-attr]
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
    files = sorted((out / "binance").iterdir())
    closed = [f for f in files if f.name.endswith(".gz")]
    (part,) = [f for f in files if f.name.endswith(".gz.part")]  # the file being written when killed
    assert len(closed) >= 2
    for f in closed:
        gzip.decompress(f.read_bytes())  # complete gzip streams (CRC checked)
    n_part = sum(1 for _ in iter_recording(part))
    assert n_part > 0
    rep = BinanceRecordingReplay(out / "binance", depth=20)
    replayed = [x for x in rep if isinstance(x, m.BookSnapshot)]
    assert not replayed[0].valid and all(s.valid for s in replayed[1:])  # synced once, then no gap across files
    assert len(replayed) > 100 and rep.builders["BTCUSDT"].gaps == 0
    seqs = np.array([s.seq for s in replayed])
    assert (np.diff(seqs) > 0).all()
    # every recorded book is the book the exchange's own recording gives at that update id
    ref = {
        s.seq: s
        for s in BinanceRecordingReplay(require(SPOT), depth=20, trades=False)
        if isinstance(s, m.BookSnapshot) and s.valid
    }
    for s in replayed[1:]:
        np.testing.assert_array_equal(s.bids, ref[s.seq].bids)
        np.testing.assert_array_equal(s.asks, ref[s.seq].asks)


def test_record_refuses_an_unknown_exchange_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    r = CliRunner().invoke(app, ["record", "--exchange", "nosuchex", "--symbols", "X", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown exchange 'nosuchex'" in r.output


@pytest.mark.parametrize(("flag", "value"), [("--rotate-mb", "-1"), ("--flush-s", "-0.5"), ("--rotate-mb", "nan")])
def test_record_refuses_a_negative_size_or_interval_in_one_line_naming_the_flag(tmp_path, flag, value):
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    args = ["record", "--exchange", "binance", "--symbols", "BTCUSDT", "--out", str(tmp_path), flag, value]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and r.output.strip() == f"{flag}: must be >= 0, got {float(value)}"
    assert not any(tmp_path.iterdir())  # refused before anything was opened


def test_collector_service_records_with_COLLECTOR_RECORD_DIR_and_closes_files_on_stop(tmp_path, uid):
    from collector.service import CollectorService
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings

    rec = load_recording(require(SPOT), max_depth_events=600)
    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    with FakeBinanceThread(FakeBinance(rec, delay_s=0.005, burst=4)) as srv:
        settings = load_settings(
            AMQP_URL=url,
            COLLECTOR_SOURCE="live",
            DEPTHPILOT_EXCHANGES="binance",
            DEPTHPILOT_SYMBOLS="BTCUSDT",
            BINANCE_WS_URL=srv.ws_url,
            BINANCE_REST_URL=srv.base_url,
            BINANCE_DEPTH_STREAM="depth@100ms",
            BINANCE_TRADE_STREAM="trade",
            COLLECTOR_RECORD_DIR=str(tmp_path),
            COLLECTOR_RECORD_FLUSH_S="0.1",
        )
        bus = connect_bus(url, "collector").start()
        svc = CollectorService(settings, bus, None)
        svc.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not srv.done.is_set():
                time.sleep(0.05)
            time.sleep(0.5)
            assert svc.recorders.stats()["messages"] > 600
            st = svc.stats()
            assert st["record.messages"] > 600 and st["record.files"] == 1  # in the heartbeat
        finally:
            svc.stop()
            bus.close()
    files = list((tmp_path / "binance").iterdir())
    assert files and all(f.name.endswith(".gz") for f in files)  # closed cleanly on stop
    books = [x for x in BinanceRecordingReplay(tmp_path / "binance", depth=20) if isinstance(x, m.BookSnapshot)]
    assert books[-1].valid and books[-1].seq == srv.final_u  # the recording holds the whole session


def test_depthpilot_record_stopped_with_sigterm_closes_every_file(tmp_path):
    rec = load_recording(require(SPOT), max_depth_events=3000)
    out = tmp_path / "rec"
    with FakeBinanceThread(FakeBinance(rec, delay_s=0.02, burst=4)) as srv:
        p = _spawn_record(srv, out, tmp_path)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and p.poll() is None:
                d = out / "binance"
                if d.exists() and any(d.iterdir()):
                    break
                time.sleep(0.1)
            time.sleep(1.5)
            p.send_signal(signal.SIGTERM)
            text = p.communicate(timeout=20)[0].decode()
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, text
    assert "messages" in text and "recorded " in text  # progress lines and the summary
    (f,) = (out / "binance").iterdir()
    assert f.name.endswith(".gz")
    assert gzip.decompress(f.read_bytes()).count(b"\n") > 10  # a complete gzip stream
