"""ccxt sources (books, trades): the REAL ccxt client code path against a local fake Binance
REST server.

ccxt is pointed at 127.0.0.1 through its url settings (``exchange.urls['api']``), no ccxt
method is patched. The depth payload is the real REST snapshot from the Binance recording;
exchangeInfo is small hand-written protocol scaffolding (fakes/binance_exchange_info.json).
Trades are the recording's real ``@trade`` events served as Binance ``/api/v3/aggTrades``
(ccxt's binance ``fetch_trades`` endpoint for spot), aggregated like Binance does.
"""

from __future__ import annotations

import asyncio

import ccxt
import numpy as np
import pytest

from collector.ccxt_source import (
    EXCHANGES,
    CcxtBookSource,
    CcxtDataError,
    CcxtSourceError,
    CcxtTradeSource,
    TradeDeduper,
    normalise_order_book,
    normalise_trade,
    rebase_api_urls,
    resolve_limit,
)
from depthpilot.messages import Side
from tests.collector.fakes.data import (
    binance_rest_depth_snapshot,
    binance_spot_trades,
    fixture_json,
)
from tests.collector.fakes.http_server import (
    BinanceAggTrades,
    FakeExchangeHTTP,
    aggregate_trades,
)

DEPTH = "/api/v3/depth"
INFO = "/api/v3/exchangeInfo"

pytestmark = pytest.mark.timeout(60)


def _server(**kw) -> FakeExchangeHTTP:
    return FakeExchangeHTTP(
        {INFO: fixture_json("binance_exchange_info.json"), DEPTH: binance_rest_depth_snapshot()}, **kw
    )


def _source(srv: FakeExchangeHTTP, events: list | None = None, **kw) -> CcxtBookSource:
    opts = dict(
        depth=25,
        mode="rest",
        api_base_url=srv.base_url,
        backoff_initial_s=0.05,
        backoff_max_s=0.4,
        config={"timeout": 300},
        on_retry=None if events is None else events.append,
    )
    opts.update(kw)
    return CcxtBookSource("binance", "BTC/USDT", **opts)


# ----------------------------------------------------------------------------- pure parts
def test_resolve_limit_per_exchange_rules():
    assert resolve_limit(EXCHANGES["binance"], 250, "rest") == 500
    assert resolve_limit(EXCHANGES["binance"], 25, "rest") == 50
    assert resolve_limit(EXCHANGES["binance"], 9999, "rest") == 5000
    assert resolve_limit(EXCHANGES["binanceusdm"], 250, "rest") == 500
    assert resolve_limit(EXCHANGES["binanceusdm"], 2000, "rest") == 1000
    assert resolve_limit(EXCHANGES["binanceusdm"], 250, "ws") == 500  # ws snapshot uses /fapi/v1/depth
    assert resolve_limit(EXCHANGES["bybit"], 250, "rest") == 250
    assert resolve_limit(EXCHANGES["bybit"], 900, "rest") == 500
    assert resolve_limit(EXCHANGES["bybit"], 250, "ws") == 1000  # orderbook.{1,50,200,1000}
    assert resolve_limit(EXCHANGES["bybit"], 50, "ws") == 50
    assert resolve_limit(EXCHANGES["okx"], 250, "rest") == 250
    assert resolve_limit(EXCHANGES["okx"], 250, "ws") == 400  # "books" channel
    assert resolve_limit(EXCHANGES["kraken"], 250, "ws") == 500
    assert resolve_limit(EXCHANGES["kraken"], 250, "rest") == 250
    assert resolve_limit(EXCHANGES["bitstamp"], 250, "rest") is None  # full book, no limit param
    assert resolve_limit(EXCHANGES["coinbase"], 250, "rest") == 250
    with pytest.raises(CcxtSourceError):
        resolve_limit(EXCHANGES["okx"], 0, "rest")


def test_bad_configuration_is_one_clear_error():
    with pytest.raises(CcxtSourceError):
        CcxtBookSource("mtgox", "BTC/USD")
    with pytest.raises(CcxtSourceError):
        CcxtBookSource("binance", "BTC/USDT", mode="carrier-pigeon")  # type: ignore[arg-type]


