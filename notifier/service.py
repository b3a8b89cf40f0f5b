"""The notifier service wiring. Its domain logic arrives with its own issue; for now it starts,
connects, answers control commands (ping/status) and publishes heartbeats."""
from __future__ import annotations

from depthpilot.service import Service


class NotifierService(Service):
    name = "notifier"


SERVICE = NotifierService
