"""Fixtures shared by the trader's service tests."""

from __future__ import annotations

import pytest

from depthpilot.settings import load_settings


@pytest.fixture
def no_env_file(monkeypatch):
    """No .env file and no mode/key variables from the developer's shell."""
    monkeypatch.setenv("DEPTHPILOT_ENV_FILE", "")
    for var in ("DEPTHPILOT_MODE", "MODE", "BYBIT_API_KEY", "BYBIT_API_SECRET", "DEPTHPILOT_LIVE_TRADING_CONFIRM"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def paper_trader(uid, monkeypatch, no_env_file):
    """A paper TraderService on an in-memory bus and store, and a second bus client (``feeder``)."""
    from depthpilot.bus import connect_bus
    from depthpilot.bus.memory import MemoryBroker
    from depthpilot.store import Store
    from trader.service import TraderService

    MemoryBroker.reset(uid)
    url = f"memory://{uid}"
    monkeypatch.setenv("AMQP_URL", url)
    s = load_settings(mongo_url=f"mongomock://{uid}")
    store = Store.connect(s.mongo_url, f"cli_{uid}")
    bus = connect_bus(url, "trader").start()
    svc = TraderService(s, bus, store).start()
    feeder = connect_bus(url, "feeder").start()
    try:
        yield svc, feeder
    finally:
        svc.stop()
        bus.close()
        feeder.close()
        store.drop_database()
