"""Dataset lookup for tests: skip with a clear reason when a recording is missing (fail under CI=true)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from depthpilot.paths import data_dir


def require(relpath: str) -> Path:
    """Path of ``relpath`` inside the data dir, or skip the test saying what is missing (FAIL
    under ``CI=true``: CI must not pass by skipping)."""
    p = data_dir() / relpath
    if not p.exists():
        msg = f"dataset file {relpath!r} not found under data dir {data_dir()} (set DEPTHPILOT_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


BYBIT_OB500 = "tardis-format-fixtures/xrpusdt-ob500.data.zip"


def bybit_ob500_messages() -> list[dict]:
    """The 50 raw Bybit v5 ``orderbook.500.XRPUSDT`` messages (1 snapshot + 49 deltas)."""
    path = require(BYBIT_OB500)
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".data")]
        with zf.open(name) as fh:
            return [json.loads(line) for line in fh if line.strip()]


BINANCE_SPOT_RAW = "binance-spot-btcusdt-2024-08-08-l2diff/raw/btcusdt_20240808.gz"


def binance_rest_depth_snapshot() -> dict:
    """The real REST ``/api/v3/depth?limit=1000`` response recorded in the Binance spot file
    (the one line that is ``{"lastUpdateId": ..., "bids": ..., "asks": ...}``)."""
    import gzip

    path = require(BINANCE_SPOT_RAW)
    with gzip.open(path, "rt") as fh:
        for line in fh:
            _, _, body = line.partition(" ")
            if body.startswith('{"lastUpdateId"'):
                return json.loads(body)
    raise AssertionError(f"no REST snapshot line in {path}")


def binance_spot_trades(limit: int | None = None) -> list[dict]:
    """The real ``btcusdt@trade`` events (the ``data`` objects, in file order) of the Binance
    spot recording."""
    import gzip

    path = require(BINANCE_SPOT_RAW)
    out: list[dict] = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            _, _, body = line.partition(" ")
            if body.startswith('{"stream":"btcusdt@trade"'):
                out.append(json.loads(body)["data"])
                if limit is not None and len(out) >= limit:
                    break
    if not out:
        raise AssertionError(f"no @trade lines in {path}")
    return out


BYBIT_V2_CLIP = "cryptofeed-l2-clips-2021-2022/raw/BYBIT.ws.26.0.gz"


def bybit_v2_trade_messages(symbol: str = "BTCUSD") -> list[dict]:
    """The real Bybit v2 ``trade.<symbol>`` messages of the cryptofeed clip (raw JSON, file
    order; the clip holds 63 for BTCUSD and 13 for EOSUSD)."""
    import gzip

    path = require(BYBIT_V2_CLIP)
    out: list[dict] = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            _, sep, body = line.partition(": ")
            if sep and body.startswith(f'{{"topic":"trade.{symbol}"'):
                out.append(json.loads(body))
    if not out:
        raise AssertionError(f"no trade messages in {path}")
    return out


def bybit_v2_trades_as_v5(msgs: list[dict]) -> list[dict]:
    """The v2 trade messages in the v5 ``publicTrade.<SYMBOL>`` shape (same values, renamed
    fields: T=trade_time_ms, s=symbol, S=side, v=size, p=price, L=tick_direction,
    i=trade_id; message ``ts`` = the newest trade time, as v2 has no message time)."""
    out = []
    for m in msgs:
        rows = [
            {
                "T": r["trade_time_ms"],
                "s": r["symbol"],
                "S": r["side"],
                "v": str(r["size"]),
                "p": str(r["price"]),
                "L": r["tick_direction"],
                "i": r["trade_id"],
                "BT": False,
            }
            for r in m["data"]
        ]
        out.append(
            {
                "topic": "publicTrade." + m["topic"].split(".", 1)[1],
                "type": "snapshot",
                "ts": max(r["T"] for r in rows),
                "data": rows,
            }
        )
    return out


def fixture_json(name: str):
    """Hand-written protocol scaffolding (exchangeInfo etc.) kept next to this module."""
    return json.loads((Path(__file__).parent / name).read_text())
