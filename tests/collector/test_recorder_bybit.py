"""Recording the live Bybit feed (real pybit client against the local Bybit v5 websocket
fake): the recording replays to the very books and trades the live feed emitted, across a
gap-resync, a dropped socket and size rotation; `depthpilot record --exchange bybit` killed
with SIGKILL leaves every earlier file readable; the service records with COLLECTOR_RECORD_DIR."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collector.clip_replay import BuilderReplay, _bybit_topic, bybit_recording_replay
from collector.exchanges.bybit import BybitBookBuilder
from collector.recorder import Recorder
from collector.recording_set import read_lines
from collector.replay_formats import replay_sources
from collector.venues import BybitSource
from depthpilot import messages as m
from tests.collector.fakes.bybit_ws_server import FakeBybitWS
from tests.collector.fakes.data import bybit_ob500_messages, bybit_v2_trade_messages, bybit_v2_trades_as_v5

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


def _book_key(s: m.BookSnapshot) -> tuple:
    return (
        s.exchange,
        s.symbol,
        s.valid,
        s.reason,
        s.seq,
        s.ts_exchange,
        s.ts_recv,
        s.bids.tobytes(),
        s.asks.tobytes(),
    )


def _trade_key(t: m.Trade) -> tuple:
    return (t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_exchange, t.ts_recv)


def _reference_books(msgs: list[dict], depth: int) -> list[m.BookSnapshot]:
    """The books the builder makes from the fake's messages, served once without loss."""
    return [
        x
        for x in BuilderReplay(
            lambda: ((0, dict(mm, topic="orderbook.50.XRPUSDT")) for mm in msgs),
            BybitBookBuilder,
            _bybit_topic("orderbook."),
            depth,
        )
        if isinstance(x, m.BookSnapshot)
    ]


def test_live_bybit_recording_replays_to_the_same_books_and_trades_across_resync_reconnect_and_rotation(tmp_path):
    msgs = bybit_ob500_messages()
    trades = bybit_v2_trades_as_v5(bybit_v2_trade_messages())
    last_u = msgs[-1]["data"]["u"]
    n_trades = sum(len(x["data"]) for x in trades)
    srv = FakeBybitWS(msgs, skip_u=msgs[10]["data"]["u"], close_after=30, trades=trades, delay_s=0.002)

    async def main() -> list:
        rec = Recorder(tmp_path, "bybit", rotate_bytes=3000)
        out: list = []
        sources = 0
        while True:  # what the collector's supervisor does: a failed source is rebuilt
            sources += 1
            src = BybitSource(
                "XRPUSDT", depth=50, emit_depth=20, testnet=False, trades=True, endpoint=srv.url, raw_sink=rec.write
            )
            mine = 0  # trades of this connection
            try:
                async with contextlib.aclosing(src.stream()) as it:
                    async for x in it:
                        out.append(x)
                        mine += isinstance(x, m.Trade)
                        if mine >= n_trades and any(
                            isinstance(b, m.BookSnapshot) and b.valid and b.seq == last_u for b in out
                        ):
                            rec.close()
                            return out
            except ConnectionError:
                assert sources < 5
            finally:
                await src.close()

    with srv:
        live = asyncio.run(asyncio.wait_for(main(), 60))
    assert srv.connections == 2  # the socket was dropped once and re-opened
    ops = [x.get("op") for x in srv.received if x.get("op") in ("subscribe", "unsubscribe")]
    assert ops.count("unsubscribe") == 1  # the gap: unsubscribe + subscribe on the first socket
    files = sorted((tmp_path / "bybit").iterdir())
    assert len(files) >= 3 and all(f.name.endswith(".gz") for f in files)  # rotated, all closed
    live_books = [_book_key(b) for b in live if isinstance(b, m.BookSnapshot)]
    assert sum(not b[2] for b in live_books) >= 1  # the broken book is in the live output ...
    for paths in ([tmp_path / "bybit"], files, [tmp_path]):  # the directory, its files, the recorder root
        (src,) = replay_sources(paths, 20, None)  # recognised by content, one stream
        replayed = list(src)
        assert [_book_key(b) for b in replayed if isinstance(b, m.BookSnapshot)] == live_books  # ... and in the replay
        assert [_trade_key(t) for t in replayed if isinstance(t, m.Trade)] == [
            _trade_key(t) for t in live if isinstance(t, m.Trade)
        ]
    # and the last book is the exchange's: the complete replay of the fake's messages
    ref = _reference_books(msgs, 20)[-1]
    last = [b for b in live if isinstance(b, m.BookSnapshot)][-1]
    assert last.valid and last.seq == ref.seq
    np.testing.assert_array_equal(last.bids, ref.bids)
    np.testing.assert_array_equal(last.asks, ref.asks)


