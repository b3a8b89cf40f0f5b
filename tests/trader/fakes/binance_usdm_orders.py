"""Order rules of the fake Binance USD-M venue (:mod:`tests.trader.fakes.binance_usdm`): orders
(market fills at once, GTC limits rest until :meth:`OrderRules.fill`), the client-id, lot,
notional, reduce-only and margin checks, fills with fees into positions and account trades,
lookups and cancels, and the conditional (algo) stop orders. No HTTP here.

Test-only code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

from tests.trader.fakes.binance_usdm_account import AccountRules, VenueError
from tests.trader.fakes.http_venue import now_ms as _now_ms

__all__ = ["OrderRules"]


class OrderRules(AccountRules):
    """The order endpoints on ``self.state`` (mixed into the fake, which holds the lock and ids)."""

    _ids: Iterator[int]
    _lock: threading.Lock

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
