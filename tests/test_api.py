"""API adapter: health reflects bus and store, metrics in Prometheus format, service status
through the control channel."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from depthpilot.bus import connect_bus
from depthpilot.bus.memory import MemoryBroker
from depthpilot.settings import load_settings
from depthpilot.store import Store


def test_health_metrics_and_status(uid):
    from trader.service import TraderService

    MemoryBroker.reset(uid)
    bus = connect_bus(f"memory://{uid}", "api").start()
    store = Store.connect(f"mongomock://{uid}", "api", snapshot_ttl_s=None)
    trader_bus = connect_bus(f"memory://{uid}", "trader").start()
    trader = TraderService(load_settings(), trader_bus, None).start()
    try:
        client = TestClient(create_app(bus, store))
        r = client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        r = client.get("/metrics")
        assert r.status_code == 200 and "depthpilot_bus_connected 1.0" in r.text
        r = client.get("/services/trader/status")
        assert r.status_code == 200 and r.json()["result"]["service"] == "trader"
        r = client.get("/services/nobody/status")
        assert r.status_code == 504
        bus.close()
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["detail"]["bus"] is False
    finally:
        trader.stop()
        trader_bus.close()


def test_degraded_service_shows_in_services_and_metrics(uid):
    """A service's degraded heartbeat (with its reasons) reaches /services and /metrics; one
    whose heartbeats stop turns silent."""
    from api.health import ServiceHealth
    from depthpilot import messages as m

    now = [100.0]
    health = ServiceHealth(stale_after_s=30, clock=lambda: now[0])
    MemoryBroker.reset(uid)
    bus = connect_bus(f"memory://{uid}", "api").start()
    try:
        client = TestClient(create_app(bus, None, services=health))
        health.on_heartbeat(m.ServiceHeartbeat(service="features", instance="a", status="ok", stats={"late": 3.0}))
        health.on_heartbeat(
            m.ServiceHeartbeat(
                service="collector", instance="b", status="degraded", problems=["binance BTCUSDT: feed down for 75 s"]
            )
        )
        body = client.get("/services").json()
        assert body["collector"]["status"] == "degraded" and "feed down" in body["collector"]["problems"][0]
        text = client.get("/metrics").text
        assert 'depthpilot_service_healthy{service="collector"} 0.0' in text
        assert 'depthpilot_service_healthy{service="features"} 1.0' in text
        assert 'depthpilot_service_problems{service="collector"} 1.0' in text
        assert 'depthpilot_service_stat{service="features",stat="late"} 3.0' in text
        now[0] += 31
        assert client.get("/services").json()["features"]["status"] == "silent"
    finally:
        bus.close()