def test_a_later_bybit_file_alone_never_builds_a_book_without_a_snapshot(tmp_path):
    msgs = bybit_ob500_messages()
    with Recorder(tmp_path, "bybit", rotate_bytes=2000) as rec:
        for i, mm in enumerate(msgs):
            rec.write(
                "XRPUSDT",
                json.dumps(dict(mm, topic="orderbook.50.XRPUSDT")),
                1_700_000_000_000_000_000 + i,
            )
    files = sorted((tmp_path / "bybit").iterdir(), key=lambda f: next(read_lines(f))[0])
    assert len(files) >= 3
    # the set continues exactly: one book per message, the last one the full book
    books = list(bybit_recording_replay(files, 20))
    assert len(books) == len(msgs) and all(b.valid for b in books)
    # a file without its predecessor holds deltas only: the builder waits for a snapshot
    assert list(bybit_recording_replay(files[1], 20)) == []
    # a file missing in the middle is a gap: the book turns invalid and stays so (no snapshot follows)
    broken = list(bybit_recording_replay([files[0], *files[2:]], 20))
    assert broken and broken[-1].valid is False and "gap" in broken[-1].reason
    assert all(b.valid for b in broken[:-1])


def _record_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BYBIT_WS_URL": url,
        "AMQP_URL": "memory://",
        "MONGO_URL": "mongomock://",
        "BOOK_DEPTH": "20",
    }


def test_depthpilot_record_bybit_killed_with_sigkill_leaves_every_earlier_file_readable(tmp_path):
    msgs = bybit_ob500_messages()
    out = tmp_path / "rec"
    with FakeBybitWS(msgs * 1, delay_s=0.08) as srv:
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "depthpilot_cli",
                "record",
                "--exchange",
                "bybit",
                "--symbols",
                "XRPUSDT",
                "--out",
                str(out),
                "--rotate-mb",
                "0.002",
                "--flush-s",
                "0.05",
            ],
            env=_record_env(srv.url),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and p.poll() is None:
                d = out / "bybit"
                if d.exists() and len([f for f in d.iterdir() if f.name.endswith(".gz")]) >= 3:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            assert p.poll() is None, p.stdout.read().decode()  # type: ignore[union-attr]
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
    files = sorted((out / "bybit").iterdir())
    closed = [f for f in files if f.name.endswith(".gz")]
    parts = [f for f in files if f.name.endswith(".gz.part")]
    assert len(closed) >= 3 and len(parts) == 1  # the file being written when killed
    assert sum(1 for _ in read_lines(parts[0])) >= 1  # readable up to its last flush
    for f in closed:
        gzip.decompress(f.read_bytes())  # complete gzip streams (CRC checked)
    (src,) = replay_sources([out], 20, None)  # the root: closed files + the killed one's flushed prefix
    replayed = [b for b in src if isinstance(b, m.BookSnapshot)]
    ref = _reference_books(msgs, 20)
    assert len(replayed) >= 8 and all(b.valid for b in replayed)
    for b, r in zip(replayed, ref):  # each recorded book is the exchange's book at that update id
        assert b.seq == r.seq
        np.testing.assert_array_equal(b.bids, r.bids)
        np.testing.assert_array_equal(b.asks, r.asks)


