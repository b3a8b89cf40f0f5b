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

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.trader.fakes.http_venue import FakeHTTPVenue, Req, signature_ok
from tests.trader.fakes.http_venue import now_ms as _now_ms

__all__ = ["API_KEY", "API_SECRET", "BinanceState", "FakeBinanceUSDM", "Req", "VenueError"]

API_KEY = "fake-binance-key-0001"
API_SECRET = "fake-binance-secret-" + "w3R8" * 4

PUBLIC = {"/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/ping"}


class VenueError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _symbol(symbol: str, tick: str, step: str, min_qty: str, max_qty: str, min_notional: str) -> dict:
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": symbol[:-4],
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": tick},
            {"filterType": "LOT_SIZE", "stepSize": step, "maxQty": max_qty, "minQty": min_qty},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": step, "maxQty": max_qty, "minQty": min_qty},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": min_notional},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }


@dataclass
class BinanceState:
    symbols: dict[str, dict] = field(
        default_factory=lambda: {
            "BTCUSDT": _symbol("BTCUSDT", "0.10", "0.001", "0.001", "1000", "100"),
            "ETHUSDT": _symbol("ETHUSDT", "0.01", "0.001", "0.001", "10000", "20"),
        }
    )
    fill_price: dict[str, Decimal] = field(
        default_factory=lambda: {"BTCUSDT": Decimal("64123.4"), "ETHUSDT": Decimal("3120.55")}
    )
    orders: list[dict] = field(default_factory=list)  # every order ever accepted, in order
    algo_orders: list[dict] = field(default_factory=list)
    trades: list[dict] = field(default_factory=list)  # account trades (/fapi/v1/userTrades)
    positions: dict[str, dict] = field(default_factory=dict)  # symbol -> {amt (signed), entry}
    leverage: dict[str, int] = field(default_factory=dict)
    wallet: Decimal = Decimal(10000)
    taker_fee: Decimal = Decimal("0.0005")


