"""Inline confirmations that expire (pure; the clock is injected).

A dangerous action (flatten, risk reset, starting in live mode, stop-and-flatten) is parked
under a short random token carried in the buttons' callback data. Only the user who asked may
confirm it, once, before ``ttl_s``; a late tap gets ``expired`` and nothing runs.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

Outcome = Literal["ok", "expired", "unknown", "wrong_user"]


@dataclass
class Pending:
    token: str
    user_id: int
    chat_id: int
    action: Any  # what to run (a control Request)
    created: float
    expires: float


class Confirmations:
    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, user_id: int, chat_id: int, action: Any) -> Pending:
        self._gc()
        now = self.clock()
        token = secrets.token_hex(6)
        p = Pending(token, user_id, chat_id, action, now, now + self.ttl_s)
        self._pending[token] = p
        return p

    def take(self, token: str, user_id: int) -> tuple[Outcome, Pending | None]:
        """Consume the confirmation ``token`` for ``user_id``."""
        p = self._pending.get(token)
        if p is None:
            return "unknown", None
        if p.user_id != user_id:
            return "wrong_user", None  # stays pending for its owner
        del self._pending[token]
        if self.clock() >= p.expires:
            return "expired", p
        return "ok", p

    def cancel(self, token: str, user_id: int) -> bool:
        p = self._pending.get(token)
        if p is None or p.user_id != user_id:
            return False
        del self._pending[token]
        return True

    def _gc(self) -> None:
        # expired entries are kept for a while so a late tap can be told "expired" (not "unknown")
        cutoff = self.clock() - max(300.0, self.ttl_s * 10)
        for t in [t for t, p in self._pending.items() if p.expires < cutoff]:
            del self._pending[t]
