"""ccxt execution: the REAL ccxt ``binanceusdm`` client against a local fake Binance USD-M
that verifies every signed request (HMAC-SHA256 ``signature``, ``X-MBX-APIKEY``,
``timestamp``/``recvWindow``) - tests/trader/fakes/binance_usdm.py."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from tests.trader.exec_contract import check_limit_order_rests_fills_and_cancels
from tests.trader.fakes.binance_usdm import API_KEY, API_SECRET, FakeBinanceUSDM
from trader.domain import (
    ExecutionClient,
    ExecutionError,
    FillReport,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderRequest,
    PositionReport,
)
from trader.execution import RetryPolicy, make_execution_client
from trader.execution.ccxt_exec import rebase_urls
from trader.execution.common import venue_order_id

FAST = RetryPolicy(attempts=5, base_delay_s=0.05, max_delay_s=0.4, deadline_s=5.0)
ORDER = "/fapi/v1/order"


@pytest.fixture
def fake():
    with FakeBinanceUSDM(delay_s=0.8) as f:
        yield f


def client(fake: FakeBinanceUSDM, secret: str = API_SECRET, **kw):
    return make_execution_client(
        venue="binanceusdm",
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
        client_order_id=cid,
        exchange="binanceusdm",
        symbol="BTCUSDT",
        side=kw.pop("side", "buy"),
        qty=Decimal(qty),
        **kw,
    )


def creates(fake: FakeBinanceUSDM) -> list:
    return fake.hits(ORDER, "POST")


def test_rebase_urls_keeps_paths() -> None:
    urls = {"fapiPrivate": "https://fapi.binance.com/fapi/v1", "x": {"y": "https://a.b/c?d=1"}, "n": 3}
    assert rebase_urls(urls, "http://127.0.0.1:9/") == {
        "fapiPrivate": "http://127.0.0.1:9/fapi/v1",
        "x": {"y": "http://127.0.0.1:9/c?d=1"},
        "n": 3,
    }


def test_instruments_leverage_order_lookup_positions_balance(fake: FakeBinanceUSDM) -> None:
    c = client(fake)
    assert isinstance(c, ExecutionClient)
    btc = c.instruments(["BTCUSDT"])["BTCUSDT"]
    assert (btc.tick_size, btc.lot_step, btc.min_qty, btc.min_notional, btc.max_qty) == (
        Decimal("0.1"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(100),
        Decimal(1000),
    )
    with pytest.raises(ExecutionError, match="unknown linear contract"):
        c.instruments(["NOPEUSDT"])
    c.set_leverage("BTCUSDT", Decimal(5))
    assert fake.state.leverage["BTCUSDT"] == 5
    with pytest.raises(OrderRejected):
        c.set_leverage("BTCUSDT", Decimal("2.5"))
    rep = c.submit(buy("intent-1"))
    [order] = fake.state.orders
    assert Decimal(order["origQty"]) == Decimal("0.010") and order["clientOrderId"] == "intent-1"
    assert rep.status == "filled" and rep.filled_qty == Decimal("0.01") and rep.avg_price == Decimal("64123.4")
    assert rep.exchange_order_id == str(order["orderId"])
    assert c.lookup("BTCUSDT", "intent-1").status == "filled"
    assert c.lookup("BTCUSDT", "never-sent") is None
    [pos] = c.positions(["BTCUSDT"])
    assert pos.qty == Decimal("0.01") and pos.avg_price == Decimal("64123.4") and pos.stop_price is None
    assert Decimal(9999) < c.balance()["USDT"] < Decimal(10000)  # minus the taker fee
    ev = c.poll_events()
    fills = [e for e in ev if isinstance(e, FillReport)]
    assert [(f.client_order_id, f.qty, f.price) for f in fills] == [("intent-1", Decimal("0.01"), Decimal("64123.4"))]
    assert any(isinstance(e, PositionReport) and e.qty == Decimal("0.01") for e in ev)
    assert c.poll_events() == []
    c.submit(buy("intent-2", "0.01", side="sell", reduce_only=True))
    assert c.positions() == []
    assert any(isinstance(e, PositionReport) and e.qty == 0 for e in c.poll_events())
    assert c.cancel("BTCUSDT", "intent-2").status == "filled"  # -2011 on a filled order: report it as is
    assert c.open_orders("BTCUSDT") == []
    for r in fake.requests:  # every private call was signed and verified
        assert r.answered in ("200", "-2013", "-2011"), (r.path, r.answered)


def test_limit_order_rests_fills_and_cancels_through_polling(fake: FakeBinanceUSDM) -> None:
    check_limit_order_rests_fills_and_cancels(
        client(fake), fake, buy, lambda cid: next(o["price"] for o in fake.state.orders if o["clientOrderId"] == cid)
    )


def test_redelivered_intent_creates_no_second_order(fake: FakeBinanceUSDM) -> None:
    first = client(fake).submit(buy("intent-dup"))
    again = client(fake).submit(buy("intent-dup"))  # a fresh process: only the venue knows
    # Binance would accept the id of a FILLED order again: the lookup before the create stops it
    assert again.exchange_order_id == first.exchange_order_id
    assert len(fake.state.orders) == 1 and len(creates(fake)) == 1
    long_cid = "signal:binanceusdm:BTCUSDT:1722470400000000000:open-long"
    rep = client(fake).submit(buy(long_cid))
    assert fake.state.orders[-1]["clientOrderId"] == venue_order_id(long_cid) and rep.client_order_id == long_cid


def test_timeout_after_accept_leads_to_a_lookup_not_a_second_order(fake: FakeBinanceUSDM) -> None:
    c = client(fake)
    c.instruments(["BTCUSDT"])
    fake.fail(ORDER, "delay", method="POST")  # accepted, answered after the client's timeout
    rep = c.submit(buy("intent-slow"))
    assert rep.status == "filled" and len(fake.state.orders) == 1 and len(creates(fake)) == 1
    post = creates(fake)[0]
    after = [r for r in fake.hits(ORDER, "GET") if r.t > post.t]
    assert after and after[0].params["origClientOrderId"] == "intent-slow"


def test_timeout_and_failed_lookup_is_outcome_unknown(fake: FakeBinanceUSDM) -> None:
    c = client(fake)
    c.lookup("BTCUSDT", "warm-up")  # markets loaded
    fake.requests.clear()
    fake.fail(ORDER, "500", method="GET")  # the lookup before the create: retried once, then ...
    fake.fail(ORDER, "ok", method="GET")  # ... answered (-2013, no such order)
    fake.fail(ORDER, "delay", method="POST")  # the create: accepted, no answer in time
    fake.fail(ORDER, "500", times=50, method="GET")  # every lookup after it fails
    with pytest.raises(OrderOutcomeUnknown, match="intent-lost"):
        c.submit(buy("intent-lost"))
    assert len(creates(fake)) == 1 and len(fake.state.orders) == 1  # never re-sent blind


def test_429_backs_off_with_retry_after_then_succeeds(fake: FakeBinanceUSDM) -> None:
    fake.retry_after_s = 0  # exponential backoff alone
    c = client(fake)
    c.lookup("BTCUSDT", "warm-up")
    fake.fail(ORDER, "429", times=4)  # the pre-create lookup (GET) sees 3 of them, the create 1
    rep = c.submit(buy("intent-rl"))
    assert rep.status == "filled" and len(fake.state.orders) == 1
    hits = [
        r
        for r in fake.hits(ORDER)
        if r.params.get("origClientOrderId") == "intent-rl" or r.params.get("newClientOrderId") == "intent-rl"
    ]
    assert [(h.method, h.answered) for h in hits] == [
        ("GET", "429"),
        ("GET", "429"),
        ("GET", "429"),
        ("GET", "429"),
        ("GET", "-2013"),
        ("POST", "200"),
    ]
    assert c.stats.rate_limited == 4
    gaps = [b.t - a.t for a, b in zip(hits, hits[1:4])]
    assert all(g >= d * 0.95 for g, d in zip(gaps, c.stats.delays_s))
    assert c.stats.delays_s[:3] == pytest.approx([0.05, 0.1, 0.2])
    # a Retry-After hint longer than the backoff wins
    fake.retry_after_s = 1
    fake.fail(ORDER, "429")
    c.lookup("BTCUSDT", "intent-rl")
    assert c.stats.delays_s[-1] == pytest.approx(FAST.max_delay_s)  # 1 s hint, capped at max_delay_s


def test_insufficient_margin_is_rejected_once(fake: FakeBinanceUSDM) -> None:
    fake.state.wallet = Decimal(10)
    c = client(fake)
    with pytest.raises(OrderRejected) as ei:
        c.submit(buy("intent-poor"))
    assert ei.value.code == "-2019" and "Margin is insufficient" in str(ei.value)
    assert len(creates(fake)) == 1 and fake.state.orders == []
    with pytest.raises(OrderRejected) as ei:
        c.submit(buy("intent-ro", side="sell", reduce_only=True))
    assert ei.value.code == "-2022"
    with pytest.raises(OrderRejected, match="notional") as ei:
        c.submit(buy("intent-small", "0.001", price=Decimal(64000)))  # 64 USDT < 100: refused locally
    assert ei.value.code == "local" and len(creates(fake)) == 2


def test_stop_market_placed_moved_and_removed(fake: FakeBinanceUSDM) -> None:
    c = client(fake)
    with pytest.raises(OrderRejected, match="no position"):
        c.set_stop("BTCUSDT", Decimal(63000))
    c.submit(buy("intent-stop"))
    c.set_stop("BTCUSDT", Decimal("63000.04"))
    assert c.positions(["BTCUSDT"])[0].stop_price == Decimal("63000.1")
    c.set_stop("BTCUSDT", Decimal(63500))  # cancel + replace
    live = [a for a in fake.state.algo_orders if a["algoStatus"] == "NEW"]
    assert len(live) == 1 and Decimal(live[0]["triggerPrice"]) == Decimal(63500)
    assert live[0]["closePosition"] and live[0]["side"] == "SELL"
    assert [a["algoStatus"] for a in fake.state.algo_orders] == ["CANCELED", "NEW"]
    c.set_stop("BTCUSDT", None)
    assert all(a["algoStatus"] == "CANCELED" for a in fake.state.algo_orders)
    assert c.positions(["BTCUSDT"])[0].stop_price is None


def test_wrong_secret_is_refused_and_secrets_never_leak(
    fake: FakeBinanceUSDM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad_secret = "wrong-secret-" + "Kp4" * 5
    bad = client(fake, secret=bad_secret)
    bad.instruments(["BTCUSDT"])  # public
    with pytest.raises(ExecutionError) as ei:
        bad.balance()
    assert "-1022" in str(ei.value) and fake.requests[-1].answered == "-1022"
    texts = [str(ei.value), repr(bad)]
    good = client(fake)
    good.lookup("BTCUSDT", "warm-up")
    fake.fail(ORDER, "429", method="GET")
    fake.fail(ORDER, "ok", method="GET")
    fake.fail(ORDER, "delay", method="POST")
    fake.fail(ORDER, "500", times=50, method="GET")
    with pytest.raises(OrderOutcomeUnknown) as e2:
        good.submit(buy("intent-secret"))
    texts += [str(e2.value), repr(good), caplog.text]
    for t in texts:
        for s in (API_SECRET, bad_secret, API_KEY):
            assert s not in t
    assert "retry" in caplog.text


def test_fake_checks_signature_timestamp_and_recv_window(fake: FakeBinanceUSDM) -> None:
    """The fake's own guard, with hand-signed requests: stale or future timestamps -1021,
    a signature over other parameters -1022, an unknown key -2015."""
    import hashlib
    import hmac
    import time

    import requests

    def get(ts: int, recv: int = 5000, key: str = API_KEY, tamper: bool = False) -> int:
        q = f"timestamp={ts}&recvWindow={recv}"
        sig = hmac.new(API_SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
        if tamper:
            q = q.replace(f"recvWindow={recv}", f"recvWindow={recv + 1}")
        r = requests.get(f"{fake.url}/fapi/v3/account?{q}&signature={sig}", headers={"X-MBX-APIKEY": key}, timeout=2)
        return r.status_code if r.status_code == 200 else r.json()["code"]

    now = int(time.time() * 1000)
    assert get(now) == 200
    assert get(now - 8000) == -1021 and get(now - 8000, recv=10000) == 200 and get(now + 5000) == -1021
    assert get(now, tamper=True) == -1022 and get(now, key="someone-else") == -2015
