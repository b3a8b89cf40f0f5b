"""The trader service's own pure pieces and thin adapters: execution selection, settings ->
config, actions -> messages, the execution worker (retry, unknown outcome, rejection), the CLI
over the control layer, and the run-all view."""

from __future__ import annotations

import time
from decimal import Decimal
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from depthpilot import control as c
from depthpilot import messages as m
from depthpilot.settings import ConfigError, load_settings
from tests.trader.svc_helpers import BookFeeder, signal, wait_until
from trader import message_map as mm
from trader.actions import ClosedTrade, PositionChange
from trader.domain import (
    FillReport,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderReport,
    OrderRequest,
    RetryableExecutionError,
)
from trader.executor import ExecWorker
from trader.settings_map import execution_plan, trader_config


@pytest.fixture(autouse=True)
def _no_env_file(no_env_file):
    """Every test here sees the settings of its own environment only (tests/trader/conftest.py)."""


# --------------------------------------------------------------------------- execution selection


def test_paper_by_default_and_keys_alone_do_not_trade_live(monkeypatch):
    plan = execution_plan(load_settings())
    assert (plan.mode, plan.venue, plan.exchange, plan.note) == ("paper", "paper", "binance", "")
    monkeypatch.setenv("BYBIT_API_KEY", "k" * 8)
    monkeypatch.setenv("BYBIT_API_SECRET", "s" * 8)
    plan = execution_plan(load_settings())
    assert plan.mode == "paper" and plan.venue == "paper" and "ignored" not in plan.note
    assert "keys are set but DEPTHPILOT_MODE is paper" in plan.note and "k" * 8 not in plan.note
    monkeypatch.setenv("DEPTHPILOT_MODE", "testnet")
    plan = execution_plan(load_settings())
    assert (plan.mode, plan.venue, plan.exchange) == ("testnet", "bybit", "bybit")
    monkeypatch.setenv("TRADER_VENUE", "binanceusdm")  # a ccxt exchange id
    assert execution_plan(load_settings()).venue == execution_plan(load_settings()).exchange == "binanceusdm"
    monkeypatch.setenv("TRADER_VENUE", "Not A Venue!")
    with pytest.raises(ConfigError, match="TRADER_VENUE"):
        load_settings()
    monkeypatch.delenv("TRADER_VENUE")
    monkeypatch.setenv("DEPTHPILOT_MODE", "live")
    with pytest.raises(ConfigError, match="DEPTHPILOT_LIVE_TRADING_CONFIRM"):
        load_settings()
    monkeypatch.setenv("DEPTHPILOT_LIVE_TRADING_CONFIRM", "yes")
    assert execution_plan(load_settings()).mode == "live"
    monkeypatch.delenv("BYBIT_API_KEY")
    with pytest.raises(ConfigError, match="BYBIT_API_KEY"):
        load_settings()


def test_plan_double_checks_live_even_when_settings_were_bypassed():
    s = SimpleNamespace(
        mode="live",
        bybit_api_key="k",
        bybit_api_secret="s",
        live_trading_confirm="no",
        trader_venue="bybit",
        trader_exchange="",
        exchanges=["binance"],
    )
    with pytest.raises(ValueError, match="CONFIRM=yes"):
        execution_plan(s)
    with pytest.raises(ValueError, match="needs BYBIT_API_KEY"):
        execution_plan(SimpleNamespace(**{**s.__dict__, "mode": "testnet", "bybit_api_key": None}))


def test_plan_refuses_a_mode_it_does_not_know():
    s = SimpleNamespace(
        mode="Live",  # settings bypassed: not one of paper / testnet / live
        bybit_api_key="k",
        bybit_api_secret="s",
        live_trading_confirm="yes",
        trader_venue="bybit",
        trader_exchange="",
        exchanges=["binance"],
    )
    with pytest.raises(ValueError, match="mode must be paper, testnet or live, not 'Live'"):
        execution_plan(s)


def test_settings_map_to_exact_trader_config(monkeypatch):
    monkeypatch.setenv("TRADER_BUDGET", "250.10")
    monkeypatch.setenv("TRADER_LEVERAGE", "10")
    monkeypatch.setenv("RISK_MAX_LEVERAGE", "5")
    monkeypatch.setenv("TRADER_TRAILING_LOCK", "0.3")
    monkeypatch.setenv("RISK_MAX_DAILY_LOSS_USD", "42.5")
    monkeypatch.setenv("TRADER_CONFIRM_K", "3")
    cfg = trader_config(load_settings())
    assert cfg.budget == Decimal("250.10") and cfg.leverage == Decimal("5")  # capped by the risk limit
    assert cfg.trailing_lock_fraction == Decimal("0.3") and cfg.daily_loss_limit == Decimal("42.5")
    assert cfg.confirm_k == 3
    monkeypatch.setenv("TRADER_BUDGET", "lots")
    with pytest.raises(ConfigError, match="TRADER_BUDGET"):
        load_settings()


