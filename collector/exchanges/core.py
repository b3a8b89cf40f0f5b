"""Small shared core of the per-exchange book builders (pure logic, no I/O).

A builder takes raw *decoded* websocket messages (dicts, exactly as the exchange sent
them), keeps one :class:`~collector.book.L2Book` for one symbol and answers every
message with an :class:`ApplyResult`. Exchange specifics (message shapes, sequence
rules, checksums) live in the per-exchange modules; this module only holds what they
share: the result codes, the counters, the validity flag and the resync state machine.

State machine::

    awaiting snapshot --snapshot--> live --gap / bad checksum--> needs resync
          ^                                                        |
          +------------------- (caller re-subscribes) -------------+

While a resync is pending every delta is answered with ``AWAITING_SNAPSHOT`` and the
book is flagged invalid; the next snapshot message makes it live again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Mapping

from collector.book import L2Book
from depthpilot.messages import BookSnapshot

__all__ = ["ApplyResult", "BookMessageError", "BuilderStats", "BookBuilder", "publishes"]


class BookMessageError(ValueError):
    """A message claims to be a book message of this exchange but is malformed."""


class ApplyResult(str, Enum):
    APPLIED = "applied"  # delta applied to a live book
    SNAPSHOT = "snapshot"  # book (re)built from a snapshot
    IGNORED = "ignored"  # not a book message for this builder's symbol (acks, trades, other symbols)
    STALE = "stale"  # delta older than the book (already contained in the snapshot)
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # delta while no valid snapshot: dropped
    GAP = "gap"  # sequence gap: book invalid, caller must resync
    CHECKSUM_FAILED = "checksum_failed"  # checksum mismatch: book invalid, caller must resync

    @property
    def needs_resync(self) -> bool:
        return self in (ApplyResult.GAP, ApplyResult.CHECKSUM_FAILED)


def publishes(result: ApplyResult, was_valid: bool) -> bool:
    """Whether a message's result is shown as a book: every change, and the moment a live book
    breaks (gap, checksum). One rule for a live feed and the replay of its recording."""
    return result in (ApplyResult.APPLIED, ApplyResult.SNAPSHOT) or (result.needs_resync and was_valid)


@dataclass
class BuilderStats:
    messages: int = 0  # book messages for our symbol
    snapshots: int = 0
    deltas: int = 0  # deltas applied
    ignored: int = 0
    stale: int = 0
    awaiting: int = 0  # deltas dropped while awaiting a snapshot
    gaps: int = 0
    checksum_ok: int = 0
    checksum_failed: int = 0
    crossed: int = 0  # messages after which the book was crossed
    resyncs_requested: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BookBuilder:
    """Base class: one symbol, one book. Subclasses implement :meth:`_process`."""

    exchange: str = ""

    def __init__(self, symbol: str) -> None:
        if not symbol:
            raise ValueError("symbol must be a non-empty string")
        self.symbol = symbol
        self.book = L2Book()
        self.stats = BuilderStats()
        self.has_snapshot = False
        self.needs_resync = False
        self.valid = False
        self.reason = "no snapshot yet"

    # ----------------------------------------------------------------- public
    def process(self, msg: Mapping[str, Any]) -> ApplyResult:
        """Feed one decoded websocket message; returns what happened."""
        if not isinstance(msg, Mapping):
            raise BookMessageError(f"{self.exchange}: expected a decoded JSON object, got {type(msg).__name__}")
        try:
            result = self._process(msg)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, BookMessageError):
                raise
            raise BookMessageError(f"{self.exchange} {self.symbol}: malformed book message: {exc!r}") from exc
        self._count(result)
        return result

    def reset(self) -> None:
        """Drop the book and wait for a fresh snapshot (call after re-subscribing)."""
        self.book.clear()
        self.has_snapshot = False
        self.needs_resync = False
        self.valid = False
        self.reason = "no snapshot yet"

    def to_snapshot(self, depth: int, ts_recv: int | None = None) -> BookSnapshot:
        """Top ``depth`` levels as a :class:`BookSnapshot` message (validity included)."""
        bids, asks = self.book.top(depth)
        return BookSnapshot(
            exchange=self.exchange,
            symbol=self.symbol,
            ts_exchange=self.book.ts_exchange,
            ts_recv=ts_recv if ts_recv is not None else time.time_ns(),
            seq=self.book.seq,
            bids=bids,
            asks=asks,
            depth=depth,
            valid=self.valid,
            reason=self.reason,
        )

    # ----------------------------------------------------------------- for subclasses
    def _process(self, msg: Mapping[str, Any]) -> ApplyResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_snapshot_applied(self) -> ApplyResult:
        self.has_snapshot = True
        self.needs_resync = False
        self._check_crossed()
        return ApplyResult.SNAPSHOT

    def _on_delta_applied(self) -> ApplyResult:
        self._check_crossed()
        return ApplyResult.APPLIED

    def _awaiting(self) -> ApplyResult:
        return ApplyResult.AWAITING_SNAPSHOT

    def _gap(self, reason: str) -> ApplyResult:
        self._invalidate(f"gap: {reason}")
        return ApplyResult.GAP

    def _checksum_failed(self, reason: str) -> ApplyResult:
        self._invalidate(f"checksum: {reason}")
        return ApplyResult.CHECKSUM_FAILED

    # ----------------------------------------------------------------- internals
    def _invalidate(self, reason: str) -> None:
        self.has_snapshot = False
        self.needs_resync = True
        self.valid = False
        self.reason = reason

    def _check_crossed(self) -> None:
        if self.book.is_crossed():
            bb, ba = self.book.best_bid(), self.book.best_ask()
            self.valid = False
            self.reason = f"crossed: best bid {bb[0] if bb else None} >= best ask {ba[0] if ba else None}"
        else:
            self.valid = True
            self.reason = ""

    def _count(self, r: ApplyResult) -> None:
        s = self.stats
        if r is ApplyResult.IGNORED:
            s.ignored += 1
            return
        s.messages += 1
        if r is ApplyResult.SNAPSHOT:
            s.snapshots += 1
        elif r is ApplyResult.APPLIED:
            s.deltas += 1
        elif r is ApplyResult.STALE:
            s.stale += 1
        elif r is ApplyResult.AWAITING_SNAPSHOT:
            s.awaiting += 1
        elif r is ApplyResult.GAP:
            s.gaps += 1
            s.resyncs_requested += 1
        elif r is ApplyResult.CHECKSUM_FAILED:
            s.checksum_failed += 1
            s.resyncs_requested += 1
        if r in (ApplyResult.SNAPSHOT, ApplyResult.APPLIED) and not self.valid and self.reason.startswith("crossed"):
            s.crossed += 1


class IdLevelBookBuilder(BookBuilder):
    """Books whose levels are addressed by an id (BitMEX ``orderBookL2``, Bybit v2
    ``orderBookL2_25``): snapshot rows, then insert/update/delete by id. An update or delete
    of an unknown id, or an insert of a known one, is a gap."""

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol)
        self._levels: dict[int, tuple[bool, float]] = {}  # id -> (is_bid, price)

    def reset(self) -> None:
        super().reset()
        self._levels.clear()

    def _is_bid(self, r: Mapping[str, Any]) -> bool:
        side = r["side"]
        if side not in ("Buy", "Sell"):
            raise BookMessageError(f"{self.exchange}: unknown side {side!r}")
        return side == "Buy"

    def _load_rows(self, rows: Any) -> None:
        self._levels = {}
        bids: list[tuple[float, float]] = []
        asks: list[tuple[float, float]] = []
        for r in rows:
            is_bid, price = self._is_bid(r), float(r["price"])
            self._levels[int(r["id"])] = (is_bid, price)
            (bids if is_bid else asks).append((price, float(r["size"])))
        self.book.apply_snapshot(bids, asks)

    def _apply_row(self, action: str, r: Mapping[str, Any]) -> ApplyResult | None:
        """One insert/update/delete; returns a GAP result when the ids disagree, else None."""
        book, levels, lid = self.book, self._levels, int(r["id"])
        if action == "insert":
            if lid in levels:
                return self._gap(f"insert of existing level id {lid}")
            is_bid, price = self._is_bid(r), float(r["price"])
            levels[lid] = (is_bid, price)
            (book.set_bid if is_bid else book.set_ask)(price, float(r["size"]))
            return None
        lv = levels.get(lid)
        if lv is None:
            return self._gap(f"{action} of unknown level id {lid}")
        if action == "delete":
            del levels[lid]
            (book.set_bid if lv[0] else book.set_ask)(lv[1], 0.0)
        else:
            (book.set_bid if lv[0] else book.set_ask)(lv[1], float(r["size"]))
        return None
