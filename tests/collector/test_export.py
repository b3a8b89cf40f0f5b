"""collector.export: the training export refuses a message of the wrong kind with one line."""

from __future__ import annotations

import numpy as np
import pytest

from collector.export import ExportError, write_export
from depthpilot import messages as m

T0 = 1_720_000_000_000_000_000


def trade(k: int) -> m.Trade:
    return m.Trade(
        exchange="binance",
        symbol="BTCUSDT",
        ts_exchange=T0 + k,
        ts_recv=T0 + k,
        price=60000.1,
        size=0.01,
        side=m.Side.BUY,
        trade_id=str(k),
    )


def snapshot(k: int) -> m.BookSnapshot:
    return m.BookSnapshot(
        exchange="binance",
        symbol="BTCUSDT",
        ts_exchange=T0 + k,
        ts_recv=T0 + k,
        seq=k,
        bids=np.array([[60000.0, 1.0]]),
        asks=np.array([[60000.1, 2.0]]),
        depth=1,
    )


def test_each_kind_writes_its_own_messages(tmp_path) -> None:
    assert write_export([trade(1), trade(2)], "trades", tmp_path / "t.csv") == 2
    assert write_export([snapshot(1)], "snapshots", tmp_path / "s.csv", depth=1) == 1
    head = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert head.startswith("exchange,symbol,timestamp,local_timestamp,asks[0].price")


@pytest.mark.parametrize(("kind", "wrong"), [("snapshots", "Trade"), ("trades", "BookSnapshot")])
def test_a_message_of_the_other_kind_is_one_clear_error(tmp_path, kind: str, wrong: str) -> None:
    good, bad = (snapshot(1), trade(2)) if kind == "snapshots" else (trade(1), snapshot(2))
    with pytest.raises(ExportError, match=f"^a {kind} export got a {wrong} message$"):
        write_export([good, bad], kind, tmp_path / "x.csv", depth=1)
