"""Bybit v5 execution: the REAL pybit client against a local fake Bybit that verifies every
private request's HMAC signature, timestamp and recv_window (tests/trader/fakes/bybit_v5.py)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from tests.trader.exec_contract import check_limit_order_rests_fills_and_cancels
from tests.trader.fakes.bybit_v5 import API_KEY, API_SECRET, FakeBybit
from tests.trader.svc_helpers import wait_until
from trader.domain import (
    ExecutionClient,
    ExecutionError,
    FillReport,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderReport,
    OrderRequest,
    PositionReport,
)
from trader.execution import RetryPolicy, make_execution_client
from trader.execution.common import venue_order_id

FAST = RetryPolicy(attempts=5, base_delay_s=0.05, max_delay_s=0.4, deadline_s=5.0)
CREATE = "/v5/order/create"


@pytest.fixture
def fake():
    with FakeBybit(delay_s=0.8) as f:
        yield f


def client(fake: FakeBybit, secret: str = API_SECRET, **kw):
    return make_execution_client(
        venue="bybit",
        mode="testnet",
        api_key=API_KEY,
        api_secret=secret,
        base_url=fake.url,
        timeout_s=kw.pop("timeout_s", 0.4),
        retry=FAST,
        **kw,
    )


def buy(cid: str, qty: str = "0.0105", **kw) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, exchange="bybit", symbol="BTCUSDT", side=kw.pop("side", "buy"), qty=Decimal(qty), **kw
    )


def test_instruments_and_leverage(fake: FakeBybit) -> None:
    c = client(fake)
    assert isinstance(c, ExecutionClient)
    inst = c.instruments(["BTCUSDT", "ETHUSDT"])
    btc = inst["BTCUSDT"]
    assert (btc.tick_size, btc.lot_step, btc.min_qty, btc.min_notional) == (
        Decimal("0.10"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(5),
    )
    assert btc.max_leverage == Decimal(100) and btc.max_qty == Decimal("1190.000")
    with pytest.raises(ExecutionError, match="unknown linear symbol"):
        c.instruments(["DOGEUSDT"])
    c.set_leverage("BTCUSDT", Decimal(5))
    c.set_leverage("BTCUSDT", Decimal(5))  # 110043 "leverage not modified" is success
    assert fake.state.leverage["BTCUSDT"] == 5
    assert [r.answered for r in fake.hits("/v5/position/set-leverage")] == ["0", "110043"]
    c.set_leverage("ETHUSDT", Decimal("10.00"))
    assert fake.hits("/v5/position/set-leverage")[-1].params["buyLeverage"] == "10"
    with pytest.raises(OrderRejected) as ei:
        c.set_leverage("BTCUSDT", Decimal(150))
    assert ei.value.code == "local" and len(fake.hits("/v5/position/set-leverage")) == 3


def test_market_order_is_rounded_filled_and_reported(fake: FakeBybit) -> None:
    c = client(fake)
    rep = c.submit(buy("intent-1"))
    order = fake.state.orders["intent-1"]
    assert order["qty"] == "0.010"  # floored to the 0.001 step before it left
    assert rep.status == "filled" and rep.filled_qty == Decimal("0.010") and rep.avg_price == Decimal("64123.4")
    assert rep.client_order_id == "intent-1" and rep.exchange_order_id == order["orderId"]
    assert c.lookup("BTCUSDT", "intent-1") == rep
    assert c.lookup("BTCUSDT", "never-sent") is None
    [pos] = c.positions(["BTCUSDT"])
    assert pos.qty == Decimal("0.010") and pos.avg_price == Decimal("64123.4") and pos.stop_price is None
    assert c.balance()["USDT"] < Decimal(10000)  # the taker fee
    events = c.poll_events()
    fills = [e for e in events if isinstance(e, FillReport)]
    assert [(f.client_order_id, f.qty, f.price) for f in fills] == [("intent-1", Decimal("0.010"), Decimal("64123.4"))]
    assert fills[0].fee == Decimal("0.010") * Decimal("64123.4") * Decimal("0.00055")
    assert any(isinstance(e, PositionReport) and e.qty == Decimal("0.010") for e in events)
    assert c.poll_events() == []  # nothing new: fills deduplicated by execId
    # closing: reduce-only sell, position gone, a flat PositionReport
    c.submit(buy("intent-2", "0.010", side="sell", reduce_only=True))
    assert c.positions() == []
    ev = c.poll_events()
    assert any(isinstance(e, PositionReport) and e.qty == 0 for e in ev)
    # cancelling a filled order: 110001 -> the order as it is
    assert c.cancel("BTCUSDT", "intent-2").status == "filled"
    assert c.open_orders() == []


def test_limit_order_rests_fills_and_cancels_through_rest_polling(fake: FakeBybit) -> None:
    check_limit_order_rests_fills_and_cancels(client(fake), fake, buy, lambda cid: fake.state.orders[cid]["price"])


def test_long_client_order_id_maps_to_a_stable_order_link_id(fake: FakeBybit) -> None:
    c = client(fake)
    cid = "signal:binanceusdm:BTCUSDT:1722470400000000000:open-long"
    rep = c.submit(buy(cid))
    link = venue_order_id(cid)
    assert len(link) <= 36 and link in fake.state.orders and rep.client_order_id == cid
    assert client(fake).lookup("BTCUSDT", cid).exchange_order_id == rep.exchange_order_id  # a fresh process


def test_redelivered_intent_creates_no_second_order(fake: FakeBybit) -> None:
    first = client(fake).submit(buy("intent-dup"))
    again = client(fake).submit(buy("intent-dup"))  # e.g. after a restart: only the venue knows
    assert again.exchange_order_id == first.exchange_order_id and again.status == "filled"
    assert len(fake.state.orders) == 1 and len(fake.state.executions) == 1
    assert [r.answered for r in fake.hits(CREATE)] == ["0", "110072"]


def test_timeout_after_accept_leads_to_a_lookup_not_a_second_order(fake: FakeBybit) -> None:
    c = client(fake)
    fake.fail(CREATE, "delay")  # accepted, answered after 0.8 s > the 0.4 s client timeout
    rep = c.submit(buy("intent-slow"))
    assert rep.status == "filled" and rep.client_order_id == "intent-slow"
    assert len(fake.hits(CREATE)) == 1 and len(fake.state.orders) == 1
    creates, lookups = fake.hits(CREATE)[0], fake.hits("/v5/order/realtime")
    assert lookups and lookups[0].t > creates.t and lookups[0].params["orderLinkId"] == "intent-slow"


def test_timeout_and_failed_lookup_is_outcome_unknown(fake: FakeBybit) -> None:
    c = client(fake)
    fake.fail(CREATE, "delay")
    fake.fail("/v5/order/realtime", "500", times=50)
    with pytest.raises(OrderOutcomeUnknown, match="intent-lost"):
        c.submit(buy("intent-lost"))
    assert len(fake.hits(CREATE)) == 1  # never re-sent blind
    assert len(fake.hits("/v5/order/realtime")) == FAST.attempts


def test_server_error_on_create_is_looked_up_then_resent(fake: FakeBybit) -> None:
    c = client(fake)
    fake.fail(CREATE, "500")  # refused before processing: no order
    rep = c.submit(buy("intent-5xx"))
    assert rep.status == "filled" and len(fake.state.orders) == 1
    seq = [(r.path, r.answered) for r in fake.requests if r.path in (CREATE, "/v5/order/realtime", "/v5/order/history")]
    assert seq[:4] == [(CREATE, "500"), ("/v5/order/realtime", "0"), ("/v5/order/history", "0"), (CREATE, "0")]


def test_rate_limits_back_off_then_succeed(fake: FakeBybit) -> None:
    c = client(fake)
    fake.fail(CREATE, "10006", times=2)
    fake.fail(CREATE, "429")
    fake.fail(CREATE, "403")  # Bybit's IP rate limit
    rep = c.submit(buy("intent-rl"))
    assert rep.status == "filled" and len(fake.state.orders) == 1
    hits = fake.hits(CREATE)
    assert [h.answered for h in hits] == ["10006", "10006", "429", "403", "0"]
    assert c.stats.retries == 4 and c.stats.rate_limited == 4
    gaps = [b.t - a.t for a, b in zip(hits, hits[1:])]
    for gap, delay in zip(gaps, c.stats.delays_s):
        assert gap >= delay * 0.95
    assert c.stats.delays_s[2] >= 0.2  # exponential: 0.05 * 2**2 on the third retry
    # pybit's own sleep-and-retry on 10006 is off: every retry is ours (counted above)


def test_insufficient_balance_is_rejected_once(fake: FakeBybit) -> None:
    fake.state.wallet = Decimal(10)
    c = client(fake)
    with pytest.raises(OrderRejected) as ei:
        c.submit(buy("intent-poor"))
    assert ei.value.code == "110007" and "110007" in str(ei.value)
    assert len(fake.hits(CREATE)) == 1 and fake.state.orders == {}
    with pytest.raises(OrderRejected) as ei:
        c.submit(buy("intent-ro", side="sell", reduce_only=True))
    assert ei.value.code == "110017"


def test_refused_locally_when_rules_cannot_be_met(fake: FakeBybit) -> None:
    c = client(fake)
    with pytest.raises(OrderRejected, match="quantity 0.000 is not positive") as ei:
        c.submit(buy("tiny", "0.0009"))
    assert ei.value.code == "local"
    with pytest.raises(OrderRejected, match="notional"):
        c.submit(buy("small", "0.001", price=Decimal(1000)))  # 1 USDT < min notional 5
    assert fake.hits(CREATE) == []


def test_trading_stop_placed_moved_and_removed(fake: FakeBybit) -> None:
    c = client(fake)
    with pytest.raises(OrderRejected, match="no position"):
        c.set_stop("BTCUSDT", Decimal(63000))
    c.submit(buy("intent-stop"))
    c.set_stop("BTCUSDT", Decimal("63000.04"))
    assert c.positions(["BTCUSDT"])[0].stop_price == Decimal("63000.1")  # long: rounded up to the tick
    c.set_stop("BTCUSDT", Decimal(63500))  # the trailing stop ratchets
    c.set_stop("BTCUSDT", Decimal(63500))  # 34040 not modified: fine
    assert Decimal(fake.state.positions["BTCUSDT"]["sl"]) == Decimal(63500)
    assert [r.answered for r in fake.hits("/v5/position/trading-stop")] == ["0", "0", "34040"]
    with pytest.raises(OrderRejected) as ei:
        c.set_stop("BTCUSDT", Decimal(65000))  # above the price for a long
    assert ei.value.code == "10001"
    c.set_stop("BTCUSDT", None)
    assert c.positions(["BTCUSDT"])[0].stop_price is None


def test_wrong_secret_is_refused_and_secrets_never_leak(fake: FakeBybit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad_secret = "wrong-secret-" + "Zq9" * 5
    bad = client(fake, secret=bad_secret)
    bad.instruments(["BTCUSDT"])  # public: fine
    with pytest.raises(ExecutionError) as ei:
        bad.balance()
    assert "10004" in str(ei.value) and fake.requests[-1].answered == "10004"
    texts = [str(ei.value), repr(bad)]
    good = client(fake)
    fake.fail(CREATE, "10006")
    fake.fail(CREATE, "delay")
    fake.fail("/v5/order/realtime", "500", times=50)
    with pytest.raises(OrderOutcomeUnknown) as e2:
        good.submit(buy("intent-secret"))
    fake.state.wallet = Decimal(1)
    with pytest.raises(OrderRejected) as e3:
        good.submit(buy("intent-secret-2"))
    texts += [str(e2.value), str(e3.value), repr(good), caplog.text]
    for t in texts:
        for s in (API_SECRET, bad_secret, API_KEY):
            assert s not in t
    assert "retry" in caplog.text  # the retries were reported


# --------------------------------------------------------------------------- private websocket


def wait_events(c, pred, timeout_s: float = 3.0) -> list:
    import time

    got: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += c.poll_events()
        if pred(got):
            return got
        time.sleep(0.02)
    return got


@pytest.fixture
def wsfake():
    with FakeBybit(delay_s=0.8, ws=True) as f:
        yield f


def has_fill(cid: str):
    return lambda evs: any(isinstance(e, FillReport) and e.client_order_id == cid for e in evs)


def test_private_stream_feeds_poll_events(wsfake: FakeBybit) -> None:
    c = client(wsfake, private_ws_url=wsfake.ws_url)
    assert c.poll_events() == [] and c.stream_healthy  # connected, authenticated, one REST catch-up
    assert wsfake.ws.auths == [True]
    rest_polls = len(wsfake.hits("/v5/execution/list"))
    c.submit(buy("intent-ws"))
    ev = wait_events(c, lambda evs: has_fill("intent-ws")(evs) and any(isinstance(e, PositionReport) for e in evs))
    fills = [e for e in ev if isinstance(e, FillReport)]
    assert [(f.client_order_id, f.qty) for f in fills] == [("intent-ws", Decimal("0.010"))]
    assert [e.qty for e in ev if isinstance(e, PositionReport)] == [Decimal("0.010")]
    assert not [e for e in ev if not isinstance(e, (FillReport, PositionReport))]  # submit already returned the order
    c.set_stop("BTCUSDT", Decimal(63000))
    ev = wait_events(c, lambda evs: any(isinstance(e, PositionReport) for e in evs))
    assert [e.stop_price for e in ev if isinstance(e, PositionReport)] == [Decimal("63000.0")]
    c.submit(buy("lim-ws", "0.01", side="sell", reduce_only=True, order_type="limit", price=Decimal("64500")))
    wsfake.fill("lim-ws")
    ev = wait_events(c, lambda evs: has_fill("lim-ws")(evs) and any(isinstance(e, OrderReport) for e in evs))
    assert [(e.client_order_id, e.status) for e in ev if isinstance(e, OrderReport)] == [("lim-ws", "filled")]
    assert len(wsfake.hits("/v5/execution/list")) == rest_polls  # nothing polled while the stream is up
    c.close()


def test_stream_down_falls_back_to_rest_and_recovers(wsfake: FakeBybit) -> None:
    c = client(wsfake, private_ws_url=wsfake.ws_url, ws_reconnect_s=0.2)
    c.poll_events()
    wsfake.ws.refuse = True
    wsfake.ws.drop()
    c.submit(buy("intent-down"))
    ev = wait_events(c, has_fill("intent-down"))
    assert has_fill("intent-down")(ev) and not c.stream_healthy
    assert len(wsfake.hits("/v5/execution/list")) >= 2  # REST polling covered the outage
    wsfake.ws.refuse = False
    c.submit(buy("intent-back", side="sell", reduce_only=True))  # while it reconnects
    ev = wait_events(c, lambda evs: c.stream_healthy and has_fill("intent-back")(evs))
    assert c.stream_healthy and [e.client_order_id for e in ev if isinstance(e, FillReport)] == ["intent-back"]
    assert c._stream.connects == 2
    c.close()


def test_stream_with_wrong_secret_is_refused_and_rest_takes_over(wsfake: FakeBybit) -> None:
    c = make_execution_client(
        venue="bybit",
        mode="testnet",
        api_key=API_KEY,
        api_secret="wrong-" + "Q" * 12,
        base_url=wsfake.url,
        private_ws_url=wsfake.ws_url,
        timeout_s=0.4,
        retry=FAST,
    )
    with pytest.raises(ExecutionError, match="10004"):
        c.poll_events()  # the stream's auth is refused, then REST is refused too
    # the fake records the auth when its loop gets to it: on a loaded machine that can be after the
    # client stopped waiting for the answer (auth_wait_s), closed the stream and fell back to REST
    wait_until(lambda: wsfake.ws.auths, timeout=30)
    assert wsfake.ws.auths == [False] and not c.stream_healthy
    good = client(wsfake, private_ws_url=wsfake.ws_url)
    good.submit(buy("intent-ok"))
    assert has_fill("intent-ok")(wait_events(good, has_fill("intent-ok")))
    c.close()
    good.close()


def test_unanswered_ws_handshake_is_bounded_reported_and_retried(
    wsfake: FakeBybit, caplog: pytest.LogCaptureFixture
) -> None:
    """pybit's connect waits for the opening handshake without any deadline: a peer that accepts
    the TCP connection and never answers held poll_events forever. Now: REST within the connect
    deadline, one clear error line, a retry with backoff, and the stream back once answered."""
    import threading
    import time

    wsfake.ws.stall_handshake = True
    try:
        c = client(wsfake, private_ws_url=wsfake.ws_url, ws_reconnect_s=0.2)
        c._stream.connect_timeout_s = 1.0
        out: list = []
        t0 = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="trader.execution.bybit_stream"):
            t = threading.Thread(target=lambda: out.append(c.poll_events()), daemon=True)
            t.start()
            t.join(20)
            assert not t.is_alive(), "poll_events still waits for an unanswered websocket handshake"
        assert time.monotonic() - t0 < 10
        assert out == [[]] and not c.stream_healthy and wsfake.hits("/v5/execution/list")  # REST covered
        assert [r.getMessage() for r in caplog.records if r.name == "trader.execution.bybit_stream"] == [
            f"bybit private stream {wsfake.ws_url}: no connection within 1 s (opening handshake unanswered) "
            "(1 in a row); REST polling, next attempt in 0.2 s"
        ]
        assert c._stream.failures == 1 and "handshake unanswered" in (c._stream.last_error or "")
        c.poll_events()  # a second failure doubles the wait
        wait_until(lambda: (c.poll_events(), c._stream.failures)[1] >= 2, timeout=20)
        assert c._stream.retry_in() == pytest.approx(0.4)
    finally:
        wsfake.ws.stall_handshake = False
    wait_until(lambda: (c.poll_events(), c.stream_healthy)[1], timeout=20)  # answered again: back
    assert c._stream.failures == 0 and c._stream.last_error is None and wsfake.ws.auths[-1] is True
    c.close()


def test_refused_stream_auth_is_retried_with_backoff(wsfake: FakeBybit) -> None:
    """A refused key does not fix itself: attempts back off (0.2, 0.4, 0.8 s ...), not one
    signed auth every reconnect_s for ever; each failure is counted and named."""
    import time

    c = make_execution_client(
        venue="bybit",
        mode="testnet",
        api_key=API_KEY,
        api_secret="wrong-" + "Q" * 12,
        base_url=wsfake.url,
        private_ws_url=wsfake.ws_url,
        ws_reconnect_s=0.2,
        timeout_s=0.4,
        retry=FAST,
    )
    t_end = time.monotonic() + 2.5
    while time.monotonic() < t_end:  # the stream only (REST would be refused too)
        assert not c._stream.ensure()
        time.sleep(0.01)
    n = c._stream.connects
    assert 2 <= n <= 5, f"{n} connects with a refused key in 2.5 s"  # every 0.2 s: 12
    assert c._stream.failures == n and c._stream.retry_in() == pytest.approx(0.2 * 2 ** (n - 1))
    assert c._stream.last_error in ("authentication refused", "no answer to the auth within 2 s")
    # the health check says so (the trader service lists it among its problems)
    assert c.stream_problem.startswith("bybit private stream failing") and c._stream.last_error in c.stream_problem
    assert "wrong-" not in c.stream_problem
    c.close()


def test_fake_checks_timestamp_and_recv_window(fake: FakeBybit) -> None:
    """The fake's own guard: a correctly signed request outside recv_window is refused (10002)."""
    import hashlib
    import hmac
    import time

    import requests

    def get(ts: int, recv: int = 5000) -> int:
        q = "accountType=UNIFIED"
        sign = hmac.new(API_SECRET.encode(), f"{ts}{API_KEY}{recv}{q}".encode(), hashlib.sha256).hexdigest()
        r = requests.get(
            f"{fake.url}/v5/account/wallet-balance?{q}",
            timeout=2,
            headers={
                "X-BAPI-API-KEY": API_KEY,
                "X-BAPI-SIGN": sign,
                "X-BAPI-TIMESTAMP": str(ts),
                "X-BAPI-RECV-WINDOW": str(recv),
            },
        )
        return r.json()["retCode"]

    now = int(time.time() * 1000)
    assert get(now) == 0
    assert get(now - 8000) == 10002 and get(now - 8000, recv=10000) == 0
    assert get(now + 5000) == 10002  # from the future