def test_rebase_api_urls_keeps_paths():
    import ccxt.async_support as ca

    ex = ca.binance()
    rebase_api_urls(ex, "http://127.0.0.1:1234")
    assert ex.urls["api"]["public"] == "http://127.0.0.1:1234/api/v3"
    assert ex.urls["api"]["fapiPublic"] == "http://127.0.0.1:1234/fapi/v1"
    asyncio.run(ex.close())


def test_normalise_sorts_cuts_and_flags_crossed():
    ob = {
        "bids": [[10.0, 1.0], [11.0, 2.0], [9.0, 3.0]],
        "asks": [[12.0, 1.0], [13.0, 1.0]],
        "timestamp": 5,
        "nonce": 7,
    }
    s = normalise_order_book(ob, exchange="x", symbol="Y", depth=2, ts_recv=1)
    np.testing.assert_array_equal(s.bids, [[11.0, 2.0], [10.0, 1.0]])
    assert s.valid and s.seq == 7 and s.ts_exchange == 5_000_000
    crossed = normalise_order_book(
        {"bids": [[12.5, 1.0]], "asks": [[12.0, 1.0]]}, exchange="x", symbol="Y", depth=5, ts_recv=1
    )
    assert not crossed.valid and crossed.reason.startswith("crossed")


# ----------------------------------------------------------------------------- real ccxt vs fake server
def test_rest_snapshot_through_real_ccxt_client():
    rec = binance_rest_depth_snapshot()

    async def go():
        async with _server() as srv:
            src = _source(srv)
            try:
                snap = await src.fetch_once()
            finally:
                await src.close()
            return srv, src, snap

    srv, src, snap = asyncio.run(go())
    assert [r.path for r in srv.requests] == [INFO, DEPTH]
    assert srv.hits(DEPTH)[0].query == {"symbol": "BTCUSDT", "limit": "50"}  # depth 25 -> Binance limit 50
    expected_b = np.array([[float(p), float(q)] for p, q in rec["bids"][:25]])
    expected_a = np.array([[float(p), float(q)] for p, q in rec["asks"][:25]])
    np.testing.assert_array_equal(snap.bids, expected_b)
    np.testing.assert_array_equal(snap.asks, expected_a)
    assert snap.seq == rec["lastUpdateId"] and snap.valid and snap.exchange == "binance"
    assert src.retries == 0 and src.updates == 1


def test_retries_429_500_timeout_with_backoff_then_succeeds():
    events = []

    async def go():
        async with _server(hang_s=2.0) as srv:
            srv.fail(DEPTH, "429")
            srv.fail(DEPTH, "500")
            srv.fail(DEPTH, "hang")
            src = _source(srv, events)
            try:
                snap = await src.fetch_once()
            finally:
                await src.close()
            return srv, src, snap

    srv, src, snap = asyncio.run(go())
    assert snap.valid and len(snap.bids) == 25
    hits = srv.hits(DEPTH)
    assert [h.answered for h in hits] == ["429", "500", "hang", "200"]
    assert [e.error_type for e in events] == ["DDoSProtection", "ExchangeNotAvailable", "RequestTimeout"]
    assert isinstance(ccxt.DDoSProtection("x"), ccxt.NetworkError)
    assert [e.attempt for e in events] == [1, 2, 3]
    assert all(e.operation == "fetch_order_book" and e.exchange == "binance" for e in events)
    sleeps = [e.sleep_s for e in events]
    assert sleeps == sorted(sleeps) and sleeps[0] >= 0.05 and sleeps[-1] > sleeps[0]  # exponential
    # the client really waited: gap between attempts >= reported backoff (timeout adds to attempt 3)
    for k, e in enumerate(events[:2]):
        assert hits[k + 1].t - hits[k].t >= e.sleep_s * 0.9
    assert src.retries == 3
    assert src.retries_by_error == {"DDoSProtection": 1, "ExchangeNotAvailable": 1, "RequestTimeout": 1}


def test_gives_up_after_max_attempts_and_reraises():
    events = []

    async def go():
        async with _server() as srv:
            srv.fail(DEPTH, "500", times=10)
            src = _source(srv, events, max_attempts=3)
            try:
                with pytest.raises(ccxt.ExchangeNotAvailable):
                    await src.fetch_once()
            finally:
                await src.close()
            return srv, src

    srv, src = asyncio.run(go())
    assert len(srv.hits(DEPTH)) == 3 and src.retries == 2 and len(events) == 2