class FakeBinanceUSDM(FakeHTTPVenue):
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

    # ------------------------------------------------------------------ venue
    def _sym(self, p: dict[str, str]) -> dict:
        s = self.state.symbols.get(p.get("symbol", ""))
        if s is None:
            raise VenueError(-1121, "Invalid symbol.")
        return s

    def _exchange_info(self, p: dict) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": list(self.state.symbols.values()),
        }

    def _leverage(self, p: dict) -> dict:
        self._sym(p)
        lev = int(p["leverage"])
        if not 1 <= lev <= 125:
            raise VenueError(-4028, f"Leverage {lev} is not valid")
        self.state.leverage[p["symbol"]] = lev
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": p["symbol"]}

    def _brackets(self, p: dict) -> list:
        return [
            {
                "symbol": s,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 125,
                        "notionalCap": 50000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    }
                ],
            }
            for s in self.state.symbols
            if not p.get("symbol") or p["symbol"] == s
        ]

    def _available(self) -> Decimal:
        used = sum(
            (
                abs(pos["amt"]) * pos["entry"] / self.state.leverage.get(s, 20)
                for s, pos in self.state.positions.items()
            ),
            Decimal(0),
        )
        return self.state.wallet - used

    def _create(self, p: dict) -> dict:
        sym = self._sym(p)
        cid = p.get("newClientOrderId", "")
        if any(o["clientOrderId"] == cid and o["status"] == "NEW" for o in self.state.orders):
            raise VenueError(-4116, "ClientOrderId is duplicated.")
        lot = next(f for f in sym["filters"] if f["filterType"] == "MARKET_LOT_SIZE")
        qty = Decimal(p.get("quantity", "0"))
        if qty < Decimal(lot["minQty"]) or qty > Decimal(lot["maxQty"]) or qty % Decimal(lot["stepSize"]) != 0:
            raise VenueError(-1111, "Precision is over the maximum defined for this asset.")
        market = p.get("type") == "MARKET"
        if not market and (p.get("type") != "LIMIT" or not p.get("price") or not p.get("timeInForce")):
            raise VenueError(-1116, "Invalid orderType (this fake takes MARKET and GTC LIMIT orders).")
        s = p["symbol"]
        price = self.state.fill_price[s] if market else Decimal(p["price"])
        sign = 1 if p["side"] == "BUY" else -1
        pos = self.state.positions.get(s, {"amt": Decimal(0), "entry": Decimal(0)})
        reduce_only = p.get("reduceOnly") == "true"
        if reduce_only and not (pos["amt"] * sign < 0 and qty <= abs(pos["amt"])):
            raise VenueError(-2022, "ReduceOnly Order is rejected.")
        increases = pos["amt"] == 0 or pos["amt"] * sign > 0
        min_notional = Decimal(next(f for f in sym["filters"] if f["filterType"] == "MIN_NOTIONAL")["notional"])
        if not reduce_only and qty * price < min_notional:
            raise VenueError(
                -4164, f"Order's notional must be no smaller than {min_notional} (unless you choose reduce only)."
            )
        if increases and qty * price / self.state.leverage.get(s, 20) > self._available():
            raise VenueError(-2019, "Margin is insufficient.")
        now = _now_ms()
        order = {
            "orderId": next(self._ids),
            "symbol": s,
            "status": "NEW",
            "clientOrderId": cid,
            "price": "0.00" if market else p["price"],
            "avgPrice": "0.00",
            "origQty": p["quantity"],
            "executedQty": "0",
            "cumQty": "0",
            "cumQuote": "0",
            "timeInForce": p.get("timeInForce", "GTC"),
            "type": p["type"],
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": p["side"],
            "positionSide": "BOTH",
            "stopPrice": "0.00",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": p["type"],
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": now,
            "updateTime": now,
        }
        self.state.orders.append(order)
        if market:
            self._execute(order, price, maker=False)
        return order

    def fill(self, client_order_id: str) -> None:
        """The market reaches a resting limit order: it fills completely at its price (maker)."""
        with self._lock:
            o = next(o for o in self.state.orders if o["clientOrderId"] == client_order_id and o["status"] == "NEW")
            self._execute(o, Decimal(o["price"]), maker=True)

    def _execute(self, o: dict, price: Decimal, *, maker: bool) -> None:
        s, qty = o["symbol"], Decimal(o["origQty"])
        sign = 1 if o["side"] == "BUY" else -1
        pos = self.state.positions.get(s, {"amt": Decimal(0), "entry": Decimal(0)})
        increases = pos["amt"] == 0 or pos["amt"] * sign > 0
        fee = qty * price * (Decimal("0.0002") if maker else self.state.taker_fee)
        self.state.wallet -= fee
        new = pos["amt"] + sign * qty
        if new == 0:
            self.state.wallet += (price - pos["entry"]) * pos["amt"]
            self.state.positions.pop(s, None)
        elif increases:
            self.state.positions[s] = {"amt": new, "entry": (abs(pos["amt"]) * pos["entry"] + qty * price) / abs(new)}
        else:
            self.state.wallet += (price - pos["entry"]) * (sign * -qty)
            self.state.positions[s] = {**pos, "amt": new}
        now = _now_ms()
        o.update(
            status="FILLED",
            avgPrice=str(price),
            executedQty=o["origQty"],
            cumQty=o["origQty"],
            cumQuote=str(qty * price),
            updateTime=now,
        )
        self.state.trades.append(
            {
                "symbol": s,
                "id": next(self._ids),
                "orderId": o["orderId"],
                "side": o["side"],
                "price": str(price),
                "qty": o["origQty"],
                "realizedPnl": "0",
                "quoteQty": str(qty * price),
                "commission": str(fee),
                "commissionAsset": "USDT",
                "time": now,
                "positionSide": "BOTH",
                "buyer": o["side"] == "BUY",
                "maker": maker,
            }
        )

    def _find(self, p: dict) -> dict:
        self._sym(p)
        for o in reversed(self.state.orders):
            if o["symbol"] == p["symbol"] and (
                o["clientOrderId"] == p.get("origClientOrderId") or str(o["orderId"]) == p.get("orderId")
            ):
                return o
        raise VenueError(-2013, "Order does not exist.")

    def _query(self, p: dict) -> dict:
        return self._find(p)

    def _cancel(self, p: dict) -> dict:
        try:
            o = self._find(p)
        except VenueError:
            raise VenueError(-2011, "Unknown order sent.") from None
        if o["status"] != "NEW":
            raise VenueError(-2011, "Unknown order sent.")
        o["status"] = "CANCELED"
        o["updateTime"] = _now_ms()
        return o

    def _open_orders(self, p: dict) -> list:
        return [
            o for o in self.state.orders if o["status"] == "NEW" and (not p.get("symbol") or o["symbol"] == p["symbol"])
        ]

    def _user_trades(self, p: dict) -> list:
        self._sym(p)
        start = int(p.get("startTime", 0))
        return [t for t in self.state.trades if t["symbol"] == p["symbol"] and t["time"] >= start]

    def _create_algo(self, p: dict) -> dict:
        self._sym(p)
        if p.get("algoType") != "CONDITIONAL" or p.get("type") != "STOP_MARKET":
            raise VenueError(-1116, "Invalid orderType (this fake keeps CONDITIONAL STOP_MARKET algo orders only).")
        if p.get("closePosition") != "true" or "quantity" in p:
            raise VenueError(-4137, "Quantity must be zero with closePosition equals true")
        s, side, trigger = p["symbol"], p["side"], Decimal(p["triggerPrice"])
        if any(a["symbol"] == s and a["side"] == side and a["algoStatus"] == "NEW" for a in self.state.algo_orders):
            raise VenueError(
                -4130, "An open stop or take profit order with GTE and closePosition in the direction is existing."
            )
        px = self.state.fill_price[s]
        if (side == "SELL" and trigger >= px) or (side == "BUY" and trigger <= px):
            raise VenueError(-2021, "Order would immediately trigger.")
        now = _now_ms()
        algo = {
            "algoId": next(self._ids),
            "clientAlgoId": p.get("clientAlgoId", ""),
            "algoType": "CONDITIONAL",
            "orderType": "STOP_MARKET",
            "symbol": s,
            "side": side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": "0",
            "algoStatus": "NEW",
            "triggerPrice": p["triggerPrice"],
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": True,
            "priceProtect": False,
            "reduceOnly": True,
            "activatePrice": "",
            "callbackRate": "",
            "createTime": now,
            "updateTime": now,
            "triggerTime": 0,
            "goodTillDate": 0,
        }
        self.state.algo_orders.append(algo)
        return algo

    def _cancel_algo(self, p: dict) -> dict:
        for a in self.state.algo_orders:
            if a["algoStatus"] == "NEW" and (
                a["clientAlgoId"] == p.get("clientAlgoId") or str(a["algoId"]) == p.get("algoId")
            ):
                a["algoStatus"] = "CANCELED"
                return {"algoId": a["algoId"], "clientAlgoId": a["clientAlgoId"], "code": "200", "msg": "success"}
        raise VenueError(-2011, "Unknown order sent.")

    def _open_algo(self, p: dict) -> list:
        return [
            a
            for a in self.state.algo_orders
            if a["algoStatus"] == "NEW" and (not p.get("symbol") or a["symbol"] == p["symbol"])
        ]

    def _position_risk(self, p: dict) -> list:
        out = []
        for s, pos in self.state.positions.items():
            if p.get("symbol") and s != p["symbol"]:
                continue
            mark = self.state.fill_price[s]
            lev = self.state.leverage.get(s, 20)
            out.append(
                {
                    "symbol": s,
                    "positionSide": "BOTH",
                    "positionAmt": str(pos["amt"]),
                    "entryPrice": str(pos["entry"]),
                    "breakEvenPrice": str(pos["entry"]),
                    "markPrice": str(mark),
                    "unRealizedProfit": str((mark - pos["entry"]) * pos["amt"]),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": str(mark * pos["amt"]),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": str(abs(mark * pos["amt"]) / lev),
                    "maintMargin": "0",
                    "positionInitialMargin": str(abs(mark * pos["amt"]) / lev),
                    "openOrderInitialMargin": "0",
                    "adl": 1,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": _now_ms(),
                }
            )
        return out

    def _account(self, p: dict) -> dict:
        upnl = sum(
            ((self.state.fill_price[s] - pos["entry"]) * pos["amt"] for s, pos in self.state.positions.items()),
            Decimal(0),
        )
        wallet, avail = self.state.wallet, self._available()
        asset = {
            "asset": "USDT",
            "walletBalance": str(wallet),
            "unrealizedProfit": str(upnl),
            "marginBalance": str(wallet + upnl),
            "maintMargin": "0",
            "initialMargin": str(wallet - avail),
            "positionInitialMargin": str(wallet - avail),
            "openOrderInitialMargin": "0",
            "crossWalletBalance": str(wallet),
            "crossUnPnl": str(upnl),
            "availableBalance": str(avail),
            "maxWithdrawAmount": str(avail),
            "updateTime": _now_ms(),
        }
        return {
            "totalInitialMargin": str(wallet - avail),
            "totalMaintMargin": "0",
            "totalWalletBalance": str(wallet),
            "totalUnrealizedProfit": str(upnl),
            "totalMarginBalance": str(wallet + upnl),
            "totalPositionInitialMargin": str(wallet - avail),
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": str(wallet),
            "totalCrossUnPnl": str(upnl),
            "availableBalance": str(avail),
            "maxWithdrawAmount": str(avail),
            "assets": [asset],
            "positions": [],
        }
