"""The adapters' pure helpers: venue ids, rounding/refusal, backoff, redaction, error
classification, venue JSON -> domain, and the factory's guards."""

from __future__ import annotations

import logging
from decimal import Decimal

import ccxt
import pytest
from pydantic import SecretStr

from trader.domain import Instrument, OrderRejected, OrderRequest
from trader.execution import bybit_map as bm
from trader.execution import ccxt_map as cm
from trader.execution import make_execution_client
from trader.execution.common import (
    LogRedactor,
    RetryPolicy,
    backoff_delay,
    dec,
    prepare_order,
    redacted,
    retry_after,
    venue_order_id,
)

BTC = Instrument(
    exchange="bybit",
    symbol="BTCUSDT",
    tick_size=Decimal("0.1"),
    lot_step=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    min_notional=Decimal(5),
    max_qty=Decimal(100),
)


def req(qty: str, **kw) -> OrderRequest:
    return OrderRequest(
        client_order_id="c1", exchange="bybit", symbol="BTCUSDT", side=kw.pop("side", "buy"), qty=Decimal(qty), **kw
    )


def test_venue_order_id_is_stable_short_and_valid() -> None:
    assert venue_order_id("intent-1_A") == "intent-1_A"
    long = venue_order_id("x" * 40)
    odd = venue_order_id("signal:BTC/USDT 1")
    for v in (long, odd):
        assert len(v) == 36 and v.startswith("dp-") and v.replace("-", "").replace("_", "").isalnum()
    assert venue_order_id("x" * 40) == long and long != venue_order_id("x" * 41)


def test_prepare_order_rounds_and_refuses() -> None:
    assert prepare_order(req("0.01299"), BTC).qty == Decimal("0.012")
    limit = prepare_order(req("0.01", order_type="limit", price=Decimal("64000.06")), BTC)
    assert limit.price == Decimal("64000.0")  # a buy limit snaps down
    sell = prepare_order(req("0.01", side="sell", order_type="limit", price=Decimal("64000.01")), BTC)
    assert sell.price == Decimal("64000.1")  # a sell limit snaps up
    for bad, why in (
        (req("0.0004"), "not positive"),
        (req("101"), "above the maximum"),
        (req("0.001", price=Decimal(4000)), "notional 4.0000 is below"),
        (req("0.01", order_type="limit"), "has no price"),
    ):
        with pytest.raises(OrderRejected, match=why) as ei:
            prepare_order(bad, BTC)
        assert ei.value.code == "local"
    # no reference price: the notional check is left to the venue; reduce-only is exempt
    assert prepare_order(req("0.001"), BTC).qty == Decimal("0.001")
    assert prepare_order(req("0.001", price=Decimal(4000), reduce_only=True), BTC).qty == Decimal("0.001")