def test_load_markets_is_retried_too_and_bad_symbol_is_not():
    events = []

    async def go():
        async with _server() as srv:
            srv.fail(INFO, "429")
            src = _source(srv, events)
            try:
                await src.load_markets()
                bad = CcxtBookSource(
                    "binance",
                    "NOPE/USDT",
                    mode="rest",
                    api_base_url=srv.base_url,
                    config={"timeout": 300},
                    on_retry=events.append,
                )
                try:
                    with pytest.raises(ccxt.BadSymbol):
                        await bad.fetch_once()
                finally:
                    await bad.close()
            finally:
                await src.close()
            return srv, bad

    srv, bad = asyncio.run(go())
    assert [e.operation for e in events] == ["load_markets"]
    assert bad.retries == 0 and srv.hits(DEPTH) == []


def test_rest_polling_stream_pushes_to_callback():
    got = []

    async def go():
        async with _server() as srv:
            src = _source(srv, poll_interval_s=0.01)
            try:
                await asyncio.wait_for(src.run(got.append, max_updates=3), timeout=20)
            finally:
                await src.close()
            return srv

    srv = asyncio.run(go())
    assert len(got) == 3 and all(s.valid and len(s.asks) == 25 for s in got)
    assert len(srv.hits(INFO)) == 1 and len(srv.hits(DEPTH)) == 3


# ----------------------------------------------------------------------------- trades
AGG = "/api/v3/aggTrades"


def _trade_server(agg, *, start=200, per_request=40, **kw) -> tuple[FakeExchangeHTTP, BinanceAggTrades]:
    feed = BinanceAggTrades(agg, start=start, per_request=per_request)
    return FakeExchangeHTTP({INFO: fixture_json("binance_exchange_info.json"), AGG: feed}, **kw), feed


def _trade_source(srv: FakeExchangeHTTP, events: list | None = None, **kw) -> CcxtTradeSource:
    opts = dict(
        mode="rest",
        api_base_url=srv.base_url,
        backoff_initial_s=0.05,
        backoff_max_s=0.4,
        config={"timeout": 300},
        poll_interval_s=0.0,
        on_retry=None if events is None else events.append,
    )
    opts.update(kw)
    return CcxtTradeSource("binance", "BTCUSDT", **opts)


def test_normalise_trade_taker_side_ns_and_bad_input():
    t = normalise_trade(
        {"id": "7", "timestamp": 1723161255342, "price": 61837.63, "amount": 0.02, "side": "sell"},
        exchange="x",
        symbol="Y",
        ts_recv=5,
    )
    assert (t.side, t.ts_exchange, t.ts_recv, t.price, t.size, t.trade_id) == (
        Side.SELL,
        1723161255342_000_000,
        5,
        61837.63,
        0.02,
        "7",
    )
    for bad in (
        {"id": "1", "timestamp": 1, "price": 1.0, "amount": 1.0, "side": None},
        {"id": "1", "timestamp": None, "price": 1.0, "amount": 1.0, "side": "buy"},
        {"id": "1", "timestamp": 1, "price": 0.0, "amount": 1.0, "side": "buy"},
    ):
        with pytest.raises(CcxtDataError):
            normalise_trade(bad, exchange="x", symbol="Y", ts_recv=1)


def test_trade_deduper_is_bounded_and_resumable():
    d = TradeDeduper(max_ids=3)
    assert [d.add(x) for x in "abca"] == [True, True, True, False]
    assert d.add("d") and "a" not in d and len(d) == 3  # oldest forgotten
    assert TradeDeduper(10, d.recent()).add("b") is False


