"""Exact position accounting for one symbol (linear contracts), shared by the paper exchange and
the trading engine.

FIFO lots keep every number exact in ``Decimal``: realised PnL of a reduction is
``sum(lot_qty * (exit - lot_price))`` (sign by side) times the contract value, never a division.
The volume-weighted average entry price (``avg_price``) is derived for display only. A round trip
runs from flat to flat; a fill that flips the position closes the trip and opens the next with
the rest (the engine itself never flips: closes are reduce-only).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from trader.domain import ZERO

ONE = Decimal(1)


@dataclass
class TripStats:
    """Accumulators of the open round trip (entry/exit legs, fees)."""

    side: int = 0  # +1 long, -1 short
    entry_qty: Decimal = ZERO
    entry_value: Decimal = ZERO  # sum qty * price
    exit_qty: Decimal = ZERO
    exit_value: Decimal = ZERO
    fees: Decimal = ZERO
    gross: Decimal = ZERO
    entry_ts: int = 0


@dataclass
class ClosedTrip:
    side: int
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    entry_ts: int
    exit_ts: int
    gross: Decimal
    fees: Decimal

    @property
    def pnl(self) -> Decimal:
        return self.gross - self.fees


@dataclass
class PositionLedger:
    contract_value: Decimal = ONE
    lots: deque[list[Decimal]] = field(default_factory=deque)  # [qty > 0, price], FIFO
    side: int = 0  # +1 long, -1 short, 0 flat
    qty: Decimal = ZERO  # absolute
    realized: Decimal = ZERO  # cumulative, before fees
    fees: Decimal = ZERO  # cumulative
    trip: TripStats = field(default_factory=TripStats)
    cost: Decimal = ZERO  # sum of lot qty * price (kept incrementally, exact)

    def __post_init__(self) -> None:
        self.lots = deque(self.lots)
        self.cost = sum((q * p for q, p in self.lots), ZERO)

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side >= 0 else -self.qty

    @property
    def avg_price(self) -> Decimal:
        return self.cost / self.qty if self.qty else ZERO

    def unrealized(self, mark: Decimal) -> Decimal:
        if not self.qty:
            return ZERO
        return self.side * (mark * self.qty - self.cost) * self.contract_value

    def apply(
        self, side: str, qty: Decimal, price: Decimal, fee: Decimal, ts_ns: int = 0
    ) -> tuple[Decimal, list[ClosedTrip]]:
        """Book one fill; returns (realised PnL of this fill before fees, trips it closed)."""
        if qty <= 0:
            raise ValueError(f"fill quantity must be positive, not {qty}")
        s = 1 if side == "buy" else -1
        self.fees += fee
        closed: list[ClosedTrip] = []
        realized = ZERO
        rest = qty
        fee_left = fee
        if self.side == -s and self.qty:
            # reduce (and maybe flip)
            take = min(rest, self.qty)
            cv = self.contract_value
            need = take
            while need:
                lot = self.lots[0]
                q = lot[0] if lot[0] <= need else need
                realized += self.side * (price - lot[1]) * q * cv
                self.cost -= q * lot[1]
                lot[0] -= q
                need -= q
                if not lot[0]:
                    self.lots.popleft()
            self.qty -= take
            rest -= take
            part_fee = fee if not rest else fee * take / qty
            fee_left = fee - part_fee
            t = self.trip
            t.exit_qty += take
            t.exit_value += take * price
            t.fees += part_fee
            t.gross += realized
            self.realized += realized
            if not self.qty:
                closed.append(
                    ClosedTrip(
                        t.side,
                        t.entry_qty,
                        t.entry_value / t.entry_qty,
                        t.exit_value / t.exit_qty,
                        t.entry_ts,
                        ts_ns,
                        t.gross,
                        t.fees,
                    )
                )
                self.side = 0
                self.trip = TripStats()
        if rest:
            if not self.qty:
                self.side = s
                self.trip = TripStats(side=s, entry_ts=ts_ns)
            self.lots.append([rest, price])
            self.cost += rest * price
            self.qty += rest
            t = self.trip
            t.entry_qty += rest
            t.entry_value += rest * price
            t.fees += fee_left
        return realized, closed

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        t = self.trip
        return {
            "contract_value": str(self.contract_value),
            "lots": [[str(q), str(p)] for q, p in self.lots],
            "side": self.side,
            "qty": str(self.qty),
            "realized": str(self.realized),
            "fees": str(self.fees),
            "trip": {
                "side": t.side,
                "entry_qty": str(t.entry_qty),
                "entry_value": str(t.entry_value),
                "exit_qty": str(t.exit_qty),
                "exit_value": str(t.exit_value),
                "fees": str(t.fees),
                "gross": str(t.gross),
                "entry_ts": t.entry_ts,
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PositionLedger":
        t = d.get("trip", {})
        trip = TripStats(
            side=int(t.get("side", 0)),
            entry_qty=Decimal(t.get("entry_qty", "0")),
            entry_value=Decimal(t.get("entry_value", "0")),
            exit_qty=Decimal(t.get("exit_qty", "0")),
            exit_value=Decimal(t.get("exit_value", "0")),
            fees=Decimal(t.get("fees", "0")),
            gross=Decimal(t.get("gross", "0")),
            entry_ts=int(t.get("entry_ts", 0)),
        )
        return cls(
            contract_value=Decimal(d.get("contract_value", "1")),
            lots=deque([Decimal(q), Decimal(p)] for q, p in d.get("lots", [])),
            side=int(d.get("side", 0)),
            qty=Decimal(d.get("qty", "0")),
            realized=Decimal(d.get("realized", "0")),
            fees=Decimal(d.get("fees", "0")),
            trip=trip,
        )

    @classmethod
    def adopt(
        cls, qty_signed: Decimal, avg_price: Decimal, contract_value: Decimal = ONE, ts_ns: int = 0
    ) -> "PositionLedger":
        """A ledger holding a venue-reported position (after a restart without stored fills)."""
        led = cls(contract_value=contract_value)
        if qty_signed:
            q = abs(qty_signed)
            led.side = 1 if qty_signed > 0 else -1
            led.qty = q
            led.lots = deque([[q, avg_price]])
            led.cost = q * avg_price
            led.trip = TripStats(side=led.side, entry_qty=q, entry_value=q * avg_price, entry_ts=ts_ns)
        return led