# --------------------------------------------------------------------------- messages


def test_actions_and_reports_become_exact_deterministic_messages():
    req = OrderRequest("dp-1", "bybit", "BTCUSDT", "buy", Decimal("0.004"), reason="signal", ts_ns=5)
    a, b = mm.intent_message(req, "sig1"), mm.intent_message(req, "sig1")
    assert a.id == b.id and a.qty == Decimal("0.004") and a.signal_id == "sig1"  # a re-send is the same message
    f = FillReport(
        "dp-1",
        "bybit",
        "BTCUSDT",
        "buy",
        Decimal("0.004"),
        Decimal("60000.1"),
        Decimal("0.13200022"),
        fill_id="e1",
        ts_ns=7,
    )
    fm = mm.fill_message(f, 9)
    assert fm.id == mm.fill_message(f, 10).id and fm.ts == 7 and fm.fee == Decimal("0.13200022")
    assert m.decode(m.encode(fm)).fee == Decimal("0.13200022")
    upd = mm.order_update(
        OrderReport(
            "dp-1", "bybit", "BTCUSDT", "buy", Decimal("0.004"), "filled", Decimal("0.004"), Decimal("60000.1")
        ),
        11,
    )
    assert upd.ts == 11 and upd.avg_price == Decimal("60000.1")
    pos = mm.position_message(
        PositionChange("bybit", "BTCUSDT", Decimal("-0.004"), Decimal("60000.1"), stop_price=Decimal("60500")), "paper"
    )
    assert pos.qty == Decimal("-0.004") and pos.stop_price == Decimal("60500") and pos.mode == "paper"
    t = ClosedTrade(
        "bybit",
        "BTCUSDT",
        "long",
        Decimal("0.004"),
        Decimal("60000.1"),
        Decimal("60100.1"),
        1,
        2,
        Decimal("0.4"),
        Decimal("0.26"),
        Decimal("0.14"),
        "signal",
    )
    rec = mm.closed_trade_record(t)
    assert rec["pnl"] == Decimal("0.14") and mm.trade_id(t) == mm.trade_id(t)
    assert "+0.14" in mm.trade_notification(t, "paper").text


# --------------------------------------------------------------------------- execution worker


class ScriptedVenue:
    """An ExecutionClient whose submit answers follow a script (exceptions or reports)."""

    exchange, mode = "fakevenue", "testnet"

    def __init__(self, script):
        self.script = list(script)
        self.submits: list[str] = []
        self.lookups: list[str] = []
        self.stops: list = []
        self.venue_has: dict[str, OrderReport] = {}

    def _report(self, req, status="filled"):
        return OrderReport(req.client_order_id, self.exchange, req.symbol, req.side, req.qty, status, req.qty)

    def submit(self, req):
        self.submits.append(req.client_order_id)
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, Exception):
            if isinstance(step, OrderOutcomeUnknown):
                self.venue_has[req.client_order_id] = self._report(req)  # it DID reach the venue
            raise step
        return self._report(req)

    def lookup(self, symbol, cid):
        self.lookups.append(cid)
        return self.venue_has.get(cid)

    def set_stop(self, symbol, price):
        self.stops.append((symbol, price))

    def poll_events(self):
        return []


def _worker(venue):
    events, errors = [], []
    w = ExecWorker(venue, events.extend, lambda *e: errors.append(e), poll_interval_s=0.01, retry_deadline_s=2)
    return w.start(), events, errors


def _req(cid):
    return OrderRequest(cid, "fakevenue", "BTCUSDT", "buy", Decimal("0.001"))


