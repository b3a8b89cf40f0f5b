"""Which chats get which messages (pure).

``NOTIFY_ROUTES=BTCUSDT:-100123,ETHUSDT:webhook,*:456`` - a symbol's messages go to the targets
listed for that symbol; everything else (other symbols, and events without a symbol:
errors, daily summary) goes to the ``*`` targets. A target is a Telegram chat id or
``webhook`` (the generic JSON webhook, ``NOTIFY_WEBHOOK_URL``). Critical alerts also go to
the ``*`` targets, wherever their symbol is routed. Empty: every user of TELEGRAM_USERS in
private.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SYMBOL = re.compile(r"^(\*|[A-Z0-9][A-Z0-9/:._-]{1,30})$")


class RoutesError(ValueError):
    pass


def telegram_target(chat_id: int) -> str:
    return f"telegram:{chat_id}"


def parse_target(raw: str) -> str:
    raw = raw.strip()
    if raw.lower() == "webhook":
        return "webhook"
    try:
        return telegram_target(int(raw))
    except ValueError:
        raise RoutesError(f"NOTIFY_ROUTES: target {raw!r} is neither a Telegram chat id nor 'webhook'") from None


@dataclass(frozen=True)
class Routes:
    by_symbol: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str, default_chats: list[int] | tuple[int, ...] = ()) -> "Routes":
        by: dict[str, list[str]] = {}
        for item in (x.strip() for x in spec.split(",")):
            if not item:
                continue
            sym, sep, target = item.rpartition(":")  # "BTC/USDT:USDT:-100": the target follows the last colon
            if not sep or not sym:
                raise RoutesError(f"NOTIFY_ROUTES: {item!r} is not <symbol|*>:<chat id|webhook>")
            sym = sym.strip().upper()
            if not _SYMBOL.match(sym):
                raise RoutesError(f"NOTIFY_ROUTES: {sym!r} is not a symbol or '*'")
            t = parse_target(target)
            if t not in by.setdefault(sym, []):
                by[sym].append(t)
        star = by.pop("*", None)
        default = tuple(star) if star is not None else tuple(telegram_target(c) for c in default_chats)
        return cls({k: tuple(v) for k, v in by.items()}, default)

    def targets(self, symbol: str = "", level: str = "info") -> tuple[str, ...]:
        out = list(self.by_symbol.get(symbol.upper(), ())) if symbol else []
        if not out or level == "critical":
            out += [t for t in self.default if t not in out]
        return tuple(out)
