"""pybit's real WebSocket client against a local fake Bybit server replaying the recorded
ob500 payloads; pybit's raw callback feeds OUR builder (not pybit's internal book), and
publicTrade messages become Trades."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from collector.bybit_ws import BybitBookStream, BybitTradeError, parse_public_trades
from collector.exchanges.core import ApplyResult
from depthpilot.messages import Side
from tests.collector.fakes.bybit_ws_server import FakeBybitWS
from tests.collector.fakes.data import (
    bybit_ob500_messages,
    bybit_v2_trade_messages,
    bybit_v2_trades_as_v5,
)

pytestmark = pytest.mark.timeout(60)


def _expected(msgs):
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for m in msgs:
        if m["type"] == "snapshot":
            bids, asks = {}, {}
        for side, rows in ((bids, m["data"]["b"]), (asks, m["data"]["a"])):
            for p, q in rows:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
    return (np.array(sorted(bids.items(), reverse=True)), np.array(sorted(asks.items())))


def _run(msgs, skip_u=None, expect_final_u=None, wait_s=20.0):
    done = threading.Event()
    last_u = msgs[-1]["data"]["u"]

    def on_update(result, builder):
        if result is ApplyResult.APPLIED and builder.book.seq == last_u:
            done.set()

    with FakeBybitWS(msgs, skip_u=skip_u) as srv:
        stream = BybitBookStream(
            "XRPUSDT",
            depth=50,
            endpoint=srv.url,
            on_update=on_update,
            ws_kwargs={"retries": 3, "restart_on_error": False},
        )
        stream.start()
        try:
            assert done.wait(wait_s), f"book never reached u={last_u}: {dict(stream.results)}"
            snap = stream.snapshot(10_000)
        finally:
            stream.stop()
    return srv, stream, snap


def test_pybit_client_builds_expected_book_from_replayed_recording():
    msgs = bybit_ob500_messages()
    srv, stream, snap = _run(msgs)
    subs = [m for m in srv.received if m.get("op") == "subscribe"]
    assert len(subs) == 1 and subs[0]["args"] == ["orderbook.50.XRPUSDT"]  # what pybit sent
    assert stream.results == {"snapshot": 1, "applied": 49}
    assert stream.resyncs == 0 and snap.valid
    exp_b, exp_a = _expected(msgs)
    np.testing.assert_array_equal(snap.bids, exp_b)
    np.testing.assert_array_equal(snap.asks, exp_a)
    assert snap.seq == msgs[-1]["data"]["u"]


def test_skipped_u_triggers_resubscribe_and_recovers():
    msgs = bybit_ob500_messages()
    skip = msgs[20]["data"]["u"]
    srv, stream, snap = _run(msgs, skip_u=skip)
    ops = [m.get("op") for m in srv.received if m.get("op") != "ping"]
    assert ops == ["subscribe", "unsubscribe", "subscribe"]  # gap -> resync through pybit
    assert stream.resyncs == 1 and stream.builder.stats.gaps == 1
    assert stream.results["gap"] == 1 and stream.results["snapshot"] == 2
    assert snap.valid
    exp_b, exp_a = _expected(msgs)  # second replay is complete: the rebuilt book is right
    np.testing.assert_array_equal(snap.bids, exp_b)
    np.testing.assert_array_equal(snap.asks, exp_a)


def test_depth_validation():
    with pytest.raises(ValueError):
        BybitBookStream("XRPUSDT", depth=25)


# ----------------------------------------------------------------------------- trades
# No Bybit v5 publicTrade payload exists in the datasets; the real v2 ``trade.BTCUSD``
# messages of the cryptofeed clip are used, their values moved to the v5 field names.
def test_parse_public_trades_from_real_bybit_trades():
    v2 = bybit_v2_trade_messages()
    v5 = bybit_v2_trades_as_v5(v2)
    trades = [t for msg in v5 for t in parse_public_trades(msg, ts_recv=7)]
    rows = [r for msg in v2 for r in msg["data"]]
    assert len(trades) == len(rows) == 131
    for t, r in zip(trades, rows):
        assert (t.exchange, t.symbol, t.trade_id) == ("bybit", "BTCUSD", r["trade_id"])
        assert t.price == float(r["price"]) and t.size == float(r["size"])
        assert t.side is (Side.BUY if r["side"] == "Buy" else Side.SELL)
        assert t.ts_exchange == r["trade_time_ms"] * 1_000_000 and t.ts_recv == 7
    assert {t.side for t in trades} == {Side.BUY, Side.SELL}


def test_parse_public_trades_refuses_bad_messages():
    good = bybit_v2_trades_as_v5(bybit_v2_trade_messages())[0]
    with pytest.raises(BybitTradeError):
        parse_public_trades({**good, "topic": "orderbook.50.BTCUSD"}, ts_recv=1)
    with pytest.raises(BybitTradeError):
        parse_public_trades({**good, "data": {"x": 1}}, ts_recv=1)
    for field, value in (("S", "Long"), ("p", "abc"), ("v", "0"), ("i", None)):
        row = {**good["data"][0], field: value}
        if value is None:
            del row[field]
        with pytest.raises(BybitTradeError):
            parse_public_trades({**good, "data": [row]}, ts_recv=1)


def test_pybit_stream_delivers_trades_next_to_the_book():
    books = bybit_ob500_messages()
    trades_v5 = bybit_v2_trades_as_v5(bybit_v2_trade_messages())
    n_expected = sum(len(m["data"]) for m in trades_v5)
    got = []
    done = threading.Event()
    last_u = books[-1]["data"]["u"]
    book_done = threading.Event()

    def on_trade(t):
        got.append(t)
        if len(got) == n_expected:
            done.set()

    def on_update(result, builder):
        if result is ApplyResult.APPLIED and builder.book.seq == last_u:
            book_done.set()

    with FakeBybitWS(books, trades=trades_v5) as srv:
        stream = BybitBookStream(
            "XRPUSDT",
            depth=50,
            endpoint=srv.url,
            on_update=on_update,
            on_trade=on_trade,
            ws_kwargs={"retries": 3, "restart_on_error": False},
        )
        stream.start()
        try:
            assert done.wait(20) and book_done.wait(20), f"trades {len(got)}/{n_expected}, {dict(stream.results)}"
        finally:
            stream.stop()
    subs = [m["args"] for m in srv.received if m.get("op") == "subscribe"]
    assert subs == [["orderbook.50.XRPUSDT"], ["publicTrade.XRPUSDT"]]  # what pybit sent
    assert stream.trades == n_expected and stream.bad_trade_messages == 0
    expected = [t for m in trades_v5 for t in parse_public_trades(m, ts_recv=0)]
    assert [(t.trade_id, t.price, t.size, t.side, t.ts_exchange) for t in got] == [
        (t.trade_id, t.price, t.size, t.side, t.ts_exchange) for t in expected
    ]
    assert all(t.ts_recv > t.ts_exchange for t in got)
    assert stream.results == {"snapshot": 1, "applied": 49}  # the book is unaffected by the trade topic
