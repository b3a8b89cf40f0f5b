"""Kraken spot book (websocket v1 and v2) with CRC32 checksums.

v1: a REAL clip (XBT/USD book-10, 2023-05-29: snapshot + 110 checksummed updates, see the
dataset's PROVENANCE.md). v2: no real v2 capture is available, so the v2 tests are built from
Kraken's documentation ("Book checksum (WebSocket v2)": JSON-number prices, checksum over
strings formatted with the instrument's price/qty precision) with hand-built messages whose
expected checksum strings are written out by hand below, and the live v2 feed against a fake
v2 server that re-encodes the real v1 clip's levels (checksums computed by the fake itself)."""

from __future__ import annotations

import copy
import json
import zlib
from decimal import Decimal

import pytest

from collector.exchanges.core import ApplyResult, BookMessageError
from collector.exchanges.kraken_spot import (
    KrakenSpotBookBuilder,
    checksum_field,
    kraken_checksum,
)
from tests.collector.fakes.data import require

CLIP = "kraken-spot-xbtusd-book10-2023-05-29/orderbook.json"


def _clip():
    d = json.loads(require(CLIP).read_text())
    return d["init"], d["updates"]


def test_v1_clip_110_of_110_checksums_match():
    init, updates = _clip()
    assert init[-1] == "XBT/USD" and init[-2] == "book-10"  # pair and depth from the data
    b = KrakenSpotBookBuilder(init[-1], depth=int(init[-2].split("-")[1]))
    assert b.process(init) is ApplyResult.SNAPSHOT and b.valid
    results = [b.process(u) for u in updates]
    assert results.count(ApplyResult.APPLIED) == len(updates) == 110
    assert b.stats.checksum_ok == 110 and b.stats.checksum_failed == 0
    bids, asks = b.levels()
    assert len(bids) == len(asks) == 10 and float(bids[0][0]) < float(asks[0][0])
    snap = b.to_snapshot(10, ts_recv=1)
    assert snap.valid and snap.best_bid() == float(bids[0][0]) and snap.best_ask() == float(asks[0][0])
    assert snap.ts_exchange > 1_685_349_900 * 10**9  # the levels' own timestamps


def test_v1_corrupted_update_is_detected_and_resynced_from_a_fresh_snapshot():
    init, updates = _clip()
    ref = KrakenSpotBookBuilder("XBT/USD")  # the true book, for the "fresh snapshot" a re-subscribe returns
    ref.process(init)
    b = KrakenSpotBookBuilder("XBT/USD")
    b.process(init)
    k = 40
    for u in updates[:k]:
        assert b.process(u) is ApplyResult.APPLIED
        ref.process(u)
    bad = copy.deepcopy(updates[k])
    side = "a" if "a" in bad[1] else "b"
    p, q, *rest = bad[1][side][0]
    bad[1][side][0] = [p, f"{float(q) + 0.5:.8f}", *rest]  # one volume off
    assert b.process(bad) is ApplyResult.CHECKSUM_FAILED
    assert not b.valid and b.needs_resync and b.reason.startswith("checksum: local ")
    ref.process(updates[k])
    # until the re-subscription's snapshot arrives, updates are dropped
    assert b.process(updates[k + 1]) is ApplyResult.AWAITING_SNAPSHOT
    ref.process(updates[k + 1])
    bids, asks = ref.levels()
    fresh = [
        336,
        {
            "as": [[px, v, "1685349940.000000"] for px, v in asks],
            "bs": [[px, v, "1685349940.000000"] for px, v in bids],
        },
        "book-10",
        "XBT/USD",
    ]
    assert b.process(fresh) is ApplyResult.SNAPSHOT and b.valid
    for u in updates[k + 2 :]:
        assert b.process(u) is ApplyResult.APPLIED
    assert b.stats.checksum_failed == 1 and b.stats.checksum_ok == 108  # 110 - the bad one - the dropped one
    assert b.stats.resyncs_requested == 1
    assert b.levels() == _rebuilt_all(init, updates)


