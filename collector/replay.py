"""Replay recorded market data as the collector's normalised messages (no bus, no store).

Sources yield :class:`depthpilot.messages.BookSnapshot` and :class:`depthpilot.messages.Trade`
in receive order:

* :class:`collector.replay_binance.BinanceRecordingReplay` - raw Binance recordings (re-exported
  here; books rebuilt by the same :class:`~collector.exchanges.binance_sync.BinanceDiffBook`
  the live collector uses);
* :class:`TardisBookSnapshotReplay` - Tardis ``book_snapshot_N`` CSV (also the
  ``derived_book_snapshot_25.csv.gz`` files);
* :class:`TardisTradesReplay` - Tardis ``trades`` CSV.

Pacing is separate and pure: :func:`sleep_schedule` turns timestamps + speed into sleep
durations, :func:`pace` / :func:`apace` sleep through an injectable clock (1x real time, Nx,
or ``speed=None`` = as fast as possible). :class:`SnapshotThrottle` limits book snapshots to
R per second per symbol by event time while never losing the latest state.

"Event time" throughout is the receive timestamp ``ts_recv`` (ns) carried by every message:
one clock for books and trades, so a replay at any speed emits exactly the same messages.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Generic, Hashable, Iterable, Iterator, Protocol, TypeVar

import numpy as np

from depthpilot.messages import BookSnapshot, Side, Trade

__all__ = [
    "ReplayError",
    "Clock",
    "SystemClock",
    "ManualClock",
    "sleep_schedule",
    "pace",
    "apace",
    "SnapshotThrottle",
    "TardisBookSnapshotReplay",
    "TardisTradesReplay",
    "merge_by_recv",
    "snapshot_validity",
]

ReplayMessage = BookSnapshot | Trade


class ReplayError(ValueError):
    """Bad replay input (unreadable file, unknown format, bad speed)."""


# --------------------------------------------------------------------------- pacing


class Clock(Protocol):
    def monotonic_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class ManualClock:
    """A clock for tests and simulations: ``sleep`` advances time instantly and is logged."""

    now_ns: int = 0
    sleeps: list[float] = field(default_factory=list)

    def monotonic_ns(self) -> int:
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self.now_ns += int(round(seconds * 1e9))

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def _check_speed(speed: float | None) -> float | None:
    """None / 0 / inf -> None (as fast as possible); otherwise a positive multiplier."""
    if speed is None or speed == 0 or (isinstance(speed, float) and math.isinf(speed)):
        return None
    if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not speed > 0 or math.isnan(speed):
        raise ReplayError(f"speed must be a positive number, 0/None/inf (as fast as possible), not {speed!r}")
    return float(speed)


def sleep_schedule(timestamps_ns: Iterable[int], speed: float | None) -> list[float]:
    """Seconds to sleep before each event so they play at ``speed`` x real time.

    Sleeps are computed against the first event's time (no drift accumulation); events out
    of order never sleep negatively. ``speed=None`` (or 0 / inf) gives all zeros.
    """
    sp = _check_speed(speed)
    ts = np.asarray(list(timestamps_ns), dtype=np.int64)
    if ts.size == 0:
        return []
    if sp is None:
        return [0.0] * int(ts.size)
    # target offset of each event from the start, never moving backwards in time
    target = np.maximum.accumulate(ts - ts[0]).astype(np.float64) / 1e9 / sp
    out = np.diff(target, prepend=0.0)
    return out.tolist()


class _Pacer:
    """Maps event timestamps to wall targets: target = start + (ts - ts0) / speed."""

    __slots__ = ("speed", "clock", "t0_wall", "ts0")

    def __init__(self, speed: float | None, clock: Clock) -> None:
        self.speed = _check_speed(speed)
        self.clock = clock
        self.t0_wall: int | None = None
        self.ts0 = 0

    def delay(self, ts_ns: int) -> float:
        if self.speed is None:
            return 0.0
        now = self.clock.monotonic_ns()
        if self.t0_wall is None:
            self.t0_wall, self.ts0 = now, ts_ns
            return 0.0
        target = self.t0_wall + (ts_ns - self.ts0) / self.speed
        return max(0.0, (target - now) / 1e9)


def _ts_recv(msg: Any) -> int:
    return msg.ts_recv


def pace(
    events: Iterable[Any],
    speed: float | None = 1.0,
    clock: Clock | None = None,
    ts: Callable[[Any], int] = _ts_recv,
) -> Iterator[Any]:
    """Yield ``events`` at ``speed`` x real time (by ``ts(event)`` ns), sleeping via ``clock``."""
    pacer = _Pacer(speed, clock or SystemClock())
    sleep = pacer.clock.sleep
    for ev in events:
        d = pacer.delay(ts(ev))
        if d > 0:
            sleep(d)
        yield ev


async def apace(
    events: Iterable[Any],
    speed: float | None = 1.0,
    clock: Clock | None = None,
    ts: Callable[[Any], int] = _ts_recv,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncIterator[Any]:
    """Async :func:`pace` (``sleep`` defaults to ``asyncio.sleep``). With ``speed=None`` it still
    yields control to the loop every 1000 events."""
    pacer = _Pacer(speed, clock or SystemClock())
    asleep = sleep or asyncio.sleep
    n = 0
    for ev in events:
        d = pacer.delay(ts(ev))
        n += 1
        if d > 0:
            await asleep(d)
        elif n % 1000 == 0:
            await asleep(0)
        yield ev


# --------------------------------------------------------------------------- throttle


K = TypeVar("K", bound=Hashable)


class SnapshotThrottle(Generic[K]):
    """At most ``max_per_sec`` emissions per key (symbol) by event time; latest state kept.

    ``offer(key, ts)`` after every book update: True = emit the current state now. False =
    the state is pending; it is reported by ``due(now)`` once the interval since the last
    emission has passed (trailing edge), or by ``flush()`` at the end. Emissions for a key are
    always at least ``1 / max_per_sec`` seconds apart.
    """

    def __init__(self, max_per_sec: float) -> None:
        if not (isinstance(max_per_sec, (int, float)) and max_per_sec > 0 and math.isfinite(max_per_sec)):
            raise ReplayError(f"max_per_sec must be a positive finite number, not {max_per_sec!r}")
        self.max_per_sec = float(max_per_sec)
        self.interval_ns = int(round(1e9 / max_per_sec))
        self._last: dict[K, int] = {}
        self._pending: dict[K, int] = {}  # key -> ts of the newest unemitted update

    def offer(self, key: K, ts_ns: int) -> bool:
        last = self._last.get(key)
        if last is None or ts_ns - last >= self.interval_ns:
            self._last[key] = ts_ns
            self._pending.pop(key, None)
            return True
        self._pending[key] = ts_ns
        return False

    def force(self, key: K, ts_ns: int) -> None:
        """Record an emission made regardless of the rate (e.g. a validity change)."""
        self._last[key] = max(ts_ns, self._last.get(key, ts_ns))
        self._pending.pop(key, None)

    def due(self, now_ns: int) -> list[K]:
        """Keys whose pending state may be emitted at ``now_ns`` (marked emitted)."""
        if not self._pending:
            return []
        out: list[K] = []
        iv = self.interval_ns
        for key in list(self._pending):
            if now_ns - self._last[key] >= iv:
                del self._pending[key]
                self._last[key] = now_ns
                out.append(key)
        return out

    def flush(self) -> list[K]:
        """All keys with a pending state (end of stream); marked emitted."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def pending(self, key: K) -> bool:
        return key in self._pending