def test_worker_retries_then_resolves_unknown_outcomes_and_reports_rejections():
    venue = ScriptedVenue(
        [
            RetryableExecutionError("10006 rate limit"),
            RetryableExecutionError("502"),
            "ok",
            OrderOutcomeUnknown("timeout after send"),
            OrderRejected("110007 not enough balance"),
        ]
    )
    w, events, errors = _worker(venue)
    try:
        w.submit(_req("a"))
        w.submit(_req("b"))
        w.submit(_req("c"))
        wait_until(lambda: len(events) == 3, timeout=5)
        assert [(e.client_order_id, e.status) for e in events] == [("a", "filled"), ("b", "filled"), ("c", "rejected")]
        assert venue.submits == ["a", "a", "a", "b", "c"]  # "b" looked up, never re-sent
        assert venue.lookups == ["b"] and w.counters["retried"] == 2
        assert errors == [("order_rejected", "BTCUSDT", "110007 not enough balance")]
        assert "110007" in events[2].reason
        # stop moves coalesce to the latest price; call() hands results back through a future
        for px in (Decimal(1), Decimal(2), Decimal(3)):
            w.set_stop("BTCUSDT", px)
        assert w.call(lambda cl: len(cl.submits)).result(2) == 5
        wait_until(lambda: venue.stops and venue.stops[-1] == ("BTCUSDT", Decimal(3)))
        assert len(venue.stops) <= 2 and w.alive and not w.failure
    finally:
        w.stop()


def test_worker_gives_up_after_the_retry_deadline_and_says_so():
    venue = ScriptedVenue([RetryableExecutionError("HTTP 503")] * 1000)
    w, events, errors = _worker(venue)
    w.retry_deadline_s = 0.3
    try:
        w.submit(_req("x"))
        wait_until(lambda: events, timeout=5)
        assert events[0].status == "rejected" and "venue unavailable" in events[0].reason
        assert errors and errors[0][0] == "execution_error" and "not sent after" in errors[0][2]
        assert w.alive
    finally:
        w.stop()


# --------------------------------------------------------------------------- CLI and run-all view


def test_cli_trades_through_the_control_layer(paper_trader):
    from depthpilot_cli.main import app

    svc, feeder = paper_trader
    run = CliRunner(env={"COLUMNS": "200"}).invoke
    r = run(app, ["trade", "start", "btcusdt", "--n", "1"])
    assert r.exit_code == 0 and "trading BTCUSDT on binance (paper) for 1 trades" in r.output, r.output
    with BookFeeder(feeder, 60000.0):
        wait_until(lambda: svc.runtime.counters["books"] > 2)
        feeder.publish(signal("down"))
        feeder.publish(signal("down"))
        wait_until(lambda: svc.runtime.engine.symbols["BTCUSDT"].led.qty > 0)
        r = run(app, ["positions"])
        assert r.exit_code == 0 and "BTCUSDT" in r.output and "-0.00" in r.output, r.output
        r = run(app, ["trade", "flatten", "--yes"])
        assert r.exit_code == 0 and "1 closing orders" in r.output, r.output
        wait_until(lambda: svc.runtime.counters["closed_trades"] == 1)
    r = run(app, ["status"])
    assert r.exit_code == 0 and "paper" in r.output and "down" in r.output, r.output
    r = run(app, ["trade", "trades", "-n", "3"])
    assert r.exit_code == 0 and "short" in r.output and "manual" in r.output, r.output
    r = run(app, ["pnl", "all"])
    assert r.exit_code == 0 and "realized" in r.output, r.output
    assert run(app, ["balance"]).exit_code == 0
    assert run(app, ["risk"]).exit_code == 0
    r = run(app, ["trade", "set", "confirm_k", "3"])
    assert r.exit_code == 0 and "confirm_k = 3" in r.output
    r = run(app, ["trade", "set", "confirm_k", "many"])
    assert r.exit_code == 1 and "not an integer" in r.output and "Traceback" not in r.output
    r = run(app, ["trade", "start", "NOPEUSDT"])
    assert r.exit_code == 1 and "unknown symbol" in r.output and len(r.output.strip().splitlines()) <= 2
    assert run(app, ["pnl", "yesterday"]).exit_code == 2


def test_cli_timeout_says_the_command_expired(uid, monkeypatch):
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot_cli.main import app

    MemoryBroker.reset(uid)
    monkeypatch.setenv("AMQP_URL", f"memory://{uid}")  # nobody answers on this broker
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["trade", "stop", "all", "--flatten", "--timeout", "0.3"])
    assert r.exit_code == 1 and "expired and will not be executed" in r.output
    assert len(r.output.strip().splitlines()) == 1  # one line
    assert time.monotonic() - t0 < 5


