"""Live Binance diff-depth source against a local fake Binance replaying REAL recordings.

The fake (tests/collector/fakes/binance_server.py) serves the recorded REST snapshot (then the
exchange book as of its latest diff) and streams the recorded depth diffs + trades over a
websocket on 127.0.0.1. The books built live must equal the books rebuilt offline by
BinanceRecordingReplay at the same update ids, through gaps, reconnects and REST errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import numpy as np
import pytest

from collector.binance_ws import (
    BinanceDiffSource,
    BinanceHTTPError,
    BinanceSourceError,
    RetryEvent,
    is_retryable,
    snapshot_limit,
    stream_connections,
)
from collector.replay import BinanceRecordingReplay
from depthpilot import messages as m
from tests.collector.fakes.binance_server import FakeBinance, load_recording
from tests.collector.fakes.data import require

pytestmark = pytest.mark.timeout(60)

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"
USDM = "binance-usdm-btcusdt-2024-07-18-l2diff/raw/btcusdt_20240718.gz"
DEPTH = 20
N_SPOT = 1200  # recorded diffs played by the fault tests (the whole file has 3,451): ~1 s each

_refs: dict[tuple[str, str], dict] = {}
_recs: dict[tuple[str, int | None], object] = {}


def _reference(rel: str, market: str, n: int | None):
    """(recording cut to ``n`` diffs, {seq: (bids, asks)} of the valid books that
    BinanceRecordingReplay rebuilds offline from the same file)."""
    path = require(rel)
    if (rel, market) not in _refs:
        _refs[rel, market] = {
            s.seq: (s.bids, s.asks)
            for s in BinanceRecordingReplay(path, market=market, depth=DEPTH, trades=False)
            if isinstance(s, m.BookSnapshot) and s.valid
        }
    if (rel, n) not in _recs:
        _recs[rel, n] = load_recording(path, max_depth_events=n)
    return _recs[rel, n], _refs[rel, market]


def _source(srv: FakeBinance, market: str, **kw) -> BinanceDiffSource:
    kw.setdefault("depth_stream", "depth@100ms" if market == "spot" else "depth@0ms")  # as recorded
    kw.setdefault("trade_stream", "trade")
    kw.setdefault("backoff_initial_s", 0.01)
    kw.setdefault("reconnect_initial_s", 0.01)
    kw.setdefault("rest_timeout_s", 2.0)
    return BinanceDiffSource(market, ["BTCUSDT"], depth=DEPTH, ws_url=srv.ws_url, rest_url=srv.base_url, **kw)


async def _collect(
    src: BinanceDiffSource, srv: FakeBinance, timeout: float = 15.0, min_trades: int = 0, until=None
) -> list:
    """Messages until the source has emitted a valid book at the last recorded update id (and
    ``min_trades`` trades: USD-M trades travel on their own connection, so they may trail),
    or until ``until(msg)`` holds."""
    out: list = []

    async def run() -> None:
        done = False
        n_trades = 0
        async with contextlib.aclosing(src.stream()) as it:
            async for msg in it:
                out.append(msg)
                n_trades += isinstance(msg, m.Trade)
                if until is not None:
                    done = done or until(msg)
                else:
                    done = done or (isinstance(msg, m.BookSnapshot) and msg.valid and msg.seq == srv.final_u)
                if done and n_trades >= min_trades:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


def _check_against_replay(msgs: list, ref: dict) -> list[m.BookSnapshot]:
    snaps = [x for x in msgs if isinstance(x, m.BookSnapshot)]
    valid = [s for s in snaps if s.valid]
    assert valid, "no valid book emitted"
    for s in valid:
        bids, asks = ref[s.seq]  # every applied update id exists in the offline rebuild
        assert s.best_bid() == bids[0, 0] and s.best_ask() == asks[0, 0], f"BBO differs at update id {s.seq}"
        np.testing.assert_array_equal(s.bids, bids, err_msg=f"bids differ at {s.seq}")
        np.testing.assert_array_equal(s.asks, asks, err_msg=f"asks differ at {s.seq}")
    seqs = [s.seq for s in valid]
    assert seqs == sorted(seqs)
    return snaps


def _run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------ pure helpers


def test_snapshot_limit_and_stream_routing():
    assert snapshot_limit("spot", 250) == 1000 and snapshot_limit("spot", 3000) == 3000
    assert snapshot_limit("spot", 9000) == 5000
    assert snapshot_limit("usdm", 20) == 1000 and snapshot_limit("usdm", 5000) == 1000
    (spot,) = stream_connections("spot", ["btcusdt", "ETHUSDT"])
    assert spot.url == (
        "wss://stream.binance.com:9443/stream?streams="
        "btcusdt@depth@100ms/ethusdt@depth@100ms/btcusdt@trade/ethusdt@trade"
    )
    assert spot.carries_depth and spot.symbols == ("BTCUSDT", "ETHUSDT")
    pub, mkt = stream_connections("usdm", ["BTCUSDT"])
    assert pub.url == "wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms" and pub.carries_depth
    assert mkt.url == "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade" and not mkt.carries_depth
    with pytest.raises(BinanceSourceError, match="streams"):
        stream_connections("usdm", [f"S{i}USDT" for i in range(201)])
    (coinm,) = stream_connections("coinm", ["BTCUSD_PERP"])  # COIN-M: one dstream connection, depth + aggTrade
    assert coinm.url == "wss://dstream.binance.com/stream?streams=btcusd_perp@depth@100ms/btcusd_perp@aggTrade"
    with pytest.raises(BinanceSourceError, match="market"):
        BinanceDiffSource("margin", ["BTCUSD"])  # type: ignore[arg-type]
    with pytest.raises(BinanceSourceError, match="rest_limit"):
        BinanceDiffSource("usdm", ["BTCUSDT"], rest_limit=2000)
    with pytest.raises(BinanceSourceError, match="symbols"):
        BinanceDiffSource("spot", ["BTC/USDT"])
    assert is_retryable(BinanceHTTPError(429, -1003, "")) and is_retryable(BinanceHTTPError(418, -1003, ""))
    assert is_retryable(BinanceHTTPError(503, None, "")) and is_retryable(TimeoutError())
    assert not is_retryable(BinanceHTTPError(400, -1121, "Invalid symbol."))


# ------------------------------------------------------------------------ (a) parity with replay


@pytest.mark.parametrize("rel,market,n", [(SPOT, "spot", None), (USDM, "usdm", None)])
def test_live_books_equal_offline_replay_at_every_update_id(rel, market, n):
    rec, ref = _reference(rel, market, n)
    last_depth = max(i for i, (s, _, _) in enumerate(rec.events) if "@depth" in s)
    n_trades = sum(1 for s, _, _ in rec.events[:last_depth] if s.endswith("@trade"))

    async def go():
        async with FakeBinance(rec, futures=market == "usdm", delay_s=0.002, burst=8) as srv:
            src = _source(srv, market)
            msgs = await _collect(src, srv, min_trades=n_trades)
            return srv, src, msgs

    srv, src, msgs = _run(go())
    snaps = _check_against_replay(msgs, ref)
    b = src.builders["BTCUSDT"]
    assert b.gaps == 0 and src.reconnects == 0 and src.bad_messages == 0
    assert all(s.valid for s in snaps), "a clean stream never invalidates the book"
    assert len(srv.depth_requests()) == 1 and src.rest_requests == 1  # one snapshot was enough
    q = srv.depth_requests()[0][1]
    assert q == {"symbol": "BTCUSDT", "limit": "1000"}
    # nearly every diff after the snapshot produced a book (a few may be folded into the
    # snapshot's bridging step); none was skipped silently
    n_after = sum(1 for d in rec.depth_events if int(d["u"]) > srv.snapshot_id)
    assert len(snaps) >= 0.9 * n_after and snaps[-1].seq == srv.final_u
    trades = [x for x in msgs if isinstance(x, m.Trade)]
    assert len(trades) == n_trades  # every trade played before the last diff, none twice
    assert len({t.trade_id for t in trades}) == n_trades
    exch = "binance" if market == "spot" else "binanceusdm"
    assert {t.exchange for t in trades} == {exch} and {s.exchange for s in snaps} == {exch}
    assert all(t.symbol == "BTCUSDT" and t.price > 0 and t.size > 0 and t.trade_id for t in trades)


# ------------------------------------------------------------------------ (b) lost diff -> resync


@pytest.mark.parametrize("rel,market", [(SPOT, "spot"), (USDM, "usdm")])
def test_lost_diff_is_detected_and_resynced_from_rest(rel, market):
    rec, ref = _reference(rel, market, N_SPOT)
    after = [int(d["u"]) for d in rec.depth_events if int(d["u"])]
    lost = after[600]

    async def go():
        async with FakeBinance(rec, futures=market == "usdm", drop_u={lost}) as srv:
            src = _source(srv, market)
            return srv, src, await _collect(src, srv)

    srv, src, msgs = _run(go())
    snaps = _check_against_replay(msgs, ref)  # books after the resync are right too
    b = src.builders["BTCUSDT"]
    assert b.gaps == 1 and b.resyncs == 1 and src.reconnects == 0
    assert len(srv.depth_requests()) == 2, "exactly one extra REST snapshot for the gap"
    validity = [s.valid for s in snaps]
    i_bad = validity.index(False)
    assert all(validity[:i_bad]) and all(validity[i_bad + 1 :]), "one invalid book, then valid again"
    bad = snaps[i_bad]
    assert "resync" in bad.reason and "sequence break" in bad.reason
    assert snaps[i_bad - 1].seq < lost and snaps[i_bad + 1].seq > lost


def test_live_coinm_books_equal_offline_replay_on_a_synthesised_recording(tmp_path):
    """COIN-M live (dstream/dapi paths, BTCUSD_PERP, sizes in contracts) against the fake
    server replaying a COIN-M recording SYNTHESISED from the real USD-M one (no real COIN-M
    recording exists here; see tests/collector/venue_data.py)."""
    import gzip as _gzip

    from tests.collector.venue_data import COINM_SYMBOL, USDM as USDM_DS, coinm_line, raw_files

    src_file = raw_files(USDM_DS)[0]  # the file with the REST snapshot line
    coinm = tmp_path / "coinm"
    with _gzip.open(src_file, "rb") as fin, _gzip.open(coinm, "wb", compresslevel=1) as fout:
        for line in fin:
            if line.strip():
                fout.write(coinm_line(line))
    ref = {
        s.seq: (s.bids, s.asks)
        for s in BinanceRecordingReplay(coinm, depth=DEPTH, trades=False)
        if isinstance(s, m.BookSnapshot) and s.valid
    }
    rec = load_recording(coinm, max_depth_events=N_SPOT)

    async def go():
        async with FakeBinance(rec, futures=True, delay_s=0.002, burst=8) as srv:
            src = BinanceDiffSource(
                "coinm",
                [COINM_SYMBOL],
                depth=DEPTH,
                ws_url=srv.ws_url,
                rest_url=srv.base_url,
                depth_stream="depth@0ms",
                trade_stream="trade",
                backoff_initial_s=0.01,
                reconnect_initial_s=0.01,
            )
            return srv, src, await _collect(src, srv)

    srv, src, msgs = _run(go())
    snaps = _check_against_replay(msgs, ref)
    assert src.builders[COINM_SYMBOL].gaps == 0 and all(s.valid for s in snaps)
    assert {(s.exchange, s.symbol, s.size_unit, s.contract_value) for s in snaps} == {
        ("binancecoinm", COINM_SYMBOL, "contracts", 100.0)
    }
    assert [(r[0], r[1]["symbol"]) for r in srv.depth_requests()] == [("/dapi/v1/depth", COINM_SYMBOL)]
    assert [c.path for c in srv.ws_connections] == ["/stream"]  # one dstream connection: depth + trades
    trades = [x for x in msgs if isinstance(x, m.Trade)]
    assert trades and {(t.exchange, t.symbol) for t in trades} == {("binancecoinm", COINM_SYMBOL)}


@pytest.mark.parametrize("rel,market", [(SPOT, "spot")])
def test_older_rest_snapshot_never_rewinds_the_live_book(rel, market):
    """After a gap the REST node answers with an OLD snapshot (older than the book already
    built): it is counted and ignored (the book never goes back), and a fresh one resyncs."""
    rec, ref = _reference(rel, market, N_SPOT)
    after = [int(d["u"]) for d in rec.depth_events if int(d["u"])]
    lost = after[600]

    async def go():
        async with FakeBinance(rec, futures=market == "usdm", drop_u={lost}) as srv:
            srv.fail("/api/v3/depth", "ok", 1)  # the initial sync is normal
            srv.fail("/api/v3/depth", "stale", 1)  # the resync first gets an old snapshot
            src = _source(srv, market, backoff_initial_s=0.01)
            return srv, src, await _collect(src, srv)

    srv, src, msgs = _run(go())
    snaps = _check_against_replay(msgs, ref)  # every valid book is right: nothing was rewound
    b = src.builders["BTCUSDT"]
    assert b.old_snapshots == 1 and b.gaps == 1 and b.resyncs == 1
    assert [r[2] for r in srv.depth_requests()] == ["200", "stale", "200"]
    seqs = [s.seq for s in snaps if s.valid]
    assert seqs == sorted(seqs) and seqs[-1] == srv.final_u


# ------------------------------------------------------------------------ (c) server closes -> reconnect


def test_server_close_reconnects_resyncs_and_continues():
    rec, ref = _reference(SPOT, "spot", N_SPOT)
    events = []

    async def go():
        async with FakeBinance(rec, close_after=500) as srv:
            src = _source(srv, "spot", on_reconnect=events.append)
            return srv, src, await _collect(src, srv)

    srv, src, msgs = _run(go())
    snaps = _check_against_replay(msgs, ref)
    assert src.reconnects == 1 and src.connects == 2 and len(srv.ws_connections) == 2
    assert len(events) == 1 and "closed by server" in events[0].reason and events[0].symbols == ("BTCUSDT",)
    assert len(srv.depth_requests()) == 2  # resync after the reconnect
    b = src.builders["BTCUSDT"]
    assert b.gaps == 0 and b.resyncs == 1
    invalid = [s for s in snaps if not s.valid]
    assert len(invalid) == 1 and "reconnect" in invalid[0].reason
    assert snaps[-1].valid and snaps[-1].seq == srv.final_u


# ------------------------------------------------------------------------ (d) REST 429 -> retried


def test_rest_429_twice_is_retried_reported_then_syncs():
    rec, ref = _reference(SPOT, "spot", N_SPOT)
    retries: list[RetryEvent] = []

    async def go():
        async with FakeBinance(rec) as srv:
            srv.fail("/api/v3/depth", "429", 2)
            src = _source(srv, "spot", on_retry=retries.append)
            return srv, src, await _collect(src, srv)

    srv, src, msgs = _run(go())
    _check_against_replay(msgs, ref)
    assert [r[2] for r in srv.depth_requests()] == ["429", "429", "200"]
    assert [(e.attempt, e.error_type, e.operation) for e in retries] == [
        (1, "BinanceHTTPError", "depth_snapshot"),
        (2, "BinanceHTTPError", "depth_snapshot"),
    ]
    assert "429" in retries[0].error and retries[1].sleep_s >= retries[0].sleep_s > 0
    assert src.retries == 2 and src.retries_by_error == {"HTTP 429": 2}


def test_rest_timeout_is_retried_and_bad_symbol_is_fatal():
    rec, _ = _reference(SPOT, "spot", N_SPOT)

    async def go():
        async with FakeBinance(rec) as srv:
            srv.fail("/api/v3/depth", "hang", 1)
            retries: list[RetryEvent] = []
            src = _source(srv, "spot", on_retry=retries.append, rest_timeout_s=0.3)
            async with contextlib.aclosing(src.stream()) as it:
                async for msg in it:
                    if isinstance(msg, m.BookSnapshot) and msg.valid:
                        break
            # a symbol Binance does not know: 400 is not retried, the stream ends with one clear error
            bad = BinanceDiffSource(
                "spot",
                ["BTCUSDT"],
                depth=DEPTH,
                ws_url=srv.ws_url,
                rest_url=srv.base_url,
                depth_stream="depth@100ms",
                backoff_initial_s=0.01,
            )
            bad.rest_url = srv.base_url + "/nope"  # 404: not retryable either
            with pytest.raises(BinanceSourceError, match="refused"):
                async with contextlib.aclosing(bad.stream()) as it:
                    async for _ in it:
                        pass
            return retries, bad

    retries, bad = _run(asyncio.wait_for(go(), 20))
    assert [e.error_type for e in retries] == ["TimeoutError"]
    assert bad.retries == 0 and bad.rest_requests == 1


def test_unreachable_websocket_gives_up_after_max_attempts():
    async def go():
        # a port nobody listens on (bound then closed): connection refused every time
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        src = BinanceDiffSource(
            "spot",
            ["BTCUSDT"],
            ws_url=f"ws://127.0.0.1:{port}",
            rest_url=f"http://127.0.0.1:{port}",
            reconnect_initial_s=0.01,
            reconnect_max_s=0.02,
            max_reconnect_attempts=3,
        )
        with pytest.raises(BinanceSourceError, match="reconnect attempts failed"):
            async with contextlib.aclosing(src.stream()) as it:
                async for _ in it:
                    pass
        return src

    src = _run(asyncio.wait_for(go(), 10))
    assert src.reconnects == 3 and src.connects == 0


def test_connection_is_rotated_before_the_24h_limit():
    rec, ref = _reference(SPOT, "spot", N_SPOT)

    async def go():
        async with FakeBinance(rec) as srv:
            src = _source(srv, "spot", max_connection_age_s=0.4)  # stands in for 23 h 50 min
            # until a valid book after the first rotation: the recording is finite, so a rotation
            # that happens to fall after its last diff could never resync (a real feed goes on)
            return (
                srv,
                src,
                await _collect(
                    src,
                    srv,
                    until=lambda msg: (
                        src.rotations >= 1
                        and isinstance(msg, m.BookSnapshot)
                        and msg.valid
                        and src.builders["BTCUSDT"].resyncs >= 1
                    ),
                ),
            )

    srv, src, msgs = _run(go())
    _check_against_replay(msgs, ref)
    assert src.rotations >= 1 and src.reconnects == src.rotations and len(srv.ws_connections) == src.connects >= 2
    assert src.builders["BTCUSDT"].resyncs == src.rotations


# ------------------------------------------------------------------------ service wiring


@pytest.mark.parametrize("exchange,rel,market", [("binance", SPOT, "spot"), ("binanceusdm", USDM, "usdm")])
def test_collector_service_live_binance_publishes_and_stores(uid, exchange, rel, market):
    """COLLECTOR_SOURCE=live + DEPTHPILOT_EXCHANGES=binance[usdm] runs the native source against
    the fake exchange: books and trades reach the bus and are sampled into the store; the
    websocket drop in the middle is reported as a feed_reconnect RiskEvent."""
    from collector.service import CollectorService
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.settings import load_settings
    from depthpilot.store import Store
    from depthpilot.topology import (
        MARKET_EXCHANGE,
        STATE_EXCHANGE,
        DeliveryClass,
        QueueDef,
    )
    from tests.collector.fakes.binance_server import FakeBinanceThread

    rec, ref = _reference(rel, market, 800)
    # the recordings' channels (the source's defaults are depth@100ms / aggTrade on USD-M)
    channels = {
        "BINANCE_DEPTH_STREAM": "depth@100ms" if market == "spot" else "depth@0ms",
        "BINANCE_TRADE_STREAM": "trade",
        "COLLECTOR_RECONNECT_INITIAL_S": "0.01",
    }
    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    prefix = "BINANCE_" if market == "spot" else "BINANCE_USDM_"
    with FakeBinanceThread(FakeBinance(rec, futures=market == "usdm", close_after=400)) as srv:
        settings = load_settings(
            AMQP_URL=url,
            COLLECTOR_SOURCE="live",
            DEPTHPILOT_EXCHANGES=exchange,
            DEPTHPILOT_SYMBOLS="BTCUSDT",
            SNAPSHOT_RATE_HZ="1000",
            SNAPSHOT_STORE_INTERVAL_S="0.05",
            BOOK_DEPTH=str(DEPTH),
            **channels,
            **{prefix + "WS_URL": srv.ws_url, prefix + "REST_URL": srv.base_url},
        )
        store = Store.connect(f"mongomock://{uid}", f"c_{uid}", snapshot_ttl_s=None)
        watcher = connect_bus(url, "watch").start()
        books = QueueDef(
            f"t.bws.books.{uid}",
            MARKET_EXCHANGE,
            (f"book.{exchange}.BTCUSDT", f"trade.{exchange}.BTCUSDT"),
            DeliveryClass.MARKET,
            max_length=1_000_000,
        )
        risk = QueueDef(f"t.bws.risk.{uid}", STATE_EXCHANGE, ("risk.#",), DeliveryClass.STATE, delivery_limit=5)
        got: list = []
        events: list = []
        lock = threading.Lock()

        def on_book(msg, d):
            with lock:
                got.append(msg)

        watcher.subscribe(books, on_book, dedup=False)
        watcher.subscribe(risk, lambda msg, d: events.append(msg))
        bus = connect_bus(url, "collector").start()
        svc = CollectorService(settings, bus, store)
        svc.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    last = [x for x in got if isinstance(x, m.BookSnapshot) and x.valid and x.seq == srv.final_u]
                if last and store.count("snapshots", exchange, "BTCUSDT") > 0:
                    break
                time.sleep(0.05)
        finally:
            svc.stop()
            bus.close()
            watcher.close()
    with lock:
        snaps = [x for x in got if isinstance(x, m.BookSnapshot)]
        trades = [x for x in got if isinstance(x, m.Trade)]
    assert any(s.valid and s.seq == srv.final_u for s in snaps), "the live book did not reach the end of the stream"
    for s in snaps:
        if s.valid:
            np.testing.assert_array_equal(s.bids, ref[s.seq][0])
            np.testing.assert_array_equal(s.asks, ref[s.seq][1])
    assert len(trades) > 50 and {t.exchange for t in trades} == {exchange}
    assert store.count("snapshots", exchange, "BTCUSDT") > 0
    assert store.count("trades", exchange, "BTCUSDT") > 0
    kinds = [e.kind for e in events]
    assert "feed_reconnect" in kinds and "book_gap" in kinds and "book_recovered" in kinds
    feed = svc.processor.health.feed(exchange, "BTCUSDT")
    assert feed.reconnects >= 1
