"""A local fake Bybit v5 REST venue (linear perpetuals) for the real pybit client.

``http.server`` on 127.0.0.1 (random free port) in a thread: ``FakeBybit().start()``, then
point pybit at ``fake.url`` (``HTTP(...).endpoint = fake.url``), ``stop()`` at the end.

Every private call is authenticated like Bybit: ``X-BAPI-API-KEY`` must be known (10003),
``X-BAPI-SIGN`` must be HMAC-SHA256(secret, timestamp + api_key + recv_window + payload)
where payload is the raw query string (GET) or body (POST) (10004), and the timestamp must
lie within [server_time - recv_window, server_time + 1000) (10002).

State (``fake.state``): instruments, orders keyed by orderLinkId, one-way positions,
executions, leverage, a USDT wallet. Market orders fill at once at ``state.fill_price[symbol]``;
limit orders rest ("New") until ``fill(orderLinkId)`` fills them at their price (maker);
a create whose initial margin (notional / leverage) exceeds the available balance gets 110007;
a duplicate orderLinkId 110072; a reduce-only order that would not reduce 110017; a
trading-stop that changes nothing 34040; set-leverage to the current value 110043.

Faults (``fail(path, kind, times)``), for the next ``times`` requests to ``path``:
``"10006"`` (retCode 10006 + X-Bapi-Limit-Reset-Timestamp), ``"429"`` / ``"403"`` (HTTP status),
``"500"``, ``"delay"`` (process the request normally - a create IS accepted - but answer only
after ``delay_s``, past the client's timeout). Every request is recorded in ``fake.requests``;
the HTTP plumbing is :mod:`tests.trader.fakes.http_venue`.

Test-only code: never talks to anything but loopback.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.trader.fakes.bybit_private_ws import FakeBybitPrivateWS
from tests.trader.fakes.http_venue import FakeHTTPVenue, Req, signature_ok
from tests.trader.fakes.http_venue import now_ms as _now_ms

__all__ = ["API_KEY", "API_SECRET", "BybitState", "FakeBybit", "Req"]

API_KEY = "fake-bybit-key-0001"
API_SECRET = "fake-bybit-secret-" + "x7Q2" * 4

PUBLIC = {"/v5/market/instruments-info", "/v5/market/time"}


def _instrument(
    symbol: str, tick: str, step: str, min_qty: str, max_qty: str, min_notional: str, max_lev: str = "100"
) -> dict:
    return {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": symbol[:-4],
        "quoteCoin": "USDT",
        "settleCoin": "USDT",
        "priceScale": str(max(0, -Decimal(tick).as_tuple().exponent)),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": max_lev, "leverageStep": "0.01"},
        "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick},
        "lotSizeFilter": {
            "maxOrderQty": max_qty,
            "maxMktOrderQty": max_qty,
            "minOrderQty": min_qty,
            "qtyStep": step,
            "postOnlyMaxOrderQty": max_qty,
            "minNotionalValue": min_notional,
        },
    }


@dataclass
class BybitState:
    instruments: dict[str, dict] = field(
        default_factory=lambda: {
            "BTCUSDT": _instrument("BTCUSDT", "0.10", "0.001", "0.001", "1190.000", "5"),
            "ETHUSDT": _instrument("ETHUSDT", "0.01", "0.01", "0.01", "7240.00", "5"),
        }
    )
    fill_price: dict[str, Decimal] = field(
        default_factory=lambda: {"BTCUSDT": Decimal("64123.4"), "ETHUSDT": Decimal("3120.55")}
    )
    orders: dict[str, dict] = field(default_factory=dict)  # orderLinkId -> order
    positions: dict[str, dict] = field(default_factory=dict)  # symbol -> {size (signed), avg, sl}
    leverage: dict[str, Decimal] = field(default_factory=dict)
    executions: list[dict] = field(default_factory=list)
    wallet: Decimal = Decimal(10000)
    taker_fee: Decimal = Decimal("0.00055")


class FakeBybit(FakeHTTPVenue):
    NAME = "fake-bybit"

    def __init__(
        self, *, api_key: str = API_KEY, api_secret: str = API_SECRET, delay_s: float = 1.5, ws: bool = False
    ) -> None:
        super().__init__(api_key=api_key, api_secret=api_secret, delay_s=delay_s)
        self.ws = FakeBybitPrivateWS(self.keys) if ws else None
        self.ws_url = ""
        self.state = BybitState()

    # ------------------------------------------------------------------ control
    def start(self) -> FakeBybit:
        super().start()
        if self.ws is not None:
            self.ws_url = self.ws.start()
        return self

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.stop()
        super().stop()

    # ------------------------------------------------------------------ HTTP
    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        raw_query = parts.query
        body = self._body(h) if method == "POST" else ""
        params: dict[str, Any] = dict(parse_qsl(raw_query)) if method == "GET" else (json.loads(body) if body else {})
        rec = Req(method, parts.path, params, answered="0")
        fault = self._take_fault(rec)
        headers: dict[str, str] = {}
        if fault in ("429", "403", "500"):
            rec.answered = fault
            return self._send(h, int(fault), {"retCode": 10006 if fault != "500" else 10016, "retMsg": "fake " + fault})
        if fault == "10006":
            rec.answered = fault
            headers["X-Bapi-Limit-Reset-Timestamp"] = str(_now_ms() + 100)
            return self._send(h, 200, self._err(10006, "Too many visits!"), headers)
        if parts.path not in PUBLIC:
            err = self._auth(h, raw_query if method == "GET" else body)
            if err is not None:
                rec.answered = str(err["retCode"])
                return self._send(h, 200, err)
        with self._lock:
            out = self._route(method, parts.path, params)
        rec.answered = str(out["retCode"])
        if fault == "delay":
            self._delayed(rec)
        self._send(h, 200, out, headers)

    def _auth(self, h: BaseHTTPRequestHandler, payload: str) -> dict | None:
        key = h.headers.get("X-BAPI-API-KEY", "")
        sign = h.headers.get("X-BAPI-SIGN", "")
        ts = h.headers.get("X-BAPI-TIMESTAMP", "")
        recv = h.headers.get("X-BAPI-RECV-WINDOW", "5000")
        if key not in self.keys:
            return self._err(10003, "API key is invalid.")
        try:
            ts_i, recv_i = int(ts), int(recv)
        except ValueError:
            return self._err(10002, "invalid request, please check your server timestamp or recv_window param")
        now = _now_ms()
        if not (now - recv_i <= ts_i < now + 1000):
            return self._err(10002, "invalid request, please check your server timestamp or recv_window param")
        if not signature_ok(self.keys[key], ts + key + recv + payload, sign):
            return self._err(10004, "error sign! please check your signature generation algorithm")
        return None

    @staticmethod
    def _ok(result: Any) -> dict:
        return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": _now_ms()}

    @staticmethod
    def _err(code: int, msg: str) -> dict:
        return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": _now_ms()}

    # ------------------------------------------------------------------ venue
    def _route(self, method: str, path: str, p: dict[str, Any]) -> dict:
        routes = {
            ("GET", "/v5/market/instruments-info"): self._instruments,
            ("POST", "/v5/position/set-leverage"): self._set_leverage,
            ("POST", "/v5/order/create"): self._create,
            ("POST", "/v5/order/cancel"): self._cancel,
            ("GET", "/v5/order/realtime"): self._realtime,
            ("GET", "/v5/order/history"): self._history,
            ("POST", "/v5/position/trading-stop"): self._trading_stop,
            ("GET", "/v5/position/list"): self._positions,
            ("GET", "/v5/execution/list"): self._executions,
            ("GET", "/v5/account/wallet-balance"): self._wallet,
        }
        fn = routes.get((method, path))
        if fn is None:
            return self._err(10001, f"no route {method} {path}")
        if path != "/v5/account/wallet-balance" and p.get("category") != "linear":
            return self._err(10001, "params error: category only support linear in this fake")
        return fn(p)

    def _instruments(self, p: dict) -> dict:
        rows = [v for k, v in self.state.instruments.items() if not p.get("symbol") or k == p["symbol"]]
        return self._ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    def _set_leverage(self, p: dict) -> dict:
        sym = p.get("symbol", "")
        if sym not in self.state.instruments:
            return self._err(10001, "params error: symbol invalid")
        lev = Decimal(p["buyLeverage"])
        if lev != Decimal(p["sellLeverage"]) or not 1 <= lev <= Decimal(
            self.state.instruments[sym]["leverageFilter"]["maxLeverage"]
        ):
            return self._err(10001, "leverage invalid")
        if self.state.leverage.get(sym) == lev:
            return self._err(110043, "leverage not modified")
        self.state.leverage[sym] = lev
        return self._ok({})

    def _available(self) -> Decimal:
        used = sum(
            (
                abs(pos["size"]) * pos["avg"] / self.state.leverage.get(s, Decimal(10))
                for s, pos in self.state.positions.items()
            ),
            Decimal(0),
        )
        return self.state.wallet - used

    def _create(self, p: dict) -> dict:
        sym, link = p.get("symbol", ""), p.get("orderLinkId", "")
        inst = self.state.instruments.get(sym)
        if inst is None:
            return self._err(10001, "params error: symbol invalid")
        if link and link in self.state.orders:
            return self._err(110072, "OrderLinkedID is duplicate")
        lot = inst["lotSizeFilter"]
        qty = Decimal(p["qty"])
        if qty < Decimal(lot["minOrderQty"]) or qty % Decimal(lot["qtyStep"]) != 0 or qty > Decimal(lot["maxOrderQty"]):
            return self._err(10001, "Qty invalid")
        market = p.get("orderType") == "Market"
        if not market and (p.get("orderType") != "Limit" or not p.get("price")):
            return self._err(10001, "params error: orderType / price")
        price = self.state.fill_price[sym] if market else Decimal(p["price"])
        sign = 1 if p["side"] == "Buy" else -1
        pos = self.state.positions.get(sym, {"size": Decimal(0), "avg": Decimal(0), "sl": ""})
        reduce_only = p.get("reduceOnly") in (True, "true")
        if reduce_only and not (pos["size"] * sign < 0 and qty <= abs(pos["size"])):
            return self._err(110017, "Reduce-only rule not satisfied")
        increases = pos["size"] == 0 or pos["size"] * sign > 0
        if increases and qty * price / self.state.leverage.get(sym, Decimal(10)) > self._available():
            return self._err(110007, "ab not enough for new order")
        oid, now = str(uuid.uuid4()), str(_now_ms())
        self.state.orders[link] = {
            "orderId": oid,
            "orderLinkId": link,
            "symbol": sym,
            "side": p["side"],
            "orderType": p["orderType"],
            "qty": p["qty"],
            "price": "0" if market else p["price"],
            "cumExecQty": "0",
            "cumExecValue": "0",
            "cumExecFee": "0",
            "avgPrice": "",
            "orderStatus": "New",
            "reduceOnly": reduce_only,
            "createdTime": now,
            "updatedTime": now,
            "rejectReason": "EC_NoError",
        }
        if market:
            self._execute(link, price, maker=False)
        else:
            self._publish("order", [{**self.state.orders[link], "category": "linear"}])
        return self._ok({"orderId": oid, "orderLinkId": link})

    def fill(self, link: str) -> None:
        """The market reaches a resting limit order: it fills completely at its price (maker)."""
        with self._lock:
            o = self.state.orders[link]
            self._execute(link, Decimal(o["price"]), maker=True)

    def _execute(self, link: str, price: Decimal, *, maker: bool) -> None:
        o = self.state.orders[link]
        sym, qty = o["symbol"], Decimal(o["qty"])
        sign = 1 if o["side"] == "Buy" else -1
        pos = self.state.positions.get(sym, {"size": Decimal(0), "avg": Decimal(0), "sl": ""})
        increases = pos["size"] == 0 or pos["size"] * sign > 0
        rate = Decimal("0.0002") if maker else self.state.taker_fee
        fee = (qty * price * rate).quantize(Decimal("0.00000001"))
        self.state.wallet -= fee
        new = pos["size"] + sign * qty
        if new == 0:
            self.state.wallet += (price - pos["avg"]) * pos["size"]
            self.state.positions.pop(sym, None)
        elif increases:
            avg = (abs(pos["size"]) * pos["avg"] + qty * price) / abs(new)
            self.state.positions[sym] = {**pos, "size": new, "avg": avg}
        else:
            self.state.wallet += (price - pos["avg"]) * (sign * -qty)
            self.state.positions[sym] = {**pos, "size": new}
        now = str(_now_ms())
        o.update(
            cumExecQty=o["qty"],
            cumExecValue=str(qty * price),
            cumExecFee=str(fee),
            avgPrice=str(price),
            orderStatus="Filled",
            updatedTime=now,
        )
        self.state.executions.append(
            {
                "symbol": sym,
                "orderId": o["orderId"],
                "orderLinkId": link,
                "side": o["side"],
                "execId": str(uuid.uuid4()),
                "execPrice": str(price),
                "execQty": o["qty"],
                "execValue": str(qty * price),
                "execFee": str(fee),
                "feeRate": str(rate),
                "execType": "Trade",
                "isMaker": maker,
                "execTime": now,
            }
        )
        self._publish("order", [{**o, "category": "linear"}])
        self._publish("execution", [{**self.state.executions[-1], "category": "linear"}])
        self._publish_position(sym)

    def _publish(self, topic: str, rows: list[dict]) -> None:
        if self.ws is not None:
            self.ws.publish(topic, rows)

    def _publish_position(self, sym: str) -> None:
        """Bybit's position stream: ``entryPrice``; a closed position is size "0", side ""."""
        rows = self._positions({"symbol": sym})["result"]["list"]
        row = rows[0] if rows else {"symbol": sym, "side": "", "size": "0", "avgPrice": "0", "stopLoss": "0.00"}
        row = {**row, "entryPrice": row.pop("avgPrice"), "category": "linear"}
        self._publish("position", [row])

    def _cancel(self, p: dict) -> dict:
        o = self.state.orders.get(p.get("orderLinkId", ""))
        if o is None or o["orderStatus"] not in ("New", "PartiallyFilled", "Untriggered"):
            return self._err(110001, "order not exists or too late to cancel")
        o["orderStatus"] = "Cancelled"
        o["updatedTime"] = str(_now_ms())
        self._publish("order", [{**o, "category": "linear"}])
        return self._ok({"orderId": o["orderId"], "orderLinkId": o["orderLinkId"]})

    def _orders(self, p: dict, *, open_only: bool) -> dict:
        link = p.get("orderLinkId")
        rows = [
            o
            for o in self.state.orders.values()
            if (not p.get("symbol") or o["symbol"] == p["symbol"])
            and (not link or o["orderLinkId"] == link)
            and (link or not open_only or o["orderStatus"] in ("New", "PartiallyFilled", "Untriggered"))
        ]
        return self._ok({"category": "linear", "list": list(reversed(rows)), "nextPageCursor": ""})

    def _realtime(self, p: dict) -> dict:
        return self._orders(p, open_only=True)

    def _history(self, p: dict) -> dict:
        return self._orders(p, open_only=False)

    def _trading_stop(self, p: dict) -> dict:
        sym = p.get("symbol", "")
        pos = self.state.positions.get(sym)
        if pos is None:
            return self._err(10001, "can not set tp/sl/ts for zero position")
        sl = p.get("stopLoss", "")
        if sl in ("", None):
            return self._err(10001, "params error: stopLoss")
        sl = "" if Decimal(sl) == 0 else sl
        if sl:
            px = self.state.fill_price[sym]
            if (pos["size"] > 0 and Decimal(sl) >= px) or (pos["size"] < 0 and Decimal(sl) <= px):
                return self._err(
                    10001,
                    f"StopLoss:{sl} set for {'Buy' if pos['size'] > 0 else 'Sell'} position"
                    f" should be {'lower' if pos['size'] > 0 else 'higher'} than base_price:{px}",
                )
        if (pos["sl"] and sl and Decimal(pos["sl"]) == Decimal(sl)) or (not pos["sl"] and not sl):
            return self._err(34040, "not modified")
        pos["sl"] = sl
        self._publish_position(sym)
        return self._ok({})

    def _positions(self, p: dict) -> dict:
        rows = []
        for sym, pos in self.state.positions.items():
            if p.get("symbol") and sym != p["symbol"]:
                continue
            mark = self.state.fill_price[sym]
            rows.append(
                {
                    "positionIdx": 0,
                    "symbol": sym,
                    "side": "Buy" if pos["size"] > 0 else "Sell",
                    "size": str(abs(pos["size"])),
                    "avgPrice": str(pos["avg"]),
                    "markPrice": str(mark),
                    "leverage": str(self.state.leverage.get(sym, Decimal(10))),
                    "stopLoss": pos["sl"] or "0.00",
                    "liqPrice": "",
                    "unrealisedPnl": str((mark - pos["avg"]) * pos["size"]),
                    "updatedTime": str(_now_ms()),
                }
            )
        return self._ok({"category": "linear", "list": rows, "nextPageCursor": ""})

    def _executions(self, p: dict) -> dict:
        start = int(p.get("startTime", 0))
        rows = [
            e
            for e in self.state.executions
            if (not p.get("symbol") or e["symbol"] == p["symbol"])
            and int(e["execTime"]) >= start
            and (not p.get("orderLinkId") or e["orderLinkId"] == p["orderLinkId"])
        ]
        return self._ok({"category": "linear", "list": list(reversed(rows)), "nextPageCursor": ""})

    def _wallet(self, p: dict) -> dict:
        eq = self.state.wallet + sum(
            ((self.state.fill_price[s] - pos["avg"]) * pos["size"] for s, pos in self.state.positions.items()),
            Decimal(0),
        )
        coin = {
            "coin": "USDT",
            "equity": str(eq),
            "walletBalance": str(self.state.wallet),
            "availableToWithdraw": str(self._available()),
            "unrealisedPnl": str(eq - self.state.wallet),
        }
        return self._ok(
            {"list": [{"accountType": p.get("accountType", "UNIFIED"), "totalEquity": str(eq), "coin": [coin]}]}
        )
