"""Binance diff-depth order-book sync (pure logic, no network): the ONE implementation of the
exchange's sync rule, used by the live source, the replay and every offline loader.

Sync rule (Binance "How to manage a local order book correctly"):

* take a REST depth snapshot (``lastUpdateId`` = L) while buffering stream diffs;
* spot: drop diffs with ``u <= L``; the first applied diff must straddle
  ``U <= L + 1 <= u``; afterwards every diff must continue ``U == prev_u + 1``;
* futures (USD-M and COIN-M, same rule): drop diffs with ``u < L``; the first applied diff
  must straddle ``U <= L <= u``; afterwards every diff must continue ``pu == prev_u``;
* levels carry absolute quantities, quantity 0 removes the level (removing an unknown level
  is normal).

A break of the rule is a *gap*: :class:`BinanceDiffBook` returns :attr:`SyncResult.GAP`,
marks the book invalid and waits for a fresh snapshot (buffering the diffs that arrive
meanwhile so they can bridge to it). A crossed book (best bid >= best ask) is flagged
invalid with a reason. A snapshot that is not newer than the book already built (its
``lastUpdateId`` at or before the last applied update) never rewinds it: it is counted in
``old_snapshots`` and ignored (:attr:`SyncResult.STALE`).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Iterable, Mapping, NamedTuple

from collector.book import L2Book
from collector.exchanges.binance_parse import KIND_DEPTH, KIND_SNAPSHOT, DepthDiff, DepthSnapshot, _convert

__all__ = ["SyncResult", "GapInfo", "BinanceDiffBook"]


class SyncResult(str, enum.Enum):
    APPLIED = "applied"  # diff applied, book in sync
    STALE = "stale"  # diff / snapshot older than the book (before the snapshot / already applied): dropped
    BUFFERED = "buffered"  # no usable snapshot yet: kept to bridge to the next snapshot
    GAP = "gap"  # sequence break: book invalid, a fresh snapshot is needed


class GapInfo(NamedTuple):
    expected: int  # spot: the U expected (prev_u + 1); futures: the pu expected (prev_u)
    got: int  # the U (spot) / pu (futures) received
    first_id: int  # U of the offending diff
    final_id: int  # u of the offending diff
    after_snapshot: bool  # True: the first diff after a snapshot did not straddle it

    def describe(self) -> str:
        if self.after_snapshot:
            return (
                f"first diff [{self.first_id}, {self.final_id}] does not straddle snapshot lastUpdateId {self.expected}"
            )
        return f"sequence break: expected {self.expected}, got {self.got} (diff [{self.first_id}, {self.final_id}])"


_APPLIED = SyncResult.APPLIED
_AWAIT_SNAPSHOT = 0
_AWAIT_FIRST = 1
_SYNCED = 2


class BinanceDiffBook:
    """Builds one symbol's book from a REST snapshot and the diff-depth stream.

    ``market`` is ``"spot"``, ``"usdm"`` / ``"coinm"`` (futures: the ``pu`` rule), or
    ``"auto"`` (decided by the first diff: futures diffs carry ``pu``).

    Counters: ``applied``, ``dropped`` (stale diffs), ``gaps``, ``resyncs`` (snapshots applied
    after the book had been in sync before), ``snapshots``, ``old_snapshots`` (snapshots not
    newer than the book, ignored), ``crossed`` (times the book became crossed),
    ``buffer_overflow``. ``needs_snapshot`` tells live wiring to fetch a snapshot.
    """

    __slots__ = (
        "market",
        "book",
        "_futures",
        "_state",
        "_last_u",
        "_snap_id",
        "_buffer",
        "_ever_synced",
        "_is_crossed",
        "applied",
        "dropped",
        "gaps",
        "resyncs",
        "snapshots",
        "old_snapshots",
        "crossed",
        "buffer_overflow",
        "last_gap",
        "_note",
    )

    def __init__(self, market: str = "auto", max_buffer: int = 10_000) -> None:
        if market not in ("spot", "usdm", "coinm", "auto"):
            raise ValueError(f"market must be 'spot', 'usdm', 'coinm' or 'auto', not {market!r}")
        self.market = market
        self._futures: bool | None = None if market == "auto" else market != "spot"
        self.book = L2Book()
        self._state = _AWAIT_SNAPSHOT
        self._last_u = 0
        self._snap_id = 0
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self._ever_synced = False
        self._is_crossed = False
        self.applied = 0
        self.dropped = 0
        self.gaps = 0
        self.resyncs = 0
        self.snapshots = 0
        self.old_snapshots = 0
        self.crossed = 0
        self.buffer_overflow = 0
        self.last_gap: GapInfo | None = None
        self._note = ""

    # ----------------------------------------------------------------- state
    @property
    def synced(self) -> bool:
        return self._state == _SYNCED

    @property
    def needs_snapshot(self) -> bool:
        return self._state == _AWAIT_SNAPSHOT

    @property
    def valid(self) -> bool:
        return self._state == _SYNCED and not self._is_crossed

    @property
    def last_update_id(self) -> int:
        """Final update id of the last applied diff (or the snapshot's lastUpdateId)."""
        return self.book.seq

    @property
    def reason(self) -> str:
        """Why the book is not valid ("" when valid)."""
        if self._state == _AWAIT_SNAPSHOT:
            if self.last_gap is not None:
                return f"resync: waiting for a snapshot after {self.last_gap.describe()}"
            return f"waiting for a snapshot ({self._note})" if self._note else "waiting for a snapshot"
        if self._state == _AWAIT_FIRST:
            return f"waiting for the first diff after snapshot {self._snap_id}"
        if self._is_crossed:
            bb, ba = self.book.best_bid_price(), self.book.best_ask_price()
            return f"crossed: best bid {bb} >= best ask {ba}"
        return ""

    def stats(self) -> dict[str, int | bool | str]:
        return {
            "applied": self.applied,
            "dropped": self.dropped,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "snapshots": self.snapshots,
            "old_snapshots": self.old_snapshots,
            "crossed": self.crossed,
            "buffer_overflow": self.buffer_overflow,
            "buffered": len(self._buffer),
            "valid": self.valid,
            "reason": self.reason,
            "seq": self.book.seq,
        }

    # ----------------------------------------------------------------- input
    def on_snapshot(
        self,
        last_update_id: int,
        bids: Iterable[tuple[Any, Any]],
        asks: Iterable[tuple[Any, Any]],
        ts_exchange: int = 0,
    ) -> SyncResult:
        """Apply a REST snapshot, then replay buffered diffs through the sync rule.

        Returns APPLIED if the book is in sync afterwards, BUFFERED if it waits for the first
        bridging diff, GAP if the buffered diffs do not connect (fetch a newer snapshot), STALE
        if the snapshot is not newer than what the book already holds (ignored, counted in
        ``old_snapshots``; a book never goes back in time).
        """
        L = int(last_update_id)
        if (self._ever_synced and L <= self._last_u) or (self._state == _AWAIT_FIRST and L <= self._snap_id):
            self.old_snapshots += 1
            return SyncResult.STALE
        book = self.book
        book.apply_snapshot(bids, asks)
        book.seq = int(last_update_id)
        book.ts_exchange = int(ts_exchange)
        self._snap_id = int(last_update_id)
        self._last_u = int(last_update_id)
        self.snapshots += 1
        if self._ever_synced:
            self.resyncs += 1
        self._state = _AWAIT_FIRST
        self._check_crossed()
        pending = list(self._buffer)
        self._buffer.clear()
        for d in pending:
            self.on_diff(d)
        if self._state == _SYNCED:
            return SyncResult.APPLIED
        return SyncResult.BUFFERED if self._state == _AWAIT_FIRST else SyncResult.GAP

    def on_snapshot_msg(self, msg: DepthSnapshot | Mapping[str, Any]) -> SyncResult:
        snap: DepthSnapshot = msg if isinstance(msg, DepthSnapshot) else _convert(dict(msg), KIND_SNAPSHOT)
        return self.on_snapshot(snap.lastUpdateId, snap.bids, snap.asks, (snap.T or snap.E) * 1_000_000)

    def on_diff(self, msg: DepthDiff | Mapping[str, Any]) -> SyncResult:
        """Feed one diff (a :class:`DepthDiff` or the ``data`` dict of a depthUpdate)."""
        d: DepthDiff = msg if isinstance(msg, DepthDiff) else _convert(dict(msg), KIND_DEPTH)
        state = self._state
        if state == _SYNCED:  # (_futures is known once a diff has been applied)
            last = self._last_u
            if (d.pu == last) if self._futures else (d.U == last + 1):
                # hot path, inlined _apply
                book = self.book
                book.apply_levels(d.b, d.a)
                u = d.u
                book.seq = u
                book.ts_exchange = d.E * 1_000_000
                self._last_u = u
                self.applied += 1
                if book._bb >= book._ba:
                    if not self._is_crossed:
                        self._is_crossed = True
                        self.crossed += 1
                elif self._is_crossed:
                    self._is_crossed = False
                return _APPLIED
            u = d.u
            if u <= last:
                self.dropped += 1  # duplicate / old diff
                return SyncResult.STALE
            if self._futures:
                return self._gap(d, GapInfo(last, d.pu if d.pu is not None else -1, d.U, u, False))
            return self._gap(d, GapInfo(last + 1, d.U, d.U, u, False))
        futures = self._futures
        if futures is None:
            futures = self._futures = d.pu is not None
        u = d.u
        if state == _AWAIT_FIRST:
            L = self._snap_id
            if (u < L) if futures else (u <= L):
                self.dropped += 1
                return SyncResult.STALE
            if d.U <= (L if futures else L + 1):  # and u >= L (+1): straddles the snapshot
                return self._apply(d)
            return self._gap(d, GapInfo(L, d.U, d.U, u, True))
        # waiting for a snapshot: keep the diff to bridge to it
        buf = self._buffer
        if len(buf) == buf.maxlen:
            self.buffer_overflow += 1
        buf.append(d)
        return SyncResult.BUFFERED

    def _apply(self, d: DepthDiff) -> SyncResult:
        book = self.book
        book.apply_levels(d.b, d.a)
        u = d.u
        book.seq = u
        book.ts_exchange = d.E * 1_000_000
        self._last_u = u
        self._state = _SYNCED
        self._ever_synced = True
        self.applied += 1
        if book._bb >= book._ba:  # crossed (inline: hot path)
            if not self._is_crossed:
                self._is_crossed = True
                self.crossed += 1
        elif self._is_crossed:
            self._is_crossed = False
        return SyncResult.APPLIED

    def _check_crossed(self) -> None:
        was = self._is_crossed
        self._is_crossed = self.book.is_crossed()
        if self._is_crossed and not was:
            self.crossed += 1

    def _gap(self, d: DepthDiff, info: GapInfo) -> SyncResult:
        self.gaps += 1
        self.last_gap = info
        self._note = ""
        self._state = _AWAIT_SNAPSHOT
        self._buffer.clear()
        self._buffer.append(d)  # may bridge to the next snapshot
        return SyncResult.GAP

    def invalidate(self, reason: str = "reconnect") -> None:
        """Force a resync (e.g. after a websocket reconnect): wait for a new snapshot."""
        self._state = _AWAIT_SNAPSHOT
        self._buffer.clear()
        self.last_gap = None
        self._note = reason
