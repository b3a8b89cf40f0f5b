"""FastAPI adapter: health, metrics and the read side. Thin: every query goes to the bus or
the store; the services' own health comes from their heartbeats (:mod:`api.health`)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from api.health import ServiceHealth
from depthpilot import messages as m
from depthpilot.bus import Bus, RpcTimeout


def create_app(
    bus: Bus, store: Any | None, started_at: float | None = None, services: ServiceHealth | None = None
) -> FastAPI:
    app = FastAPI(title="depthpilot", version="0.1.0")
    t0 = started_at or time.monotonic()
    services = services or ServiceHealth()
    registry = CollectorRegistry()
    bus_stat = Gauge("depthpilot_bus", "bus counters of the api process", ["counter"], registry=registry)
    up = Gauge("depthpilot_bus_connected", "1 when the api's bus connection is up", registry=registry)
    svc_ok = Gauge(
        "depthpilot_service_healthy",
        "1 when the service's latest heartbeat says ok and is fresh",
        ["service"],
        registry=registry,
    )
    svc_problems = Gauge(
        "depthpilot_service_problems",
        "reasons the service is degraded (count; text in /services)",
        ["service"],
        registry=registry,
    )
    svc_stat = Gauge(
        "depthpilot_service_stat",
        "counters from the service's latest heartbeat (drops, errors, ...)",
        ["service", "stat"],
        registry=registry,
    )

    @app.get("/health")
    def health() -> dict[str, Any]:
        ok_bus = bus.connected
        ok_store = True
        if store is not None:
            try:
                store.ping()
            except Exception:  # noqa: BLE001 - reported as unhealthy
                ok_store = False
        body = {
            "status": "ok" if ok_bus and ok_store else "degraded",
            "bus": ok_bus,
            "store": ok_store,
            "uptime_s": round(time.monotonic() - t0, 1),
        }
        if not (ok_bus and ok_store):
            raise HTTPException(status_code=503, detail=body)
        return body

    @app.get("/metrics")
    def metrics() -> Response:
        up.set(1 if bus.connected else 0)
        for k, v in bus.stats.as_dict().items():
            bus_stat.labels(k).set(v)
        for name, s in services.view().items():
            svc_ok.labels(name).set(1 if s["status"] == "ok" else 0)
            svc_problems.labels(name).set(len(s["problems"]))
            for k, v in s["stats"].items():
                svc_stat.labels(name, k).set(v)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/services")
    def services_health() -> dict[str, Any]:
        """Every service's status and the reasons it is degraded, from its heartbeats."""
        return {name: {k: v for k, v in s.items() if k != "stats"} for name, s in services.view().items()}

    @app.get("/services/{name}/status")
    def service_status(name: str) -> dict[str, Any]:
        try:
            reply = bus.rpc(m.ControlCommand(target=name, command="status", requested_by="api"), timeout=3)
        except RpcTimeout as exc:
            raise HTTPException(status_code=504, detail=str(exc)) from None
        return m.to_builtins(reply)

    return app
