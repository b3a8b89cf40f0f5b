"""Service status from heartbeats (pure; times are the heartbeats' own ``ts`` and a ``now``
passed in): a service that turns ``degraded``, recovers, or goes silent becomes a message
(the level's icon is added by :func:`notifier.format.format_notification`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from depthpilot import messages as m


MAX_REASON = 400  # characters of the heartbeat's problems quoted in a DEGRADED alert


@dataclass(frozen=True)
class StatusAlert:
    key: str  # stable id of the alert
    level: Literal["info", "error"]  # a Notification level
    text: str


class ServiceWatch:
    def __init__(self, silent_after_s: float = 30.0, ignore: tuple[str, ...] = ()) -> None:
        self.silent_after_ns = int(silent_after_s * 1e9)
        self.ignore = set(ignore)
        self.last: dict[str, tuple[str, int]] = {}  # service -> (status, ts of its last heartbeat)
        self.silent: set[str] = set()

    def on_heartbeat(self, hb: m.ServiceHeartbeat) -> list[StatusAlert]:
        if hb.service in self.ignore:
            return []
        prev = self.last.get(hb.service)
        self.last[hb.service] = (hb.status, hb.ts)
        if hb.service in self.silent:
            self.silent.discard(hb.service)
            return [StatusAlert(f"svc-back-{hb.service}-{hb.ts}", "info", f"✅ {hb.service} is back ({hb.status})")]
        if prev is None or prev[0] == hb.status:
            return []
        if hb.status == "degraded":
            why = "; ".join(hb.problems)
            why = f": {why[:MAX_REASON]}{'…' if len(why) > MAX_REASON else ''}" if why else ""
            return [
                StatusAlert(
                    f"svc-degraded-{hb.service}-{hb.ts}",
                    "error",
                    f"{hb.service} is DEGRADED (instance {hb.instance}){why}",
                )
            ]
        if prev[0] == "degraded" and hb.status == "ok":
            return [StatusAlert(f"svc-ok-{hb.service}-{hb.ts}", "info", f"✅ {hb.service} recovered")]
        return []

    def check(self, now_ns: int) -> list[StatusAlert]:
        out = []
        for service, (status, ts) in sorted(self.last.items()):
            if service in self.silent or now_ns - ts <= self.silent_after_ns:
                continue
            self.silent.add(service)
            quiet = (now_ns - ts) / 1e9
            what = "stopped" if status == "stopping" else "SILENT"
            out.append(
                StatusAlert(
                    f"svc-silent-{service}-{ts}",
                    "error" if status != "stopping" else "info",
                    f"{service} {what}: no heartbeat for {quiet:.0f} s",
                )
            )
        return out
