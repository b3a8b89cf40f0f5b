"""run-all's trading view asks the trader with typed replies (depthpilot_cli.run_view.fetch)."""

from __future__ import annotations

from decimal import Decimal

from depthpilot import control as c
from depthpilot_cli import run_view


class _Client:
    """Answers each request with ``replies[type(req)]``."""

    def __init__(self, replies: dict[type[c.Request], c.Reply]) -> None:
        self.replies = replies
        self.asked: list[str] = []

    def call(self, req: c.Request, timeout_s: float | None = None) -> c.Reply:
        self.asked.append(req.COMMAND)
        return self.replies[type(req)]


def _replies() -> dict[type[c.Request], c.Reply]:
    return {
        c.Status: c.StatusReply(mode="paper", halted=False),
        c.Positions: c.PositionsReply(),
        c.Pnl: c.PnlReply(
            period="all",
            since_ts=0,
            realized=Decimal("1.5"),
            fees=Decimal("0.1"),
            unrealized=Decimal(0),
            trades=1,
            wins=1,
        ),
        c.RecentTrades: c.TradesReply(),
    }


def test_fetch_fills_the_view_from_typed_replies() -> None:
    client = _Client(_replies())
    v = run_view.fetch(client)  # a stand-in for ControlClient
    assert v.error == ""
    assert v.status is not None and v.status.mode == "paper"
    assert v.pnl is not None and v.pnl.realized == Decimal("1.5")
    assert client.asked == [r.COMMAND for r in (c.Status, c.Positions, c.Pnl, c.RecentTrades)]


def test_a_reply_of_the_wrong_type_is_one_error_line_not_an_attribute_error() -> None:
    replies = _replies()
    replies[c.Positions] = c.Ack(message="not positions")
    v = run_view.fetch(_Client(replies))
    assert v.error == "positions: expected PositionsReply, got Ack"
    assert v.positions == []