def snapshot_validity(bids: np.ndarray, asks: np.ndarray) -> tuple[bool, str]:
    """(valid, reason) of a materialised book: both sides present and not crossed."""
    if len(bids) == 0 or len(asks) == 0:
        return False, "empty side"
    if bids[0, 0] >= asks[0, 0]:
        return False, f"crossed: best bid {bids[0, 0]} >= best ask {asks[0, 0]}"
    return True, ""


# --------------------------------------------------------------------------- Tardis CSV

_LEVEL_COL = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")


def _read_csv_chunks(path: Path, chunksize: int):
    import pandas as pd

    try:
        # only empty cells are missing values (pandas' default float parser is exact)
        return pd.read_csv(
            path,
            chunksize=chunksize,
            dtype={"exchange": str, "symbol": str, "side": str},
            keep_default_na=False,
            na_values=[""],
        )
    except (OSError, ValueError) as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None


class TardisBookSnapshotReplay:
    """Tardis ``book_snapshot_N`` CSV -> BookSnapshot (N from the header).

    Columns ``exchange,symbol,timestamp,local_timestamp`` (µs) then ``asks[i].price``,
    ``asks[i].amount``, ``bids[i].price``, ``bids[i].amount``; empty cells (fewer levels) are
    dropped. ``seq`` is the 1-based row number (Tardis snapshots carry no update id).
    """

    def __init__(self, path: str | Path, *, exchange: str | None = None, chunksize: int = 20_000) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ReplayError(f"Tardis CSV not found: {self.path}")
        self.exchange = exchange
        self.chunksize = chunksize

    def __iter__(self) -> Iterator[BookSnapshot]:
        seq = 0
        layout: tuple[int, list[str], list[str], list[str], list[str]] | None = None
        for chunk in _read_csv_chunks(self.path, self.chunksize):
            if layout is None:
                layout = self._layout(list(chunk.columns))
            n, ap, aa, bp, ba = layout
            arr = {}
            for name, cols in (("ap", ap), ("aa", aa), ("bp", bp), ("ba", ba)):
                try:
                    arr[name] = chunk[cols].to_numpy(dtype=np.float64)
                except (ValueError, TypeError) as exc:
                    raise ReplayError(f"{self.path}: non-numeric level value: {exc}") from None
            ts_ex = chunk["timestamp"].to_numpy(dtype=np.int64) * 1000
            ts_rc = chunk["local_timestamp"].to_numpy(dtype=np.int64) * 1000
            exch = chunk["exchange"].to_numpy()
            syms = chunk["symbol"].to_numpy()
            for i in range(len(chunk)):
                seq += 1
                bids = np.stack((arr["bp"][i], arr["ba"][i]), axis=1)
                asks = np.stack((arr["ap"][i], arr["aa"][i]), axis=1)
                bids = bids[~np.isnan(bids).any(axis=1)]
                asks = asks[~np.isnan(asks).any(axis=1)]
                valid, reason = snapshot_validity(bids, asks)
                yield BookSnapshot(
                    exchange=self.exchange or str(exch[i]),
                    symbol=str(syms[i]),
                    ts_exchange=int(ts_ex[i]),
                    ts_recv=int(ts_rc[i]),
                    seq=seq,
                    bids=bids,
                    asks=asks,
                    depth=n,
                    valid=valid,
                    reason=reason,
                )

    def _layout(self, cols: list[str]):
        need = {"exchange", "symbol", "timestamp", "local_timestamp"}
        if not need <= set(cols):
            raise ReplayError(f"{self.path}: not a Tardis book_snapshot CSV (missing {sorted(need - set(cols))})")
        levels: dict[tuple[str, str], dict[int, str]] = {}
        for c in cols:
            m = _LEVEL_COL.match(c)
            if m:
                levels.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = c
        keys = [("asks", "price"), ("asks", "amount"), ("bids", "price"), ("bids", "amount")]
        if not all(k in levels for k in keys):
            raise ReplayError(f"{self.path}: no asks[i]/bids[i] price/amount columns")
        n = len(levels[keys[0]])
        out = []
        for k in keys:
            idx = levels[k]
            if sorted(idx) != list(range(n)):
                raise ReplayError(f"{self.path}: {k[0]}[i].{k[1]} columns are not 0..{n - 1}")
            out.append([idx[i] for i in range(n)])
        return (n, *out)


