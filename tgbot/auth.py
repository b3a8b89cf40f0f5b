"""Who may command the bot (pure): an allow-list of Telegram user ids with a role each, in
private chats or in allowed groups; and the guard that refuses credentials typed in chat.

``TELEGRAM_USERS=123:trader,456:viewer,789`` (a user without a role is a ``trader``: listing
someone is the owner's explicit decision). A ``viewer`` may query (status, positions, PnL...),
a ``trader`` may also act. ``TELEGRAM_ALLOWED_CHAT_IDS`` lists the groups where listed users may
command the bot; any other group is refused even for listed users, and nobody who is not
listed is ever served anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["viewer", "trader"]
ROLES: tuple[Role, ...] = ("viewer", "trader")
_RANK = {"viewer": 0, "trader": 1}


class AccessConfigError(ValueError):
    """A malformed TELEGRAM_USERS entry; ``str()`` names it."""


def parse_users(spec: str | list[str] | dict[int, str] | None) -> dict[int, Role]:
    """``"123:trader,456:viewer,789"`` -> ``{123: "trader", 456: "viewer", 789: "trader"}``."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        items = [f"{k}:{v}" for k, v in spec.items()]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = [str(s).strip() for s in spec if str(s).strip()]
    out: dict[int, Role] = {}
    for item in items:
        uid_s, _, role = item.partition(":")
        role = role.strip().lower() or "trader"
        try:
            uid = int(uid_s.strip())
        except ValueError:
            raise AccessConfigError(f"TELEGRAM_USERS: {item!r} is not <user id>[:viewer|trader]") from None
        if uid <= 0:
            raise AccessConfigError(
                f"TELEGRAM_USERS: {item!r}: a user id is a positive number (groups go in TELEGRAM_ALLOWED_CHAT_IDS)"
            )
        if role not in ROLES:
            raise AccessConfigError(f"TELEGRAM_USERS: {item!r}: role must be viewer or trader")
        out[uid] = role  # narrowed to Role by the `in ROLES` check
    return out


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""  # for the refusal message and the log (no message content)


@dataclass(frozen=True)
class Access:
    users: dict[int, Role] = field(default_factory=dict)
    allowed_chats: frozenset[int] = frozenset()

    def role_of(self, user_id: int | None) -> Role | None:
        return None if user_id is None else self.users.get(user_id)

    def check(self, user_id: int | None, chat_id: int, chat_type: str, needs: Role) -> Decision:
        role = self.role_of(user_id)
        if role is None:
            return Decision(False, "you are not on this bot's allow-list")
        if chat_type == "private":
            if chat_id != user_id:
                return Decision(False, "private chat does not belong to the sender")
        elif chat_id not in self.allowed_chats:
            return Decision(False, "this chat is not allowed to control the bot")
        if _RANK[role] < _RANK[needs]:
            return Decision(False, f"your role is {role}; this needs {needs}")
        return Decision(True)


# ------------------------------------------------------------------ credentials in chat

_KEYWORD = re.compile(
    r"(api[\s_-]*key|api[\s_-]*secret|secret[\s_-]*key|private[\s_-]*key|passphrase|seed phrase|"
    r"mnemonic)\s*[:=]",
    re.I,
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_BOT_TOKEN = re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b")
_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=]{16,}")


def looks_like_secret(text: str | None) -> bool:
    """True for a message that looks like an API key/secret, a private key or a bot token.

    A bare long token mixing letters and digits (Bybit keys are 18, secrets 36 characters)
    counts; symbols (``BTCUSDT``), numbers and ordinary words do not."""
    if not text:
        return False
    if _KEYWORD.search(text) or _PEM.search(text) or _BOT_TOKEN.search(text):
        return True
    for tok in _TOKEN.findall(text):
        letters = sum(c.isalpha() for c in tok)
        digits = sum(c.isdigit() for c in tok)
        if letters >= 4 and digits >= 3:
            return True
    return False
