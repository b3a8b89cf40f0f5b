"""The trader's answers to the control layer (:mod:`depthpilot.control`): one handler per
request, registered on a :class:`~depthpilot.control.ControlServer`. Actions go through the
runtime (engine under its lock, resulting orders queued to the execution worker); queries are
answered by the engine, and closed trades / realised PnL by the store when there is one.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FuturesTimeout
from decimal import Decimal
from typing import Any

from depthpilot import control as c
from trader.domain import as_mode
from trader.runtime import DAY_NS, TraderRuntime


def _orders(actions: list[Any]) -> int:
    from trader.domain import OrderRequest

    return sum(isinstance(a, OrderRequest) for a in actions)


def register(server: c.ControlServer, rt: TraderRuntime, *, model_id: str = "") -> None:
    def check_exchange(exchange: str) -> None:
        if exchange and exchange != rt.exchange:
            raise c.ControlRejected(f"this trader trades on {rt.exchange}, not {exchange}")

    def start(req: c.StartTrading) -> c.Ack:
        check_exchange(req.exchange)
        sym = req.symbol.upper()
        rt.act(lambda e: e.start(sym, req.n_trades))
        n = f" for {req.n_trades} trades" if req.n_trades else ""
        return c.Ack(message=f"trading {sym} on {rt.exchange} ({rt.mode}){n}", data={"symbol": sym})

    def stop(req: c.StopTrading) -> c.Ack:
        actions = rt.act(lambda e: e.stop(req.symbol.upper() if req.symbol != "all" else "all", req.flatten))
        what = f"; {_orders(actions)} closing orders sent" if req.flatten else ""
        return c.Ack(message=f"stopped {req.symbol}{what}", data={"orders": _orders(actions)})

    def flatten(req: c.Flatten) -> c.Ack:
        actions = rt.act(lambda e: e.flatten(req.symbol.upper() if req.symbol != "all" else "all", "manual"))
        return c.Ack(
            message=f"flatten {req.symbol}: {_orders(actions)} closing orders sent", data={"orders": _orders(actions)}
        )

    def pause(req: c.PauseEntries) -> c.Ack:
        rt.act(lambda e: e.pause(req.symbol.upper() if req.symbol != "all" else "all"))
        return c.Ack(message=f"entries paused on {req.symbol}")

    def resume(req: c.ResumeEntries) -> c.Ack:
        rt.act(lambda e: e.resume(req.symbol.upper() if req.symbol != "all" else "all"))
        return c.Ack(message=f"entries resumed on {req.symbol}")

    def reset(req: c.ResetRisk) -> c.Ack:
        actions = rt.act(lambda e: e.reset_risk())
        return c.Ack(message="risk halt lifted" if actions else "no risk halt to lift")

    def set_param(req: c.SetParameter) -> c.Ack:
        actions = rt.act(lambda e: e.set_param(req.name, req.value))  # a lowered loss limit may halt at once
        cfg = rt.engine.cfg
        halted = (
            "; limit already exceeded: flattening, entries halted"
            if _orders(actions) or any(getattr(a, "kind", "") == "daily_loss_limit" for a in actions)
            else ""
        )
        return c.Ack(
            message=f"{req.name} = {getattr(cfg, req.name)}{halted}", data={req.name: str(getattr(cfg, req.name))}
        )

    def status(req: c.Status) -> c.StatusReply:
        with c.held_before_deadline(rt.lock):
            rep = rt.engine.status(model_id)
        rep.data.update(worker_backlog=rt.worker.backlog(), exchange=rt.exchange, counters=dict(rt.counters))
        return rep

    def positions(req: c.Positions) -> c.PositionsReply:
        with c.held_before_deadline(rt.lock):
            return rt.engine.positions()

    def balance(req: c.Balance) -> c.BalanceReply:
        def ask(client: Any) -> tuple[dict[str, Decimal], Decimal | None]:
            avail = client.available() if callable(getattr(client, "available", None)) else None
            return client.balance(), avail

        wait_s = c.time_left_s(10.0)  # never past the command's deadline
        try:
            bal, avail = rt.worker.call(ask).result(timeout=wait_s)
        except FuturesTimeout:
            raise c.ControlRejected(f"the venue did not answer the balance query within {wait_s:.1f} s") from None
        ccy = "USDT" if "USDT" in bal else next(iter(bal), "USDT")
        equity = bal.get(ccy, Decimal(0))
        return c.BalanceReply(
            mode=as_mode(rt.mode),
            currency=ccy,
            equity=equity,
            available=equity if avail is None else avail,
            data={k: str(v) for k, v in bal.items()},
        )

    def pnl(req: c.Pnl) -> c.PnlReply:
        now = rt.clock.now()
        with c.held_before_deadline(rt.lock):
            rep = rt.engine.pnl(req.period, now)
        if rt.store is None:
            return rep
        since = {"today": now // DAY_NS * DAY_NS, "7d": now - 7 * DAY_NS, "all": 0}[req.period]
        s = rt.store.pnl(rt.mode, since=since)
        return c.PnlReply(
            period=req.period,
            since_ts=since,
            realized=s["realized"],
            fees=s["fees"],
            unrealized=rep.unrealized,
            trades=s["trades"],
            wins=s["wins"],
            currency=rep.currency,
        )

    def trades(req: c.RecentTrades) -> c.TradesReply:
        if req.n <= 0:
            raise c.ControlRejected(f"n must be positive, not {req.n}")
        if rt.store is None:
            with c.held_before_deadline(rt.lock):
                return rt.engine.trades(req.n)
        rows = rt.store.closed_trades(rt.mode, n=req.n)
        return c.TradesReply(
            trades=[
                c.TradeView(
                    **{
                        k: r[k]
                        for k in (
                            "exchange",
                            "symbol",
                            "side",
                            "qty",
                            "entry_price",
                            "exit_price",
                            "entry_ts",
                            "exit_ts",
                            "pnl",
                            "fees",
                            "exit_reason",
                        )
                    }
                )
                for r in rows
            ]
        )

    def risk(req: c.RiskLimits) -> c.RiskReply:
        with c.held_before_deadline(rt.lock):
            return rt.engine.risk()

    for req_type, fn in (
        (c.StartTrading, start),
        (c.StopTrading, stop),
        (c.Flatten, flatten),
        (c.PauseEntries, pause),
        (c.ResumeEntries, resume),
        (c.ResetRisk, reset),
        (c.SetParameter, set_param),
        (c.Status, status),
        (c.Positions, positions),
        (c.Balance, balance),
        (c.Pnl, pnl),
        (c.RecentTrades, trades),
        (c.RiskLimits, risk),
    ):
        server.register(req_type, fn)
