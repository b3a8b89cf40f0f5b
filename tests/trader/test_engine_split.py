"""``trader/engine.py`` was split (events here, control calls in ``trader.engine_control``,
guards in ``trader.engine_guards``): every name it offered before is still importable from it,
and the control calls are the mixin's own functions (one definition, no copy that could drift)."""

from __future__ import annotations

import trader.engine as engine
from trader.engine_control import EngineControl

CONTROL = "start stop flatten pause resume reset_risk kill set_param pending_orders add_instrument".split()
EVENTS = "on_book on_signal on_timer on_fill on_order on_position on_events".split()
QUERIES = "status positions pnl trades risk snapshot restore day_pnl venue_stop_reason".split()


def test_module_names_kept() -> None:
    for name in ("TradingEngine", "BookLike", "FILL_IDS_KEPT", "STOP_ORDER_PREFIX"):
        assert hasattr(engine, name), name
    assert engine.STOP_ORDER_PREFIX == "stop-"


def test_engine_has_every_call() -> None:
    for name in CONTROL + EVENTS + QUERIES:
        assert callable(getattr(engine.TradingEngine, name, None)), name


def test_control_calls_come_from_the_mixin() -> None:
    assert issubclass(engine.TradingEngine, EngineControl)
    for name in CONTROL:
        assert name in vars(EngineControl), name
        assert getattr(engine.TradingEngine, name) is vars(EngineControl)[name], name
        assert name not in vars(engine.TradingEngine), name
