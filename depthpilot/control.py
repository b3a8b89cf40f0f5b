"""The control layer every interface shares (Freqtrade's ``rpc`` idea): typed requests and
replies, defined once, transport-neutral.

* A :class:`Request` subclass names its command (``COMMAND``), the service that answers it
  (``TARGET``), the role a caller needs (``ROLE``: ``viewer`` may query, ``trader`` may act) and
  whether an interface must ask for confirmation first (``DANGEROUS``).
* :class:`ControlClient` sends a request as a :class:`~depthpilot.messages.ControlCommand` over
  the bus's RPC with a deadline (``expires_at``); the answering service never executes a command
  after its deadline, so a caller's timeout is never followed by execution.
* :class:`ControlServer` is the answering side: it maps commands to handler callables and turns
  their typed replies into :class:`~depthpilot.messages.ControlReply` results.

The CLI, the Telegram bot and the REST API are thin adapters over :class:`ControlClient`; none
of them defines a command of its own. Money travels as ``Decimal`` (strings on the wire).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Callable, ClassVar, Literal

import msgspec

from depthpilot import messages as m
from depthpilot.control_deadline import (
    CommandExpired,
    ControlError,
    ControlRejected,
    ControlTimeout,
    acquire_before_deadline,
    command_deadline,
    held_before_deadline,
    time_left_s,
)

__all__ = [
    "Request",
    "Reply",
    "ControlError",
    "ControlTimeout",
    "ControlRejected",
    "CommandExpired",
    "command_deadline",
    "acquire_before_deadline",
    "held_before_deadline",
    "time_left_s",
    "ControlClient",
    "ControlServer",
    "REQUESTS",
    "request_for",
    "StartTrading",
    "StopTrading",
    "Flatten",
    "PauseEntries",
    "ResumeEntries",
    "ResetRisk",
    "SetParameter",
    "Status",
    "Positions",
    "Balance",
    "Pnl",
    "RecentTrades",
    "RiskLimits",
    "MuteNotifications",
    "Ack",
    "PositionView",
    "StatusReply",
    "PositionsReply",
    "BalanceReply",
    "PnlReply",
    "TradeView",
    "TradesReply",
    "RiskReply",
    "SymbolStatus",
]

Role = Literal["viewer", "trader"]


# --------------------------------------------------------------------------- requests


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    COMMAND: ClassVar[str] = ""
    TARGET: ClassVar[str] = "trader"
    ROLE: ClassVar[Role] = "viewer"
    DANGEROUS: ClassVar[bool] = False


class StartTrading(Request):
    """Start trading ``symbol``; with ``n_trades`` the session stops after that many round trips."""

    COMMAND: ClassVar[str] = "trade_start"
    ROLE: ClassVar[Role] = "trader"
    symbol: str
    exchange: str = ""  # "" = the trader's configured venue
    n_trades: int | None = None


class StopTrading(Request):
    """Stop entries on ``symbol`` (or ``all``); ``flatten`` also closes the open positions."""

    COMMAND: ClassVar[str] = "trade_stop"
    ROLE: ClassVar[Role] = "trader"
    symbol: str = "all"
    flatten: bool = False


class Flatten(Request):
    COMMAND: ClassVar[str] = "flatten"
    ROLE: ClassVar[Role] = "trader"
    DANGEROUS: ClassVar[bool] = True
    symbol: str = "all"


class PauseEntries(Request):
    COMMAND: ClassVar[str] = "pause"
    ROLE: ClassVar[Role] = "trader"
    symbol: str = "all"


class ResumeEntries(Request):
    COMMAND: ClassVar[str] = "resume"
    ROLE: ClassVar[Role] = "trader"
    symbol: str = "all"


class ResetRisk(Request):
    """Lift a daily-loss (or kill-switch) halt before the next UTC day."""

    COMMAND: ClassVar[str] = "risk_reset"
    ROLE: ClassVar[Role] = "trader"
    DANGEROUS: ClassVar[bool] = True


class SetParameter(Request):
    """Set one strategy/risk parameter by name (the value is parsed and validated by the trader)."""

    COMMAND: ClassVar[str] = "set_param"
    ROLE: ClassVar[Role] = "trader"
    name: str
    value: str


class Status(Request):
    COMMAND: ClassVar[str] = "trader_status"


class Positions(Request):
    COMMAND: ClassVar[str] = "positions"


class Balance(Request):
    COMMAND: ClassVar[str] = "balance"


class Pnl(Request):
    COMMAND: ClassVar[str] = "pnl"
    period: Literal["today", "7d", "all"] = "today"


class RecentTrades(Request):
    COMMAND: ClassVar[str] = "trades"
    n: int = 10


class RiskLimits(Request):
    COMMAND: ClassVar[str] = "risk"


class MuteNotifications(Request):
    """Mute (or unmute) the notifier's messages to one chat; critical alerts still go through.
    Answered by the notifier, which keeps the preference in its store."""

    COMMAND: ClassVar[str] = "notify_mute"
    TARGET: ClassVar[str] = "notifier"
    chat_id: int
    muted: bool = True


REQUESTS: tuple[type[Request], ...] = (
    StartTrading,
    StopTrading,
    Flatten,
    PauseEntries,
    ResumeEntries,
    ResetRisk,
    SetParameter,
    Status,
    Positions,
    Balance,
    Pnl,
    RecentTrades,
    RiskLimits,
    MuteNotifications,
)
_BY_COMMAND: dict[str, type[Request]] = {r.COMMAND: r for r in REQUESTS}


def request_for(command: str) -> type[Request] | None:
    return _BY_COMMAND.get(command)


# --------------------------------------------------------------------------- replies


class Reply(msgspec.Struct, kw_only=True):
    pass


class Ack(Reply):
    """Result of an action: what was done, in one line, plus details."""

    message: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class SymbolStatus(Reply):
    symbol: str
    exchange: str
    trading: bool  # started and not stopped
    paused: bool
    trades_left: int | None = None  # N-trades session
    last_signal: str = ""  # "up" / "down" / "flat" / ""
    last_score: float | None = None
    last_signal_ts: int = 0
    book_ok: bool = False
    book_reason: str = ""


class StatusReply(Reply):
    mode: Literal["paper", "testnet", "live"]
    halted: bool
    halt_reason: str = ""
    symbols: list[SymbolStatus] = msgspec.field(default_factory=list)
    model_id: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class PositionView(Reply):
    exchange: str
    symbol: str
    qty: Decimal  # signed: > 0 long, < 0 short
    avg_price: Decimal
    mark_price: Decimal | None = None
    stop_price: Decimal | None = None
    unrealized_pnl: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    fees_paid: Decimal = Decimal(0)
    opened_ts: int = 0


class PositionsReply(Reply):
    positions: list[PositionView] = msgspec.field(default_factory=list)


class BalanceReply(Reply):
    mode: Literal["paper", "testnet", "live"]
    currency: str
    equity: Decimal
    available: Decimal
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class PnlReply(Reply):
    period: Literal["today", "7d", "all"]
    since_ts: int
    realized: Decimal  # after fees
    fees: Decimal
    unrealized: Decimal
    trades: int
    wins: int
    currency: str = "USDT"


class TradeView(Reply):
    """A closed round trip (entry and exit), PnL after fees."""

    exchange: str
    symbol: str
    side: Literal["long", "short"]
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    entry_ts: int
    exit_ts: int
    pnl: Decimal  # after fees
    fees: Decimal
    exit_reason: str = ""  # signal / stop / trailing_stop / limit / manual


class TradesReply(Reply):
    trades: list[TradeView] = msgspec.field(default_factory=list)


class RiskReply(Reply):
    limits: dict[str, str]  # name -> value (as text, Decimal-exact)
    usage: dict[str, str]  # name -> current value
    halted: bool
    halt_reason: str = ""


REPLY_FOR: dict[type[Request], type[Reply]] = {
    StartTrading: Ack,
    StopTrading: Ack,
    Flatten: Ack,
    PauseEntries: Ack,
    ResumeEntries: Ack,
    ResetRisk: Ack,
    SetParameter: Ack,
    Status: StatusReply,
    Positions: PositionsReply,
    Balance: BalanceReply,
    Pnl: PnlReply,
    RecentTrades: TradesReply,
    RiskLimits: RiskReply,
    MuteNotifications: Ack,
}


def _to_wire(obj: Any) -> dict[str, Any]:
    return msgspec.to_builtins(obj)  # Decimal -> str


# --------------------------------------------------------------------------- client / server


class ControlClient:
    """Sends typed requests over a bus (``bus.rpc``) with a deadline; returns typed replies.

    ``requested_by`` names the caller in the command (``cli``, ``telegram:<user id>``, ``api``).
    """

    def __init__(self, bus: Any, *, requested_by: str, timeout_s: float = 5.0) -> None:
        self.bus = bus
        self.requested_by = requested_by
        self.timeout_s = timeout_s

    def command_for(self, req: Request, timeout_s: float | None = None) -> m.ControlCommand:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return m.ControlCommand(
            target=req.TARGET,
            command=req.COMMAND,
            args=_to_wire(req),
            requested_by=self.requested_by,
            expires_at=time.time_ns() + int(timeout * 1e9),
        )

    def call(self, req: Request, timeout_s: float | None = None) -> Reply:
        from depthpilot.bus.base import RpcTimeout

        timeout = self.timeout_s if timeout_s is None else timeout_s
        cmd = self.command_for(req, timeout)
        try:
            reply = self.bus.rpc(cmd, timeout=timeout)
        except RpcTimeout:
            raise ControlTimeout(
                f"{req.TARGET} did not answer {req.COMMAND!r} within {timeout:g} s; "
                "the command expired and will not be executed"
            ) from None
        if not reply.ok:
            raise ControlRejected(f"{req.COMMAND}: {reply.error}")
        return msgspec.convert(reply.result, REPLY_FOR[type(req)], strict=False)


class ControlServer:
    """The answering side: ``register(RequestType, handler)``; ``handle(cmd)`` returns the reply
    result dict for a command it knows, ``None`` for others (so :class:`Service` can fall back to
    its own commands). A handler takes the typed request and returns a typed :class:`Reply`;
    it raises :class:`ControlRejected` (or ``ValueError``) for a refusal the caller should read.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[type[Request], Callable[[Any], Reply]]] = {}

    def register(self, req_type: type[Request], handler: Callable[[Any], Reply]) -> None:
        self._handlers[req_type.COMMAND] = (req_type, handler)

    def handle(self, cmd: m.ControlCommand) -> dict[str, Any] | None:
        entry = self._handlers.get(cmd.command)
        if entry is None:
            return None
        req_type, handler = entry
        try:
            req = msgspec.convert(cmd.args, req_type, strict=False)
        except msgspec.ValidationError as exc:
            raise ControlRejected(f"bad arguments for {cmd.command!r}: {exc}") from None
        reply = handler(req)
        expected = REPLY_FOR[req_type]
        if not isinstance(reply, expected):
            raise TypeError(f"handler for {cmd.command!r} returned {type(reply).__name__}, not {expected.__name__}")
        return _to_wire(reply)