def _rebuilt_all(init, updates):
    x = KrakenSpotBookBuilder("XBT/USD")
    x.process(init)
    for u in updates:
        x.process(u)
    return x.levels()


def test_v1_message_with_asks_and_bids_maps_and_other_channels():
    b = KrakenSpotBookBuilder("XBT/USD")
    snap = [
        1,
        {
            "as": [["101.0", "1.0", "1.0"], ["102.0", "2.0", "1.0"]],
            "bs": [["100.0", "1.5", "1.0"], ["99.0", "0.5", "1.0"]],
        },
        "book-10",
        "XBT/USD",
    ]
    assert b.process(snap) is ApplyResult.SNAPSHOT
    upd = [1, {"a": [["101.0", "0.0", "2.0"]]}, {"b": [["100.5", "3.0", "2.0"]]}, "book-10", "XBT/USD"]
    # expected: asks 102.0/2.0; bids 100.5/3.0, 100.0/1.5, 99.0/0.5  (hand-written string)
    upd[2]["c"] = str(zlib.crc32(b"1020201005301000159905"))
    assert b.process(upd) is ApplyResult.APPLIED and b.stats.checksum_ok == 1
    assert b.process([2, [["1.0", "1.0", "1.0", "s", "l", ""]], "trade", "XBT/USD"]) is ApplyResult.IGNORED
    assert b.process([1, {"a": [["1", "1", "1"]]}, "book-10", "ETH/USD"]) is ApplyResult.IGNORED
    with pytest.raises(BookMessageError, match="krakenspot XBT/USD"):
        b.process([1, {"a": [["oops"]]}, "book-10", "XBT/USD"])


def test_v1_book_is_truncated_to_the_subscribed_depth():
    b = KrakenSpotBookBuilder("XBT/USD", depth=10)
    b.process(
        [
            1,
            {
                "as": [[f"{200 + i}.0", "1.0", "1"] for i in range(10)],
                "bs": [[f"{100 - i}.0", "1.0", "1"] for i in range(10)],
            },
            "book-10",
            "XBT/USD",
        ]
    )
    b.process([1, {"b": [["100.5", "1.0", "2"]]}, "book-10", "XBT/USD"])  # pushes 91.0 out of scope
    bids, _ = b.levels()
    assert len(bids) == 10 and bids[0][0] == "100.5" and bids[-1][0] == "92.0"


# --------------------------------------------------------------------------- v2 (built from Kraken's documentation)


def _v2(kind, bids, asks, checksum, symbol="BTC/USD"):
    return {
        "channel": "book",
        "type": kind,
        "data": [
            {
                "symbol": symbol,
                "bids": [{"price": p, "qty": q} for p, q in bids],
                "asks": [{"price": p, "qty": q} for p, q in asks],
                "checksum": checksum,
                "timestamp": "2023-10-06T17:35:55.440295Z",
            }
        ],
    }


INSTRUMENT = {
    "channel": "instrument",
    "type": "snapshot",
    "data": {
        "assets": [],
        "pairs": [
            {
                "symbol": "BTC/USD",
                "base": "BTC",
                "quote": "USD",
                "price_precision": 1,
                "qty_precision": 8,
                "price_increment": 0.1,
                "qty_increment": 0.00000001,
                "status": "online",
            }
        ],
    },
}