def test_run_all_view_renders_replies():
    from rich.console import Console

    from depthpilot_cli import run_view

    v = run_view.TradingView(
        status=c.StatusReply(
            mode="paper",
            halted=False,
            symbols=[
                c.SymbolStatus(
                    symbol="BTCUSDT", exchange="binance", trading=True, paused=False, last_signal="up", last_score=0.31
                )
            ],
        ),
        positions=[
            c.PositionView(
                exchange="binance",
                symbol="BTCUSDT",
                qty=Decimal("0.004"),
                avg_price=Decimal("60000.05"),
                unrealized_pnl=Decimal("1.2"),
            )
        ],
        pnl=c.PnlReply(
            period="all",
            since_ts=0,
            realized=Decimal("-0.5"),
            fees=Decimal("0.26"),
            unrealized=Decimal("1.2"),
            trades=2,
            wins=1,
        ),
    )
    line = run_view.line(v)
    assert "BTCUSDT up +0.31" in line and "+0.004 @ 60000.05" in line and "pnl after fees: -0.5000 USDT" in line
    assert run_view.summary(v).startswith("summary | trades: 2 | wins: 1 | pnl after fees: -0.5000 USDT")
    con = Console(record=True, width=120)
    con.print(run_view.render(v, "pipeline | x"))
    text = con.export_text()
    assert "open positions" in text and "PnL after fees" in text
    assert run_view.line(run_view.TradingView(error="trader did not answer")).endswith("did not answer")


def test_start_up_closes_the_books_on_an_intent_that_never_reached_the_venue(uid):
    """A crash between recording an intent and sending it: on start-up the order is looked up at
    the venue by client order id, not found, and marked rejected (never sent blindly later)."""
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.store import Store
    from trader.service import TraderService

    MemoryBroker.reset(uid)
    s = load_settings(amqp_url=f"memory://{uid}", mongo_url=f"mongomock://{uid}")
    store = Store.connect(s.mongo_url, f"orphan_{uid}")
    req = OrderRequest("dp-BTCUSDT-orphan", "binance", "BTCUSDT", "buy", Decimal("0.002"), reason="signal")
    store.upsert_order(mm.intent_message(req), mode="paper")
    bus = connect_bus(s.amqp_url, "trader").start()
    svc = TraderService(s, bus, store).start()
    try:
        o = store.order("dp-BTCUSDT-orphan")
        assert o["status"] == "rejected" and "not found at the venue" in o["reason"]
        assert store.open_orders(mode="paper") == []
        assert svc.runtime.worker.counters["submitted"] == 0  # nothing re-sent
    finally:
        svc.stop()
        bus.close()
        store.drop_database()


def test_malformed_signals_go_to_the_dead_letter_queue_with_a_reason(paper_trader):
    svc, feeder = paper_trader
    bad = signal("up")
    bad.probs = [0.5, float("nan"), 0.5]
    short = signal("up")
    short.probs = [0.9]
    feeder.publish(bad)
    feeder.publish(short)
    feeder.publish(signal("up"))  # a good one after them is still handled
    wait_until(lambda: svc.runtime.counters["signals"] == 1)
    dead = []
    wait_until(lambda: dead.extend(feeder.get_dead_letters("trader.signals")) or len(dead) >= 2)
    reasons = " | ".join(h["x-dlq-error"] for _, h in dead)
    assert "3 classes but 1 probabilities" in reasons and "finite numbers" in reasons, reasons
    assert all(h["x-dlq-reason"] == "handler_error" for _, h in dead)


def test_restart_keeps_set_parameters_but_takes_changed_settings(uid):
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.store import Store
    from trader.service import TraderService

    MemoryBroker.reset(uid)
    store = Store.connect(f"mongomock://{uid}", f"params_{uid}")

    def run(**kw):
        s = load_settings(amqp_url=f"memory://{uid}", mongo_url=f"mongomock://{uid}", **kw)
        bus = connect_bus(s.amqp_url, "trader").start()
        svc = TraderService(s, bus, store).start()
        return svc, bus

    svc, bus = run(trader_confirm_k=2, trader_budget=Decimal("100"))
    svc.control.handle(m.ControlCommand(target="trader", command="set_param", args={"name": "confirm_k", "value": "4"}))
    svc.stop()
    bus.close()
    svc, bus = run(trader_confirm_k=2, trader_budget=Decimal("150"))  # budget changed in the settings
    try:
        cfg = svc.runtime.engine.cfg
        assert cfg.confirm_k == 4 and cfg.budget == Decimal("150")
    finally:
        svc.stop()
        bus.close()
        store.drop_database()


def test_a_broker_reconnect_triggers_a_reconciliation(paper_trader):
    svc, _feeder = paper_trader
    assert svc.runtime.counters["reconciles"] == 1  # at start-up
    svc.bus._count("reconnects")  # what the RabbitMQ bus counts when it got its connection back
    wait_until(lambda: svc.runtime.counters["reconciles"] == 2, timeout=3)
    time.sleep(2 * svc.tick_interval_s)
    assert svc.runtime.counters["reconciles"] == 2  # once per reconnect
