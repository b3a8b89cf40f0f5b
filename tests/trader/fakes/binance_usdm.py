"""A local fake Binance USD-M futures venue (``/fapi``) for the real ccxt ``binanceusdm`` client.

``http.server`` on 127.0.0.1 (random free port) in a thread: ``FakeBinanceUSDM().start()``,
point ccxt's ``urls['api']`` entries at ``fake.url`` (paths kept), ``stop()`` at the end.

Signed endpoints are verified like Binance: ``X-MBX-APIKEY`` must be known (-2015), the
``signature`` parameter must be HMAC-SHA256(secret, totalParams) where totalParams is the
query string (without the signature) followed by the request body (-1022), ``timestamp``
within ``recvWindow`` (default 5000, max 60000) of the server clock and not more than 1 s
ahead (-1021). Errors are HTTP 400 ``{"code": ..., "msg": ...}``; the rate limit is HTTP 429
``-1003`` with ``Retry-After``.

Venue rules modelled: market orders fill at once at ``state.fill_price[symbol]``; GTC limit
orders rest (NEW) until ``fill(clientOrderId)`` fills them at their price (maker);
``newClientOrderId`` must be unique among OPEN orders (-4116 otherwise) - like Binance, a
filled order's id may be reused, so a client must look an id up before re-sending it;
initial margin beyond the available balance -2019; reduce-only that would not reduce -2022;
an unknown order -2013 (query) / -2011 (cancel). Conditional orders (STOP_MARKET,
closePosition) live on the algo-order API (``/fapi/v1/algoOrder``, ``openAlgoOrders``) as on
Binance since late 2025; at most one closePosition stop per direction (-4130).

Faults (``fail(path, kind, times, method=None)``): ``"429"`` (+ ``Retry-After: retry_after_s``), ``"500"``,
``"503"``, ``"delay"`` (processed - an order IS accepted - but answered after ``delay_s``), ``"ok"``
(a normal answer). Every request is recorded in ``fake.requests``; the HTTP plumbing is
:mod:`tests.trader.fakes.http_venue`.

This module is the venue's HTTP side (auth, faults, routing); the rules are in
:mod:`tests.trader.fakes.binance_usdm_orders` (orders, fills, algo stops) and
:mod:`tests.trader.fakes.binance_usdm_account` (state, exchange info, positions, balances).

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.trader.fakes.binance_usdm_account import BinanceState, VenueError
from tests.trader.fakes.binance_usdm_orders import OrderRules
from tests.trader.fakes.http_venue import FakeHTTPVenue, Req, signature_ok
from tests.trader.fakes.http_venue import now_ms as _now_ms

__all__ = ["API_KEY", "API_SECRET", "BinanceState", "FakeBinanceUSDM", "Req", "VenueError"]

API_KEY = "fake-binance-key-0001"
API_SECRET = "fake-binance-secret-" + "w3R8" * 4

PUBLIC = {"/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/ping"}


class FakeBinanceUSDM(FakeHTTPVenue, OrderRules):
    NAME = "fake-binance"
    METHODS = ("GET", "POST", "DELETE")

    def __init__(
        self, *, api_key: str = API_KEY, api_secret: str = API_SECRET, delay_s: float = 1.5, retry_after_s: int = 0
    ) -> None:
        super().__init__(api_key=api_key, api_secret=api_secret, delay_s=delay_s)
        self.retry_after_s = retry_after_s
        self.state = BinanceState()
        self._ids = count(8_000_000_001)

    # ------------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        body = self._body(h)
        params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))
        rec = Req(method, parts.path, {k: v for k, v in params.items() if k != "signature"}, answered="200")
        fault = self._take_fault(rec)
        if fault == "429":
            rec.answered = "429"
            return self._send(
                h,
                429,
                {"code": -1003, "msg": "Too many requests; current limit of IP is 2400 requests per minute."},
                {"Retry-After": str(self.retry_after_s)},
            )
        if fault in ("500", "503"):
            rec.answered = fault
            return self._send(h, int(fault), {"code": -1001, "msg": "Internal error; unable to process your request."})
        try:
            if parts.path not in PUBLIC:
                self._auth(h, parts.query, body, params)
            with self._lock:
                out = self._route(method, parts.path, params)
            status = 200
        except VenueError as e:
            out, status = {"code": e.code, "msg": e.msg}, e.status
            rec.answered = str(e.code)
        if fault == "delay":
            self._delayed(rec)
        self._send(h, status, out)

    def _auth(self, h: BaseHTTPRequestHandler, query: str, body: str, params: dict[str, str]) -> None:
        key = h.headers.get("X-MBX-APIKEY", "")
        if key not in self.keys:
            raise VenueError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        sig = params.get("signature", "")

        def strip(s: str) -> str:
            return "&".join(kv for kv in s.split("&") if kv and not kv.startswith("signature="))

        if not signature_ok(self.keys[key], strip(query) + strip(body), sig):
            raise VenueError(-1022, "Signature for this request is not valid.")
        try:
            ts, recv = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise VenueError(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            ) from None
        now = _now_ms()
        if recv > 60000 or ts >= now + 1000 or now - ts > recv:
            raise VenueError(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _route(self, method: str, path: str, p: dict[str, str]) -> Any:
        routes = {
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/time"): lambda p: {"serverTime": _now_ms()},
            ("POST", "/fapi/v1/leverage"): self._leverage,
            ("GET", "/fapi/v1/leverageBracket"): self._brackets,
            ("POST", "/fapi/v1/order"): self._create,
            ("GET", "/fapi/v1/order"): self._query,
            ("DELETE", "/fapi/v1/order"): self._cancel,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("POST", "/fapi/v1/algoOrder"): self._create_algo,
            ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo,
            ("GET", "/fapi/v1/openAlgoOrders"): self._open_algo,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/account"): self._account,
        }
        fn = routes.get((method, path))
        if fn is None:
            raise VenueError(-1000, f"fake: no route {method} {path}", 404)
        return fn(p)