def test_v2_checksum_uses_the_instrument_precision_not_the_json_number():
    # JSON numbers drop trailing zeros: 45283.0 arrives as 45283.0/45283, qty 0.1 as 0.1. Kraken hashes
    # "45283.0" -> "452830" and "0.10000000" -> "10000000" (precision 1 / 8 from the instrument channel).
    asks = [(45285.2, 0.001), (45286.0, 1.5)]
    bids = [(45283.5, 0.1), (45283, 2)]
    by_hand = (
        "452852"
        "100000"
        "452860"
        "150000000"  # asks, low to high
        "452835"
        "10000000"
        "452830"
        "200000000"
    )  # bids, high to low
    crc = zlib.crc32(by_hand.encode())
    b = KrakenSpotBookBuilder("BTC/USD")
    assert b.process(INSTRUMENT) is ApplyResult.IGNORED and (b.price_precision, b.qty_precision) == (1, 8)
    assert b.process(_v2("snapshot", bids, asks, crc)) is ApplyResult.SNAPSHOT and b.valid
    assert b.stats.checksum_ok == 1  # v2 snapshots carry a checksum too
    assert b.book.ts_exchange == 1696613755440295000
    # an update: qty 0 deletes, a new level; the expected string again by hand
    upd = _v2(
        "update",
        [(45283.5, 0)],
        [(45285.9, 0.25)],
        zlib.crc32(b"45285210000045285925000000452860150000000452830200000000"),
    )
    assert b.process(upd) is ApplyResult.APPLIED and b.stats.checksum_ok == 2
    # the same numbers without the precision formatting would hash differently
    naive = kraken_checksum([("45285.2", "0.001")], [("45283.5", "0.1")])
    assert naive != kraken_checksum([("45285.2", "0.00100000")], [("45283.5", "0.10000000")])


def test_v2_mismatch_resyncs_on_the_next_snapshot_and_decimals_parse_the_same():
    b = KrakenSpotBookBuilder("BTC/USD", price_precision=1, qty_precision=8)
    good = zlib.crc32(b"1000100000000990200000000")
    assert b.process(_v2("snapshot", [(Decimal("99.0"), Decimal(2))], [(100.0, 1.0)], good)) is ApplyResult.SNAPSHOT
    assert b.process(_v2("update", [(99.0, 3.0)], [], good)) is ApplyResult.CHECKSUM_FAILED  # 2 -> 3 not hashed
    assert b.process(_v2("update", [(98.0, 1.0)], [], 0)) is ApplyResult.AWAITING_SNAPSHOT
    assert b.process(_v2("snapshot", [(99.0, 2.0)], [(100.0, 1.0)], good)) is ApplyResult.SNAPSHOT and b.valid


def test_v2_without_precision_is_one_clear_error():
    b = KrakenSpotBookBuilder("BTC/USD")
    with pytest.raises(BookMessageError, match="precision is unknown"):
        b.process(_v2("snapshot", [(1.0, 1.0)], [(2.0, 1.0)], 0))


def test_checksum_field():
    assert checksum_field("0.05000") == "5000" and checksum_field("0.00000304") == "304"
    assert checksum_field("45285.2") == "452852"


# --------------------------------------------------------------------------- live feed (fake v1 server) + recording


def test_live_feed_resyncs_on_a_corrupted_update_and_its_recording_replays_to_the_same_books(tmp_path):
    import asyncio
    import contextlib

    from collector.exchanges.kraken_spot_feed import (
        KrakenSpotSource,
        kraken_recording_replay,
    )
    from collector.recorder import Recorder
    from collector.replay_formats import replay_sources
    from depthpilot import messages as m
    from tests.collector.fakes.kraken_spot_server import FakeKrakenSpot

    init, updates = _clip()

    async def main():
        async with FakeKrakenSpot(init, updates, corrupt={50}) as srv:
            rec = Recorder(tmp_path, "krakenspot")
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
            return srv, src, out

    srv, src, live = asyncio.run(main())
    b = src.builders["XBT/USD"]
    assert src.resubscribes == 1 and srv.subscribes == 2 and srv.unsubscribes == 1
    assert b.stats.checksum_failed == 1 and b.stats.snapshots == 2 and b.stats.checksum_ok >= 100
    assert b.valid
    truth_bids = sorted(srv.bids.items(), key=lambda kv: -float(kv[0]))
    truth_asks = sorted(srv.asks.items(), key=lambda kv: float(kv[0]))
    assert b.levels() == (truth_bids, truth_asks)  # after the resync the book is the exchange's
    assert [s.valid for s in live].count(False) == 1 and all(s.exchange == "krakenspot" for s in live)
    (f,) = (tmp_path / "krakenspot").iterdir()
    replayed = list(kraken_recording_replay(f))
    key = [(s.valid, s.bids.tobytes(), s.asks.tobytes()) for s in live]
    assert [(s.valid, s.bids.tobytes(), s.asks.tobytes()) for s in replayed] == key
    (src2,) = replay_sources([f], 10, None)  # REPLAY_PATHS recognises the recording by its content
    assert sum(isinstance(x, m.BookSnapshot) for x in src2) == len(live)