def test_rest_trades_normalised_from_real_recording():
    """ccxt parses Binance aggTrades built from the recording's real @trade events."""
    raw = binance_spot_trades(3000)
    agg = aggregate_trades(raw)
    by_id = {str(a["a"]): a for a in agg}
    got = []

    async def go():
        srv, feed = _trade_server(agg, start=100, per_request=60)
        async with srv:
            src = _trade_source(srv, limit=1000)
            try:
                await asyncio.wait_for(src.run(got.append, max_updates=300), timeout=30)
            finally:
                await src.close()
        return srv, feed

    srv, feed = asyncio.run(go())
    hits = srv.hits(AGG)
    assert hits[0].query == {"symbol": "BTCUSDT", "limit": "1000"}  # seed: most recent, no since
    assert all(
        "startTime" in h.query and int(h.query["endTime"]) - int(h.query["startTime"]) == 3_600_000 for h in hits[1:]
    )
    # the seed page (what the exchange had played before the start) is not published; the rest is, in order
    first = max(feed.pages[0]) + 1
    assert first == 160 and [t.trade_id for t in got] == [str(a["a"]) for a in agg[first : first + 300]]
    for t in got:
        a = by_id[t.trade_id]
        assert t.exchange == "binance" and t.symbol == "BTCUSDT"
        assert t.price == float(a["p"]) and t.size == float(a["q"])
        assert t.side is (Side.SELL if a["m"] else Side.BUY)  # buyer is maker -> taker sold
        assert t.ts_exchange == a["T"] * 1_000_000 and t.ts_recv > t.ts_exchange
    # aggregation kept every real fill: summed sizes equal the raw trades' sizes
    lo, hi = agg[first]["f"], agg[first + 299]["l"]
    raw_sum = sum(float(r["q"]) for r in raw if lo <= r["t"] <= hi)
    assert abs(sum(t.size for t in got) - raw_sum) < 1e-9
    assert {t.side for t in got} == {Side.BUY, Side.SELL}


def test_rest_polling_overlapping_pages_emit_no_duplicates():
    agg = aggregate_trades(binance_spot_trades(4000))
    got = []

    async def go():
        srv, feed = _trade_server(agg, start=50, per_request=25)
        async with srv:
            src = _trade_source(srv, limit=30)  # small pages: catching up takes several full pages
            try:
                await asyncio.wait_for(src.run(got.append, max_updates=600), timeout=30)
            finally:
                await src.close()
        return feed, src

    feed, src = asyncio.run(go())
    pages = feed.pages[1:]  # after the seed
    overlap = sum(len(set(a) & set(b)) for a, b in zip(pages, pages[1:]))
    assert overlap > 0 and src.duplicates >= overlap  # the server really repeated trades
    ids = [int(t.trade_id) for t in got]
    assert len(ids) == len(set(ids)) == 600
    assert ids == list(range(ids[0], ids[0] + 600)) and ids[0] == max(feed.pages[0]) + 1  # nothing lost either
    assert [t.ts_exchange for t in got] == sorted(t.ts_exchange for t in got)


def test_rest_trades_429_and_500_retried_with_backoff():
    agg = aggregate_trades(binance_spot_trades(1000))
    events = []
    got = []

    async def go():
        srv, _ = _trade_server(agg, start=10, per_request=20)
        async with srv:
            srv.fail(AGG, "429")
            srv.fail(AGG, "500")
            src = _trade_source(srv, events, limit=100)
            try:
                await asyncio.wait_for(src.run(got.append, max_updates=20), timeout=30)
            finally:
                await src.close()
        return srv, src

    srv, src = asyncio.run(go())
    assert [h.answered for h in srv.hits(AGG)][:3] == ["429", "500", "200"]
    assert [(e.operation, e.error_type) for e in events] == [
        ("fetch_trades", "DDoSProtection"),
        ("fetch_trades", "ExchangeNotAvailable"),
    ]
    assert src.retries == 2 and len(got) == 20 and len({t.trade_id for t in got}) == 20


def test_trade_source_resumes_from_an_earlier_source():
    agg = aggregate_trades(binance_spot_trades(1000))
    first, second = [], []

    async def go():
        srv, _ = _trade_server(agg, start=20, per_request=15)
        async with srv:
            a = _trade_source(srv, limit=100)
            try:
                await asyncio.wait_for(a.run(first.append, max_updates=40), timeout=30)
            finally:
                await a.close()
            b = _trade_source(srv, limit=100, since_ms=a.since_ms, seen_ids=a.seen_ids())
            try:
                await asyncio.wait_for(b.run(second.append, max_updates=40), timeout=30)
            finally:
                await b.close()

    asyncio.run(go())
    ids = [int(t.trade_id) for t in first + second]
    assert ids == list(range(ids[0], ids[0] + 80))  # no duplicate, no hole across the replacement