def test_collector_service_records_bybit_with_COLLECTOR_RECORD_DIR(tmp_path, uid):
    from collector.service import CollectorService
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings

    msgs = bybit_ob500_messages()
    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    with FakeBybitWS(msgs, skip_u=msgs[25]["data"]["u"], delay_s=0.005) as srv:
        settings = load_settings(
            AMQP_URL=url,
            COLLECTOR_SOURCE="live",
            DEPTHPILOT_EXCHANGES="bybit",
            DEPTHPILOT_SYMBOLS="XRPUSDT",
            BYBIT_WS_URL=srv.url,
            BOOK_DEPTH="20",
            COLLECTOR_TRADES="false",
            COLLECTOR_RECORD_DIR=str(tmp_path),
            COLLECTOR_RECORD_FLUSH_S="0.1",
            COLLECTOR_RECORD_ROTATE_MB="0.003",
        )
        bus = connect_bus(url, "collector").start()
        svc = CollectorService(settings, bus, None)
        svc.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and svc.recorders is None or svc.recorders.stats()["messages"] < 50 + 26:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            svc.stop()
            bus.close()
    files = list((tmp_path / "bybit").iterdir())
    assert len(files) >= 3 and all(f.name.endswith(".gz") for f in files)  # closed cleanly on stop
    (src,) = replay_sources([tmp_path / "bybit"], 20, None)
    books = [b for b in src if isinstance(b, m.BookSnapshot)]
    assert sum(not b.valid for b in books) == 1  # the gap, once; then the resync snapshot
    ref = _reference_books(msgs, 20)[-1]
    assert books[-1].valid and books[-1].seq == ref.seq
    np.testing.assert_array_equal(books[-1].bids, ref.bids)
    np.testing.assert_array_equal(books[-1].asks, ref.asks)


def test_backtest_and_features_loaders_read_a_bybit_recording_directory(tmp_path):
    from backtest.data import load_recording
    from features.build import load_books

    msgs = bybit_ob500_messages()
    with Recorder(tmp_path, "bybit", rotate_bytes=2000) as rec:
        for i, mm in enumerate(msgs):
            rec.write("XRPUSDT", json.dumps(dict(mm, topic="orderbook.50.XRPUSDT")), 1_700_000_000_000_000_000 + i)
    assert len(list((tmp_path / "bybit").iterdir())) >= 3
    ref = _reference_books(msgs, 20)
    for path in (tmp_path, tmp_path / "bybit"):
        books = load_recording(path, depth=20)
        assert (books.exchange, books.symbol, len(books)) == ("bybit", "XRPUSDT", len(ref)) and books.valid.all()
        np.testing.assert_array_equal(books.bids[-1], ref[-1].bids)
        np.testing.assert_array_equal(books.asks[-1], ref[-1].asks)
        ts, bids, asks = load_books(path, depth=20)  # `depthpilot features build --books` / training
        assert len(ts) == len(ref) and np.isfinite(bids[:, 0, 0]).all()
        np.testing.assert_array_equal(bids[-1], ref[-1].bids)
        np.testing.assert_array_equal(asks[-1], ref[-1].asks)


def test_depthpilot_record_bybit_rebuilds_a_dropped_feed_and_keeps_recording(tmp_path, monkeypatch):
    """The fake drops the socket after 20 book messages: `depthpilot record` reports it, opens a
    new connection (a fresh snapshot) and the recording holds both, replaying to the full book."""
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    msgs = bybit_ob500_messages()
    with FakeBybitWS(msgs, close_after=20, delay_s=0.01) as srv:
        for k, v in _record_env(srv.url).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("COLLECTOR_TRADES", "false")
        r = CliRunner().invoke(
            app, ["record", "--exchange", "bybit", "--symbols", "XRPUSDT", "--out", str(tmp_path), "--duration", "4"]
        )
    assert r.exit_code == 0, r.output
    assert srv.connections == 2 and "reconnecting" in r.output
    (src,) = replay_sources([tmp_path], 20, None)
    books = [b for b in src if isinstance(b, m.BookSnapshot)]
    assert len(books) == 20 + len(msgs) and all(b.valid for b in books)  # 20, then the whole replay again
    ref = _reference_books(msgs, 20)
    for b, r_ in zip(books, ref[:20] + ref):
        assert b.seq == r_.seq
        np.testing.assert_array_equal(b.bids, r_.bids)
        np.testing.assert_array_equal(b.asks, r_.asks)


def test_depthpilot_record_stops_with_one_line_when_a_feed_never_delivers(tmp_path, monkeypatch):
    import socket

    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in _record_env(f"ws://127.0.0.1:{port}").items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(app, ["record", "--exchange", "bybit", "--symbols", "XRPUSDT", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "record failed: " in r.output
    assert r.output.count("reconnecting") == 4  # MAX_FAILS - 1 retries, then the error
