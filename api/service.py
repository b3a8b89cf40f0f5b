"""The api service: serves the FastAPI app with uvicorn next to the usual service machinery."""
from __future__ import annotations

import logging
import os

import uvicorn

from api.app import create_app
from depthpilot.service import Service

log = logging.getLogger("depthpilot.api")


class ApiService(Service):
    name = "api"

    def setup(self) -> None:
        host = os.environ.get("API_HOST", "127.0.0.1")
        port = int(os.environ.get("API_PORT", "8000"))
        app = create_app(self.bus, self.store, self.started_at)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.spawn(self.server.run, "http")
        log.info("api listening on http://%s:%d", host, port)

    def teardown(self) -> None:
        self.server.should_exit = True


SERVICE = ApiService