def test_registry_serves_krakenspot():
    from collector.venues import FeedContext, venue
    from depthpilot.settings import load_settings

    s = load_settings(KRAKEN_SPOT_WS_VERSION="1", KRAKEN_SPOT_WS_URL="ws://127.0.0.1:1/", BOOK_DEPTH="20")
    (feed,) = venue("krakenspot").feeds(FeedContext(s, print, print), ["XBT/USD"], "krakenspot")
    src = feed.make()
    assert (src.version, src.depth, src.emit_depth, src.ws_url) == (1, 25, 20, "ws://127.0.0.1:1/")


def test_depthpilot_record_krakenspot_counts_the_checksum_failure_as_a_gap(tmp_path):
    from typer.testing import CliRunner

    from collector.exchanges.kraken_spot_feed import kraken_recording_replay
    from depthpilot_cli.main import app
    from tests.collector.fakes.klines import ServerThread
    from tests.collector.fakes.kraken_spot_server import FakeKrakenSpot

    init, updates = _clip()
    with ServerThread(FakeKrakenSpot(init, updates, corrupt={30}, delay_s=0.005)) as th:
        r = CliRunner().invoke(
            app,
            ["record", "--exchange", "krakenspot", "--symbols", "XBT/USD", "--out", str(tmp_path), "--duration", "2"],
            env={
                "KRAKEN_SPOT_WS_VERSION": "1",
                "KRAKEN_SPOT_WS_URL": th.srv.ws_url,
                "AMQP_URL": "memory://",
                "MONGO_URL": "mongomock://",
            },
        )
    assert r.exit_code == 0, r.output
    assert "(1 gaps)" in r.output and "in 1 files" in r.output
    (f,) = (tmp_path / "krakenspot").iterdir()
    assert f.name.startswith("xbt-usd_") and f.name.endswith(".gz")
    books = list(kraken_recording_replay(f))
    assert [b.valid for b in books].count(False) == 1 and books[-1].valid


def test_live_v2_feed_on_the_clip_reencoded_as_v2_with_a_corrupted_update():
    """The real clip's levels served as websocket v2 (JSON numbers, checksums from the fake's own
    book with the instrument's precision): every checksum matches but the corrupted one, which
    re-subscribes; the book ends equal to the exchange's."""
    import asyncio
    import contextlib

    from collector.exchanges.kraken_spot_feed import KrakenSpotSource
    from tests.collector.fakes.kraken_spot_server import FakeKrakenSpotV2

    init, updates = _clip()

    async def main():
        async with FakeKrakenSpotV2(init, updates, corrupt={70}) as srv:
            src = KrakenSpotSource(["BTC/USD"], depth=10, version=2, ws_url=srv.ws_url)
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
            return srv, src, out

    srv, src, live = asyncio.run(main())
    b = src.builders["BTC/USD"]
    assert (b.price_precision, b.qty_precision) == (1, 8)
    assert src.resubscribes == 1 and srv.subscribes == 2 and b.stats.checksum_failed == 1
    assert b.stats.checksum_ok >= 100 and b.valid and [s.valid for s in live].count(False) == 1
    bids, asks = b.levels()
    assert [float(p) for p, _ in bids] == sorted((float(p) for p in srv.bids), reverse=True)
    assert [float(q) for _, q in asks] == [float(srv.asks[p]) for p in sorted(srv.asks, key=float)]
