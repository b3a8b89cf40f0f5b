"""Account side of the fake Binance USD-M venue (:mod:`tests.trader.fakes.binance_usdm`): the
venue's state, its symbols' exchange info, leverage and brackets, the margin available and the
position / account views, all read from ``self.state``. No HTTP here.

Test-only code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tests.trader.fakes.http_venue import now_ms as _now_ms

__all__ = ["AccountRules", "BinanceState", "VenueError"]


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


class AccountRules:
    """Exchange info, leverage, brackets, margin, positions and balances of ``self.state``
    (mixed into the fake; errors are :class:`VenueError`)."""

    state: BinanceState

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
