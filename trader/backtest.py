"""The in-process loop that joins the trading engine and the paper exchange, event by event:
the backtest driver (and the tests' harness). Pure: books and signals in, actions out.

Order per book: the exchange sees the book first (due orders fill, stops trigger), the engine
gets the resulting reports, then the book itself; every action is dispatched at once
(``OrderRequest`` -> ``submit``, ``StopMove`` -> ``set_stop``) and the reports fed back until
nothing new happens. A rejected submit becomes a ``rejected`` ``OrderReport`` for the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from trader.actions import Action, StopMove
from trader.domain import OrderRejected, OrderReport, OrderRequest
from trader.engine import TradingEngine
from trader.engine_state import book_ts
from trader.paper import PaperExchange


@dataclass(slots=True)
class BookView:
    """The book fields the engine and the paper exchange read (a ``BookSnapshot`` works too)."""

    exchange: str
    symbol: str
    ts: int  # ns
    bids: np.ndarray  # float64 (n, 2), best first
    asks: np.ndarray
    valid: bool = True
    reason: str = ""


class Simulator:
    def __init__(self, engine: TradingEngine, paper: PaperExchange, *, keep_actions: bool = True) -> None:
        self.engine = engine
        self.paper = paper
        self.keep_actions = keep_actions
        self.actions: list[Action] = []

    def book(self, book: Any, ts: int | None = None) -> list[Action]:
        """A book (``ts``: its event time, when the caller has it at hand)."""
        if ts is None:
            ts = book_ts(book)
        self.paper.on_book(book, ts)
        out = self.engine.on_events(self.paper.poll_events()) if self.paper.events else []
        out += self.engine.on_book(book, ts)
        return self._run(out) if out else out

    def signal(self, sig: Any, now_ns: int | None = None) -> list[Action]:
        out = self.engine.on_signal(sig, now_ns)
        return self._run(out) if out else out

    def timer(self, now_ns: int) -> list[Action]:
        return self._run(self.engine.on_timer(now_ns))

    def control(self, name: str, *args: Any, **kw: Any) -> list[Action]:
        """``control("start", "BTCUSDT", 3)``, ``control("kill")``, ``control("flatten", "all")``..."""
        return self._run(getattr(self.engine, name)(*args, **kw))

    def run(self, events: Iterable[tuple[str, Any]]) -> list[Action]:
        """Events ``("book", snap)`` / ``("signal", sig)`` / ``("timer", ns)`` in time order."""
        out: list[Action] = []
        for kind, ev in events:
            out += getattr(self, kind)(ev)
        return out

    def _run(self, actions: list[Action]) -> list[Action]:
        done: list[Action] = []
        todo = list(actions)
        while todo:
            act = todo.pop(0)
            done.append(act)
            if isinstance(act, OrderRequest):
                try:
                    self.paper.submit(act)
                except OrderRejected as exc:
                    todo += self.engine.on_order(
                        OrderReport(
                            act.client_order_id,
                            act.exchange,
                            act.symbol,
                            act.side,
                            act.qty,
                            "rejected",
                            reason=str(exc),
                            ts_ns=act.ts_ns,
                        )
                    )
            elif isinstance(act, StopMove):
                self.paper.set_stop(act.symbol, act.stop_price)
            if self.paper.events:
                todo += self.engine.on_events(self.paper.poll_events())
        if self.keep_actions:
            self.actions += done
        return done
