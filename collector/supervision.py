"""Feed supervision state (pure: every time is passed in).

The collector runs every live feed in ONE supervised loop (``CollectorService._supervise``):
a feed whose source raises is closed, reported and rebuilt with exponential back-off. This
module keeps what that loop learns, per feed, and turns it into *problems*: one line each,
for the service's heartbeat status ("degraded") and reason.

A feed is a problem when

* it has not delivered a usable message (a valid book or a trade) for longer than
  ``down_limit_s`` since it started or since its last good message (connect keeps failing,
  the socket is silent, the book never resyncs), or
* its task died (an exception escaped the supervisor itself), or
* it could not start at all (unknown exchange, unreadable recording).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FeedState", "FeedSupervision"]

_NS = 1_000_000_000


@dataclass
class FeedState:
    name: str
    started_ns: int
    last_ok_ns: int | None = None
    failures: int = 0  # source failures since the last good message
    restarts: int = 0  # total source rebuilds
    last_error: str = ""
    dead: str = ""  # the task ended with this error (no more retries)


@dataclass
class FeedSupervision:
    down_limit_s: float = 60.0
    feeds: dict[str, FeedState] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)  # start-up / replay failures (one line each)

    def __post_init__(self) -> None:
        if not self.down_limit_s > 0:
            raise ValueError(f"down_limit_s must be > 0, not {self.down_limit_s!r}")

    def started(self, name: str, now_ns: int) -> FeedState:
        st = self.feeds.get(name)
        if st is None:
            st = self.feeds[name] = FeedState(name, now_ns)
        return st

    def ok(self, name: str, now_ns: int) -> None:
        st = self.feeds[name]
        st.last_ok_ns = now_ns
        st.failures = 0

    def failed(self, name: str, error: str) -> None:
        st = self.feeds[name]
        st.failures += 1
        st.restarts += 1
        st.last_error = error

    def died(self, name: str, error: str) -> None:
        self.feeds[name].dead = error

    def fail(self, reason: str) -> None:
        """A failure that no retry fixes (bad recording, replay thread died)."""
        if reason not in self.fatal:
            self.fatal.append(reason)

    def problems(self, now_ns: int) -> list[str]:
        out = list(self.fatal)
        limit_ns = self.down_limit_s * _NS
        for st in self.feeds.values():
            if st.dead:
                out.append(f"feed {st.name} died: {st.dead}")
                continue
            since = st.last_ok_ns if st.last_ok_ns is not None else st.started_ns
            if now_ns - since > limit_ns:
                err = f" ({st.failures} failures; last: {st.last_error})" if st.failures else ""
                out.append(f"feed {st.name} down: no usable data for {(now_ns - since) / _NS:.0f}s{err}")
        return out

    def stats(self) -> dict[str, float]:
        return {
            "feed_restarts": float(sum(st.restarts for st in self.feeds.values())),
            "feeds_dead": float(sum(1 for st in self.feeds.values() if st.dead)),
        }
