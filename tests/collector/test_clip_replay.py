"""Replay of raw websocket captures (cryptofeed clips, Bybit v5 archive) through the same
book builders as live feeds, and through the collector service."""

from __future__ import annotations

import copy
import time

import pytest

from collector.clip_replay import CLIP_KINDS, BuilderReplay, bybit_archive_replay, clip_replay
from collector.exchanges.cryptofeed_clips import CLIPS_DATASET, iter_clip
from collector.exchanges.okx import OkxBookBuilder
from depthpilot import messages as m

CLIPS = ["OKX.ws.1.0.gz", "KRAKEN_FUTURES.ws.1.0.gz", "BITMEX.ws.1.0.gz", "BYBIT.ws.26.0.gz"]
OB500 = "tardis-format-fixtures/xrpusdt-ob500.data.zip"


@pytest.mark.parametrize("clip", CLIPS)
def test_clip_replays_to_valid_uncrossed_books(clip, data_dir):
    r = clip_replay(data_dir / CLIPS_DATASET / "raw" / clip, depth=10)
    snaps = list(r)
    assert len(snaps) > 50
    assert all(s.valid and s.best_bid() < s.best_ask() for s in snaps)
    ts = [s.ts_recv for s in snaps]
    assert ts == sorted(ts)
    # one snapshot per book-changing message: equals what the builders counted
    applied = sum(b.stats.deltas + b.stats.snapshots for b in r.builders.values())
    assert len(snaps) == applied
    assert all(b.stats.gaps == 0 and b.stats.checksum_failed == 0 for b in r.builders.values())


def test_okx_checksum_failure_in_replay_marks_the_book_invalid(data_dir):
    msgs = [(c.ts_recv_ns, c.msg) for c in iter_clip(data_dir / CLIPS_DATASET / "raw" / CLIPS[0])]
    book_idx = [
        i
        for i, (_, msg) in enumerate(msgs)
        if msg.get("action") == "update" and msg["arg"]["instId"] == "BTC-USDT" and msg["data"][0]["bids"]
    ]
    i = book_idx[5]
    bad = copy.deepcopy(msgs[i][1])
    price, size, *rest = bad["data"][0]["bids"][0]
    bad["data"][0]["bids"][0] = [price, str(float(size) + 1.0), *rest]
    msgs[i] = (msgs[i][0], bad)
    r = BuilderReplay(lambda: iter(msgs), OkxBookBuilder, CLIP_KINDS["OKX"][1], depth=10)
    snaps = [s for s in r if s.symbol == "BTC-USDT"]
    invalid = [s for s in snaps if not s.valid]
    assert len(invalid) == 1 and "checksum" in invalid[0].reason
    # every book before it was valid; after it the builder drops deltas until a fresh snapshot
    # (none follows in this clip), so the invalid one is the last BTC-USDT book published
    assert snaps[-1] is invalid[0] and all(s.valid for s in snaps[:-1])


def test_bybit_archive_replay(data_dir):
    r = bybit_archive_replay(data_dir / OB500, depth=50)
    snaps = list(r)
    assert len(snaps) == 50 and all(s.valid for s in snaps)
    assert snaps[0].exchange == "bybit" and snaps[0].symbol == "XRPUSDT" and len(snaps[-1].bids) == 50


def test_service_replays_clips_and_archive(uid, data_dir):
    from collector.service import CollectorService
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings
    from depthpilot.topology import MARKET_EXCHANGE, DeliveryClass, QueueDef

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    paths = f"{data_dir / CLIPS_DATASET / 'raw' / CLIPS[0]},{data_dir / OB500}"
    settings = load_settings(
        AMQP_URL=url,
        COLLECTOR_SOURCE="replay",
        REPLAY_PATHS=paths,
        REPLAY_SPEED="0",
        SNAPSHOT_RATE_HZ="1000",
        BOOK_DEPTH="25",
    )
    watcher = connect_bus(url, "watch").start()
    got: list[m.BookSnapshot] = []
    watcher.subscribe(
        QueueDef(f"t.clips.{uid}", MARKET_EXCHANGE, ("book.#",), DeliveryClass.MARKET, max_length=100_000),
        lambda msg, d: got.append(msg),
    )
    bus = connect_bus(url, "collector").start()
    svc = CollectorService(settings, bus, None).start()
    try:
        assert svc.finished.wait(60)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not {"okx", "bybit"} <= {s.exchange for s in got}:
            time.sleep(0.05)
        assert {("okx", "BTC-USDT"), ("bybit", "XRPUSDT")} <= {(s.exchange, s.symbol) for s in got}
        assert all(s.valid for s in got)
    finally:
        svc.stop()
        bus.close()
        watcher.close()
