"""pybit's real WebSocket client against a local fake Bybit server replaying the recorded
ob500 payloads; pybit's raw callback feeds OUR builder (not pybit's internal book)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from collector.bybit_ws import BybitBookStream
from collector.exchanges.core import ApplyResult
from tests.collector.fakes.bybit_ws_server import FakeBybitWS
from tests.collector.fakes.data import bybit_ob500_messages

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
        stream = BybitBookStream("XRPUSDT", depth=50, endpoint=srv.url, on_update=on_update,
                                 ws_kwargs={"retries": 3, "restart_on_error": False})
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
