"""Chat text -> one typed control request (pure). No command is defined here that the control
layer does not define; the bot only answers ``/start``, ``/help`` itself.

``parse("/trade btcusdt 3", chat_id=..., mode="paper")`` -> ``Parsed(request=StartTrading(...))``.
``confirm`` says how the bot asks before sending: ``"yes"`` (a yes/cancel confirmation that
expires) or ``"stop"`` (stop and flatten / stop only / cancel, both expiring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from depthpilot import control as c

Confirm = Literal["", "yes", "stop"]

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9/:._-]{1,30}$")
MAX_TRADES_LIST = 50
PNL_PERIODS: tuple[Literal["today", "7d", "all"], ...] = ("today", "7d", "all")  # c.Pnl.period


@dataclass(frozen=True)
class Parsed:
    name: str
    request: c.Request | None = None
    local: str = ""  # "help": answered by the bot itself
    confirm: Confirm = ""
    error: str = ""

    @property
    def needs(self) -> c.Role:
        return self.request.ROLE if self.request is not None else "viewer"


# (command, arguments, what it does) - the /help text and the bot's command menu
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("start", "", "help and the quick-action keyboard"),
    ("status", "", "mode, symbols, book health, model"),
    ("positions", "", "open positions"),
    ("pnl", "[today|7d|all]", "profit and loss after fees"),
    ("balance", "", "equity and available margin"),
    ("trades", "[n]", "the last n closed trades"),
    ("risk", "", "risk limits and their usage"),
    ("trade", "<symbol> [n_trades]", "start trading a symbol (optionally for n round trips)"),
    ("stop", "[symbol|all]", "stop trading; asks whether to flatten"),
    ("flatten", "[symbol|all]", "close positions at market (asks to confirm)"),
    ("pause", "[symbol|all]", "pause new entries"),
    ("resume", "[symbol|all]", "resume entries"),
    ("reset_risk", "", "lift a daily-loss halt (asks to confirm)"),
    ("set", "<name> <value>", "set a strategy/risk parameter"),
    ("mute", "", "mute notifications in this chat (critical alerts still come)"),
    ("unmute", "", "unmute notifications in this chat"),
    ("help", "", "this help"),
)


def help_text(mode: str) -> str:
    lines = [f"depthpilot remote control ({mode} mode)", ""]
    lines += [f"/{name}{' ' + args if args else ''} - {what}" for name, args, what in COMMANDS]
    lines += ["", "Never send exchange keys here: they belong in the server's environment."]
    return "\n".join(lines)


def _symbol(arg: str) -> str | None:
    s = arg.strip().upper()
    return s if s == "ALL" or _SYMBOL.match(s) else None


def _sym_or_all(name: str, args: list[str]) -> tuple[str, str]:
    if not args:
        return "all", ""
    s = _symbol(args[0])
    if s is None:
        return "", f"/{name}: {args[0]!r} is not a symbol (e.g. BTCUSDT) or 'all'"
    return ("all" if s == "ALL" else s), ""


def _int(name: str, what: str, raw: str, lo: int, hi: int) -> tuple[int | None, str]:
    try:
        v = int(raw)
    except ValueError:
        return None, f"/{name}: {what} must be a whole number, got {raw!r}"
    if not lo <= v <= hi:
        return None, f"/{name}: {what} must be between {lo} and {hi}, got {v}"
    return v, ""


def split_command(text: str, bot_username: str = "") -> tuple[str, list[str]] | None:
    """``"/stop@MyBot btcusdt"`` -> ``("stop", ["btcusdt"])``; None for non-commands or commands
    addressed to another bot."""
    if not text or not text.startswith("/"):
        return None
    head, *args = text.split()
    name, _, at = head[1:].partition("@")
    if at and bot_username and at.lower() != bot_username.lower():
        return None
    return name.lower(), args


def parse(text: str, *, chat_id: int, mode: str = "paper", bot_username: str = "") -> Parsed | None:
    """Parse one chat message; None when it is not a command for this bot."""
    sp = split_command(text, bot_username)
    if sp is None:
        return None
    name, args = sp
    if name in ("start", "help"):
        return Parsed(name, local="help")
    if name == "status":
        return Parsed(name, c.Status())
    if name == "positions":
        return Parsed(name, c.Positions())
    if name == "balance":
        return Parsed(name, c.Balance())
    if name == "risk":
        return Parsed(name, c.RiskLimits())
    if name == "pnl":
        period = args[0].lower() if args else "today"
        if period not in PNL_PERIODS:
            return Parsed(name, error=f"/pnl: period must be today, 7d or all, got {args[0]!r}")
        return Parsed(name, c.Pnl(period=period))
    if name == "trades":
        n = 10
        if args:
            v, err = _int(name, "n", args[0], 1, MAX_TRADES_LIST)
            if v is None:
                return Parsed(name, error=err)
            n = v
        return Parsed(name, c.RecentTrades(n=n))
    if name == "trade":
        if not args:
            return Parsed(name, error="/trade: usage /trade <symbol> [n_trades]")
        sym = _symbol(args[0])
        if sym is None or sym == "ALL":
            return Parsed(name, error=f"/trade: {args[0]!r} is not a symbol (e.g. BTCUSDT)")
        n_trades = None
        if len(args) > 1:
            n_trades, err = _int(name, "n_trades", args[1], 1, 10_000)
            if err:
                return Parsed(name, error=err)
        return Parsed(name, c.StartTrading(symbol=sym, n_trades=n_trades), confirm="yes" if mode == "live" else "")
    if name in ("stop", "flatten", "pause", "resume"):
        sym, err = _sym_or_all(name, args)
        if err:
            return Parsed(name, error=err)
        if name == "stop":
            return Parsed(name, c.StopTrading(symbol=sym), confirm="stop")
        if name == "flatten":
            return Parsed(name, c.Flatten(symbol=sym), confirm="yes")
        req = c.PauseEntries(symbol=sym) if name == "pause" else c.ResumeEntries(symbol=sym)
        return Parsed(name, req)
    if name in ("reset_risk", "riskreset"):
        return Parsed("reset_risk", c.ResetRisk(), confirm="yes")
    if name == "set":
        if len(args) != 2:
            return Parsed(name, error="/set: usage /set <name> <value>")
        return Parsed(name, c.SetParameter(name=args[0], value=args[1]))
    if name in ("mute", "unmute"):
        return Parsed(name, c.MuteNotifications(chat_id=chat_id, muted=name == "mute"))
    return Parsed(name, error=f"unknown command /{name}; /help lists them")


def describe(req: c.Request) -> str:
    """One line naming what a request will do (for confirmations and logs)."""
    if isinstance(req, c.StartTrading):
        return f"start trading {req.symbol}" + (f" for {req.n_trades} trades" if req.n_trades else "")
    if isinstance(req, c.StopTrading):
        return f"stop trading {req.symbol}" + (" and flatten its positions" if req.flatten else "")
    if isinstance(req, c.Flatten):
        return f"close {'all positions' if req.symbol == 'all' else 'the ' + req.symbol + ' position'} at market"
    if isinstance(req, c.ResetRisk):
        return "lift the risk halt (daily-loss / kill switch)"
    return req.COMMAND
