"""The api service: serves the FastAPI app with uvicorn next to the usual service machinery."""

from __future__ import annotations

import logging
import os

import uvicorn

from api.app import create_app
from api.health import ServiceHealth
from depthpilot import messages as m
from depthpilot.service import Service

log = logging.getLogger("depthpilot.api")


class ApiService(Service):
    name = "api"

    def setup(self) -> None:
        host = os.environ.get("API_HOST", "127.0.0.1")
        port = int(os.environ.get("API_PORT", "8000"))
        self.health = ServiceHealth(stale_after_s=max(30.0, 6 * self.heartbeat_interval_s))
        self.bus.subscribe("api.heartbeats", self._on_heartbeat)
        app = create_app(self.bus, self.store, self.started_at, self.health)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        # Server.run in a thread other than the main one installs no signal handlers (uvicorn
        # >= 0.29, Server.capture_signals): the process's own SIGINT/SIGTERM handling stays.
        self.spawn(self.server.run, "http")
        log.info("api listening on http://%s:%d", host, port)

    def _on_heartbeat(self, msg: m.Message, _delivery: object) -> None:
        if isinstance(msg, m.ServiceHeartbeat):
            self.health.on_heartbeat(msg)

    def teardown(self) -> None:
        self.server.should_exit = True


SERVICE = ApiService