class TardisTradesReplay:
    """Tardis ``trades`` CSV (``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``)
    -> Trade. ``side`` is the taker side (buy/sell); rows with an unknown side are an error."""

    def __init__(self, path: str | Path, *, exchange: str | None = None, chunksize: int = 50_000) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ReplayError(f"Tardis CSV not found: {self.path}")
        self.exchange = exchange
        self.chunksize = chunksize

    def __iter__(self) -> Iterator[Trade]:
        cols = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]
        for chunk in _read_csv_chunks(self.path, self.chunksize):
            missing = [c for c in cols if c not in chunk.columns]
            if missing:
                raise ReplayError(f"{self.path}: not a Tardis trades CSV (missing {missing})")
            try:
                price = chunk["price"].to_numpy(dtype=np.float64)
                amount = chunk["amount"].to_numpy(dtype=np.float64)
                ts_ex = chunk["timestamp"].to_numpy(dtype=np.int64) * 1000
                ts_rc = chunk["local_timestamp"].to_numpy(dtype=np.int64) * 1000
            except (ValueError, TypeError) as exc:
                raise ReplayError(f"{self.path}: bad numeric value: {exc}") from None
            exch = chunk["exchange"].to_numpy()
            syms = chunk["symbol"].to_numpy()
            ids = chunk["id"].astype(str).to_numpy()
            sides = chunk["side"].to_numpy()
            for i in range(len(chunk)):
                s = sides[i]
                if s == "buy":
                    side = Side.BUY
                elif s == "sell":
                    side = Side.SELL
                else:
                    raise ReplayError(f"{self.path}: unknown trade side {s!r}")
                yield Trade(
                    exchange=self.exchange or str(exch[i]),
                    symbol=str(syms[i]),
                    ts_exchange=int(ts_ex[i]),
                    ts_recv=int(ts_rc[i]),
                    price=float(price[i]),
                    size=float(amount[i]),
                    side=side,
                    trade_id=str(ids[i]),
                )


def merge_by_recv(*sources: Iterable[ReplayMessage]) -> Iterator[ReplayMessage]:
    """Merge already time-ordered sources into one stream ordered by ``ts_recv``."""
    return heapq.merge(*sources, key=_ts_recv)


def __getattr__(name: str) -> Any:
    """``BinanceRecordingReplay`` lives in :mod:`collector.replay_binance` (it uses this module's
    throttle); re-exported lazily to avoid an import cycle."""
    if name == "BinanceRecordingReplay":
        from collector.replay_binance import BinanceRecordingReplay

        return BinanceRecordingReplay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
