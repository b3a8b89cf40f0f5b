"""Recording the ccxt book feed (the REAL ccxt client, REST polling, against the local fake
Binance REST server serving the real Binance spot book as it changes): the recording replays
to the very books the live feed emitted, across size rotation; `depthpilot record` on a ccxt
venue records and the files replay to the books the server served, in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import numpy as np
import pytest

from collector.ccxt_recording import ccxt_recording_replay
from collector.ccxt_source import CcxtBookSource
from collector.recorder import Recorder
from collector.replay import BinanceRecordingReplay
from collector.replay_formats import replay_sources
from depthpilot import messages as m
from tests.collector.fakes.binance_server import FakeBinanceThread
from tests.collector.fakes.data import binance_spot_trades, fixture_json, require
from tests.collector.fakes.http_server import BinanceAggTrades, FakeExchangeHTTP, aggregate_trades

pytestmark = pytest.mark.timeout(90)

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"
EX = "binance_ccxt"


def _depth_payloads(n: int) -> list[dict]:
    """``n`` successive real Binance spot books (every 20th update), as ``/api/v3/depth`` answers."""
    books = (s for s in BinanceRecordingReplay(require(SPOT), depth=20, trades=False) if s.valid)
    out = []
    for s in itertools.islice(books, 0, 20 * n, 20):
        out.append(
            {
                "lastUpdateId": s.seq,
                "bids": [[repr(p), repr(q)] for p, q in s.bids.tolist()],
                "asks": [[repr(p), repr(q)] for p, q in s.asks.tolist()],
            }
        )
    assert len(out) == n
    return out


class _Depth:
    """The depth route: the next book on every request (the last one once all are served)."""

    def __init__(self, payloads: list[dict]) -> None:
        self.payloads = payloads
        self.served = 0

    def __call__(self, _q: dict) -> dict:
        p = self.payloads[min(self.served, len(self.payloads) - 1)]
        self.served += 1
        return p


def _server(payloads: list[dict], trades: BinanceAggTrades | None = None) -> tuple[FakeExchangeHTTP, _Depth]:
    depth = _Depth(payloads)
    routes = {"/api/v3/exchangeInfo": fixture_json("binance_exchange_info.json"), "/api/v3/depth": depth}
    if trades is not None:
        routes["/api/v3/aggTrades"] = trades
    return FakeExchangeHTTP(routes), depth


def _tkey(t: m.Trade) -> tuple:
    return (t.exchange, t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_exchange, t.ts_recv)


def _key(s: m.BookSnapshot) -> tuple:
    return (s.exchange, s.symbol, s.valid, s.seq, s.ts_exchange, s.ts_recv, s.depth, s.bids.tobytes(), s.asks.tobytes())


def test_live_ccxt_rest_recording_replays_to_the_same_books_across_rotation(tmp_path):
    payloads = _depth_payloads(12)
    srv, _ = _server(payloads)

    async def main() -> list[m.BookSnapshot]:
        async with srv:
            rec = Recorder(tmp_path, EX, rotate_bytes=1500)
            src = CcxtBookSource(
                EX,
                "BTCUSDT",
                depth=20,
                mode="rest",
                poll_interval_s=0.01,
                api_base_url=srv.base_url,
                raw_sink=rec.write,
            )
            out: list[m.BookSnapshot] = []
            try:
                async with contextlib.aclosing(src.stream()) as it:
                    async for s in it:
                        out.append(s)
                        if len(out) == len(payloads):
                            break
            finally:
                await src.close()
                rec.close()
            return out

    live = asyncio.run(asyncio.wait_for(main(), 30))
    assert [s.seq for s in live] == [p["lastUpdateId"] for p in payloads]  # the books the server served
    files = sorted((tmp_path / EX).iterdir())
    assert len(files) >= 3 and all(f.name.endswith(".gz") for f in files)
    (src,) = replay_sources([tmp_path], 20, None)  # the recorder root, recognised by content: one stream
    assert [_key(s) for s in src] == [_key(s) for s in live]
    assert [_key(s) for s in ccxt_recording_replay(files[::-1], 20)] == [_key(s) for s in live]  # receive order
    # a shallower replay cuts the same books
    shallow = list(ccxt_recording_replay(tmp_path / EX, 5))
    assert all(np.array_equal(a.bids, b.bids[:5]) for a, b in zip(shallow, live, strict=True))


def test_depthpilot_record_on_a_ccxt_venue_replays_to_the_served_books(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from depthpilot_cli.main import app

    payloads = _depth_payloads(40)
    agg = aggregate_trades(binance_spot_trades(2000))
    srv, depth = _server(payloads, BinanceAggTrades(agg, start=20, per_request=15))
    with FakeBinanceThread(srv) as fake:  # type: ignore[arg-type]
        for k, v in {
            "CCXT_API_BASE_URL": fake.base_url,
            "COLLECTOR_CCXT_MODE": "rest",
            "BOOK_DEPTH": "20",
            "COLLECTOR_TRADES": "true",
            "AMQP_URL": "memory://",
            "MONGO_URL": "mongomock://",
        }.items():
            monkeypatch.setenv(k, v)
        r = CliRunner().invoke(
            app,
            [
                "record",
                "--exchange",
                EX,
                "--symbols",
                "BTCUSDT",
                "--out",
                str(tmp_path),
                "--duration",
                "3.5",
                "-q",
                "--rotate-mb",
                "0.001",
            ],
        )
    assert r.exit_code == 0, r.output
    assert "recorded " in r.output
    files = sorted((tmp_path / EX).iterdir())
    assert len(files) >= 2 and all(f.name.endswith(".gz") for f in files)
    (src,) = replay_sources([tmp_path / EX], 20, None)
    msgs = list(src)
    books = [b for b in msgs if isinstance(b, m.BookSnapshot)]
    trades = [t for t in msgs if isinstance(t, m.Trade)]
    assert 2 <= len(books) <= depth.served  # one per poll (about 1 s apart)
    for s, p in zip(books, payloads, strict=False):  # each recorded book is the one served, in order
        assert s.exchange == EX and s.valid and s.seq == p["lastUpdateId"]
        np.testing.assert_array_equal(s.bids, np.array(p["bids"], dtype=float))
        np.testing.assert_array_equal(s.asks, np.array(p["asks"], dtype=float))
    # the trade feed recorded too: each trade once, no hole, as the server's aggregates
    ids = [int(t.trade_id) for t in trades]
    assert len(ids) >= 15 and ids == list(range(ids[0], ids[0] + len(ids)))
    by_id = {a["a"]: a for a in agg}
    assert all(t.price == float(by_id[int(t.trade_id)]["p"]) and t.exchange == EX for t in trades)


def test_live_ccxt_pro_websocket_recording_replays_to_the_same_books(tmp_path):
    """ccxt.pro's binance ``watch_order_book`` (diff stream over /ws + SUBSCRIBE, REST depth
    snapshot) against the local fake Binance replaying the real spot recording: every book it
    returned is recorded and replays to the same books, across rotation."""
    from tests.collector.fakes.binance_server import FakeBinance, load_recording

    rec = load_recording(require(SPOT), max_depth_events=400)

    async def main() -> tuple[list[m.BookSnapshot], list]:
        fake = FakeBinance(rec, delay_s=0.005, burst=2, exchange_info=fixture_json("binance_exchange_info.json"))
        async with fake as srv:
            recorder = Recorder(tmp_path, EX, rotate_bytes=20_000)
            src = CcxtBookSource(
                EX,
                "BTCUSDT",
                depth=20,
                mode="ws",
                api_base_url=srv.base_url,
                ws_base_url=srv.ws_url,
                raw_sink=recorder.write,
            )
            out: list[m.BookSnapshot] = []
            try:
                async with contextlib.aclosing(src.stream()) as it:
                    async for s in it:
                        out.append(s)
                        if len(out) >= 150:
                            break
            finally:
                await src.close()
                recorder.close()
            return out, [(c.path, sorted(c.streams)) for c in srv.ws_connections]

    live, conns = asyncio.run(asyncio.wait_for(main(), 40))
    assert conns and all(p.startswith("/ws") and s == ["btcusdt@depth@100ms"] for p, s in conns)  # what ccxt.pro asked
    seqs = [s.seq for s in live]
    assert all(b > a for a, b in zip(seqs, seqs[1:])) and all(s.valid for s in live)  # a synced, moving book
    files = sorted((tmp_path / EX).iterdir())
    assert len(files) >= 3 and all(f.name.endswith(".gz") for f in files)
    (src,) = replay_sources([tmp_path / EX], 20, None)
    assert [_key(s) for s in src] == [_key(s) for s in live]


def test_live_ccxt_rest_trades_recording_replays_to_the_same_trades(tmp_path):
    """fetch_trades polling with overlapping pages (the server repeats trades): every page is
    recorded (the seed page marked), and the replay publishes each trade once, exactly as live."""
    from collector.ccxt_source import CcxtTradeSource

    agg = aggregate_trades(binance_spot_trades(3000))
    feed = BinanceAggTrades(agg, start=50, per_request=25)
    srv = FakeExchangeHTTP(
        {"/api/v3/exchangeInfo": fixture_json("binance_exchange_info.json"), "/api/v3/aggTrades": feed}
    )

    async def main() -> tuple[list[m.Trade], CcxtTradeSource]:
        async with srv:
            rec = Recorder(tmp_path, EX, rotate_bytes=4000)
            src = CcxtTradeSource(
                EX, "BTCUSDT", mode="rest", limit=30, poll_interval_s=0.0, api_base_url=srv.base_url, raw_sink=rec.write
            )
            got: list[m.Trade] = []
            try:
                await src.run(got.append, max_updates=400)
            finally:
                await src.close()
                rec.close()
            return got, src

    live, src = asyncio.run(asyncio.wait_for(main(), 30))
    assert src.duplicates > 0 and len(live) == 400  # the pages overlapped; each trade once
    files = sorted((tmp_path / EX).iterdir())
    assert len(files) >= 3
    replayed = [t for t in ccxt_recording_replay(files, 20) if isinstance(t, m.Trade)]
    assert [_tkey(t) for t in replayed[: len(live)]] == [_tkey(t) for t in live]
    assert int(replayed[0].trade_id) == max(feed.pages[0]) + 1  # the seed page is not replayed either


def test_depthpilot_record_ccxt_pro_websocket_via_CCXT_WS_BASE_URL(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from depthpilot_cli.main import app
    from tests.collector.fakes.binance_server import FakeBinance, load_recording

    rec = load_recording(require(SPOT), max_depth_events=2000)
    fake = FakeBinance(rec, delay_s=0.01, burst=2, exchange_info=fixture_json("binance_exchange_info.json"))
    with FakeBinanceThread(fake) as srv:
        for k, v in {
            "CCXT_API_BASE_URL": srv.base_url,
            "CCXT_WS_BASE_URL": srv.ws_url,
            "COLLECTOR_CCXT_MODE": "ws",
            "COLLECTOR_TRADES": "false",
            "BOOK_DEPTH": "20",
            "AMQP_URL": "memory://",
            "MONGO_URL": "mongomock://",
        }.items():
            monkeypatch.setenv(k, v)
        r = CliRunner().invoke(
            app, ["record", "--exchange", EX, "--symbols", "BTCUSDT", "--out", str(tmp_path), "--duration", "3", "-q"]
        )
        paths = [c.path for c in srv.ws_connections]
    assert r.exit_code == 0, r.output
    assert paths and all(p.startswith("/ws") for p in paths)  # ccxt.pro reached the local host
    (src,) = replay_sources([tmp_path], 20, None)
    books = list(src)
    seqs = [b.seq for b in books]
    assert len(books) >= 20 and all(b.valid and b.exchange == EX for b in books)
    assert all(b > a for a, b in zip(seqs, seqs[1:]))  # the diff stream, applied in order
