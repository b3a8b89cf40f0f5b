"""What the api knows of the other services: their latest heartbeat (status, problems, stats),
kept per service and judged stale after a few missed beats. Pure: heartbeats in, a view out."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

from depthpilot import messages as m

# A heartbeat's own status, or ``silent`` when the heartbeats stopped.
ViewStatus = Literal["starting", "ok", "degraded", "stopping", "silent"]


class ServiceHealth:
    def __init__(self, stale_after_s: float = 30.0, clock: Any = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._latest: dict[str, tuple[float, m.ServiceHeartbeat]] = {}
        self._lock = threading.Lock()

    def on_heartbeat(self, hb: m.ServiceHeartbeat) -> None:
        with self._lock:
            self._latest[hb.service] = (self.clock(), hb)

    def view(self) -> dict[str, dict[str, Any]]:
        """service -> {status, problems, age_s, stats}; a service whose heartbeats stopped is
        ``silent`` with that as its problem."""
        now = self.clock()
        with self._lock:
            latest = dict(self._latest)
        out = {}
        for name, (seen, hb) in sorted(latest.items()):
            age = now - seen
            status: ViewStatus = hb.status
            problems = list(hb.problems)
            if age > self.stale_after_s:
                status, problems = "silent", [f"no heartbeat for {age:.0f} s", *problems]
            out[name] = {
                "status": status,
                "problems": problems,
                "age_s": round(age, 1),
                "instance": hb.instance,
                "stats": dict(hb.stats),
            }
        return out