def test_backoff_is_exponential_capped_and_honours_hints() -> None:
    p = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    assert [backoff_delay(p, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff_delay(p, 1, retry_after_s=3.0) == 3.0
    assert backoff_delay(p, 1, retry_after_s=60.0) == 4.0


def test_retry_after_header() -> None:
    assert retry_after("2") == 2.0 and retry_after(None) == 0.0 and retry_after("-3") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_redaction(caplog: pytest.LogCaptureFixture) -> None:
    LogRedactor.protect("KEY-abcdef", "SECRET-123456", None, "")
    assert redacted("a KEY-abcdef b\nSECRET-123456 c") == "a *** b *** c"
    LogRedactor.protect("SECRET-123456", loggers=("test.exec.lib",))
    LogRedactor.protect("SECRET-123456", loggers=("test.exec.lib",))
    assert sum(isinstance(f, LogRedactor) for f in logging.getLogger("test.exec.lib").filters) == 1
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test.exec.lib").debug("headers %s", {"k": "SECRET-123456"})
    assert "SECRET-123456" not in caplog.text and "***" in caplog.text


def test_dec() -> None:
    assert dec("0.10") == Decimal("0.10") and dec(0.1) == Decimal("0.1") and dec(3) == Decimal(3)
    assert dec("") is None and dec(None, Decimal(0)) == 0 and dec("abc") is None


def test_ccxt_classification() -> None:
    def e(cls: type, body: str) -> Exception:
        return cls("binanceusdm " + body)

    assert cm.classify(e(ccxt.ExchangeError, '{"code": -2019, "msg": "Margin is insufficient."}')) == "reject"
    assert cm.error_code(e(ccxt.ExchangeError, '{"code":-2019,"msg":"x"}')) == "-2019"
    assert cm.classify(e(ccxt.InvalidOrder, '{"code": -4116, "msg": "ClientOrderId is duplicated."}')) == "duplicate"
    assert cm.classify(e(ccxt.ExchangeError, '{"code": -1003, "msg": "Too many"}')) == "rate"
    assert cm.classify(e(ccxt.DDoSProtection, "429 Too Many Requests")) == "rate"
    assert cm.classify(e(ccxt.RequestTimeout, "GET http://x timed out")) == "unknown"
    assert cm.classify(e(ccxt.ExchangeError, '{"code": -1007, "msg": "Timeout waiting for backend"}')) == "unknown"
    assert cm.classify(e(ccxt.ExchangeNotAvailable, "502")) == "retry"
    assert cm.classify(e(ccxt.OrderNotFound, '{"code": -2013, "msg": "Order does not exist."}')) == "not_found"
    assert cm.classify(e(ccxt.AuthenticationError, '{"code": -1022, "msg": "Signature"}')) == "auth"
    assert cm.classify(e(ccxt.InsufficientFunds, "no code")) == "reject"


def test_bybit_mapping() -> None:
    inst = bm.instrument(
        {
            "symbol": "ETHUSDT",
            "quoteCoin": "USDT",
            "settleCoin": "USDT",
            "priceFilter": {"tickSize": "0.01"},
            "lotSizeFilter": {
                "qtyStep": "0.01",
                "minOrderQty": "0.01",
                "maxOrderQty": "7240.00",
                "maxMktOrderQty": "1000.00",
                "minNotionalValue": "5",
            },
            "leverageFilter": {"maxLeverage": "100.00"},
        }
    )
    assert (inst.tick_size, inst.lot_step, inst.max_qty, inst.min_notional, inst.max_leverage) == (
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("1000.00"),
        Decimal(5),
        Decimal(100),
    )
    o = bm.order_report(
        {
            "symbol": "ETHUSDT",
            "side": "Sell",
            "qty": "0.50",
            "orderStatus": "PartiallyFilled",
            "cumExecQty": "0.20",
            "avgPrice": "",
            "orderId": "x",
            "updatedTime": "1700000000000",
            "rejectReason": "EC_NoError",
        },
        "cid",
    )
    assert (o.side, o.status, o.filled_qty, o.avg_price, o.ts_ns, o.reason) == (
        "sell",
        "partially_filled",
        Decimal("0.20"),
        None,
        1_700_000_000_000_000_000,
        "",
    )
    assert bm.position_report({"symbol": "ETHUSDT", "side": "", "size": "0"}) is None
    p = bm.position_report(
        {
            "symbol": "ETHUSDT",
            "side": "Sell",
            "size": "1.5",
            "avgPrice": "3000",
            "stopLoss": "0.00",
            "liqPrice": "",
            "leverage": "10",
        }
    )
    assert (p.qty, p.stop_price, p.liq_price, p.leverage) == (Decimal("-1.5"), None, None, Decimal(10))
    assert bm.balances({"list": [{"coin": [{"coin": "USDT", "equity": "12.5"}, {"coin": "BTC", "equity": ""}]}]}) == {
        "USDT": Decimal("12.5")
    }


def test_factory_guards() -> None:
    with pytest.raises(ValueError, match="paper"):
        make_execution_client(venue="bybit", mode="paper", api_key="k" * 8, api_secret="s" * 8)
    with pytest.raises(ValueError, match="API secret"):
        make_execution_client(venue="bybit", mode="live", api_key=SecretStr("k" * 8), api_secret=SecretStr(""))
    c = make_execution_client(
        venue="bybit",
        mode="live",
        api_key=SecretStr("k" * 8),
        api_secret=SecretStr("s" * 8),
        base_url="http://127.0.0.1:9",
    )
    assert c.mode == "live" and "s" * 8 not in repr(c)
    c.close()
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        make_execution_client(venue="nosuchvenue", mode="live", api_key="k" * 8, api_secret="s" * 8)


def test_factory_picks_the_venue_environment() -> None:
    """No network: only where the clients would connect."""
    demo = make_execution_client(venue="binanceusdm", mode="testnet", api_key="k" * 8, api_secret="s" * 8)
    live = make_execution_client(venue="binanceusdm", mode="live", api_key="k" * 8, api_secret="s" * 8)
    assert demo._ex.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com")
    assert live._ex.urls["api"]["fapiPrivate"].startswith("https://fapi.binance.com")
    by = make_execution_client(venue="bybit", mode="testnet", api_key="k" * 8, api_secret="s" * 8)
    assert by._http.endpoint == "https://api-testnet.bybit.com"
    assert by._stream is not None and by._stream.url == "wss://stream-testnet.bybit.com/v5/private"
    local = make_execution_client(
        venue="bybit", mode="live", api_key="k" * 8, api_secret="s" * 8, base_url="http://127.0.0.1:9"
    )
    assert local._http.endpoint == "http://127.0.0.1:9" and local._stream is None  # REST polling only
    for c in (demo, live, by, local):
        c.close()


@pytest.mark.parametrize("venue", ["bybit", "binanceusdm"])
def test_an_exchange_error_quoting_the_secret_is_masked_through_the_core_registry(
    venue: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client registers its key and secret with the core registry (``depthpilot.redact``),
    so a venue error that quotes them - or quotes another secret the service registered, such as
    the Telegram token - is masked in the retry log lines and in the error the trader reports."""
    from pybit.exceptions import InvalidRequestError

    from depthpilot.redact import mask_secrets, register_secrets
    from trader.domain import RetryableExecutionError

    key, secret = f"{venue}-key-" + "A1b2" * 3, f"{venue}-secret-" + "Z9y8" * 4
    token = "123456:telegram-" + "Tt7" * 5
    register_secrets([token])  # as the service's logging set-up does
    c = make_execution_client(
        venue=venue,
        mode="testnet",
        api_key=key,
        api_secret=secret,
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.01, deadline_s=5.0),
        private_stream=False,
    )
    assert mask_secrets(f"{key} {secret}") == "*** ***"  # registered in the core, not in a copy
    quote = f"signature for api_key={key} made with {secret} (and {token}) is stale"

    def venue_says(*args: object, **kw: object) -> None:
        if venue == "bybit":
            raise InvalidRequestError("GET /v5/account/wallet-balance", quote, 10002, "12:00", {})
        raise ccxt.RequestTimeout(f'binanceusdm {{"code":-1021,"msg":"{quote}"}}')

    target = c._http if venue == "bybit" else c._ex
    monkeypatch.setattr(target, "get_wallet_balance" if venue == "bybit" else "fetch_balance", venue_says)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RetryableExecutionError) as ei:
        c.balance()
    reported = str(ei.value)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2  # three tries: two retry lines, each quoting the venue's error
    for text in [reported, *retries]:
        assert "is stale" in text and text.count("***") == 3
        for s in (key, secret, token):
            assert s not in text
    c.close()
