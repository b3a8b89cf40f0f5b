"""Helpers for the venue/data-path tests: real recordings copied under random names, and a
COIN-M recording SYNTHESISED from the real USD-M one (no COIN-M recording exists here)."""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path

import orjson
import pytest

from depthpilot.paths import data_dir

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"
USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"


def raw_files(dataset: str) -> list[Path]:
    d = data_dir() / dataset / "raw"
    files = sorted(d.glob("*.gz")) if d.is_dir() else []
    if not files:
        msg = f"dataset {dataset} not found under {data_dir()} (set DEPTHPILOT_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return files


def random_copies(files: list[Path], dest: Path) -> list[Path]:
    """Copies (symlinks) of ``files`` under random names, returned in REVERSED order so
    nothing can rely on the given order or on a name."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        p = dest / uuid.uuid4().hex
        p.symlink_to(f)
        out.append(p)
    return out[::-1]


# COIN-M diff-depth (Binance docs, "Diff. Book Depth Streams", dstream):
#   stream <symbol>@depth@<rate>; data {"e":"depthUpdate","E","T","s":"BTCUSD_PERP","ps":"BTCUSD",
#   "U","u","pu","b":[[price, qty]],"a":[...]}; qty = number of contracts (integers).
# REST /dapi/v1/depth: {"lastUpdateId","E","T","symbol":"BTCUSD_PERP","pair":"BTCUSD","bids","asks"}.
# The transform keeps every price, update id and time of the real USD-M recording and maps each
# base-asset quantity q to round(q * 1000) contracts (one-to-one for the recording's 3-decimal
# quantities, so the book and the tickers stay comparable).
COINM_SYMBOL = "BTCUSD_PERP"


def _contracts(q: str) -> str:
    return str(round(float(q) * 1000))


def _levels(levels: list) -> list:
    return [[p, _contracts(q)] for p, q in levels]


def coinm_line(line: bytes) -> bytes:
    sp = line.index(b" ")
    obj = orjson.loads(line[sp + 1 :])
    if "lastUpdateId" in obj:
        obj = {
            "lastUpdateId": obj["lastUpdateId"],
            "E": obj.get("E", 0),
            "T": obj.get("T", 0),
            "symbol": COINM_SYMBOL,
            "pair": "BTCUSD",
            "bids": _levels(obj["bids"]),
            "asks": _levels(obj["asks"]),
        }
    else:
        _, _, channel = obj["stream"].partition("@")
        data = dict(obj["data"])
        data["s"] = COINM_SYMBOL
        data["ps"] = "BTCUSD"
        if data.get("e") == "depthUpdate":
            data["b"], data["a"] = _levels(data["b"]), _levels(data["a"])
        elif data.get("e") == "bookTicker":
            data["B"], data["A"] = _contracts(data["B"]), _contracts(data["A"])
        elif data.get("e") in ("trade", "aggTrade"):
            data["q"] = _contracts(data["q"])
        obj = {"stream": f"{COINM_SYMBOL.lower()}@{channel}", "data": data}
    return line[: sp + 1] + orjson.dumps(obj) + b"\n"


def synth_coinm(dest: Path) -> list[Path]:
    """The USD-M recording rewritten as COIN-M BTCUSD_PERP, one file per source file, random names."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in raw_files(USDM):
        p = dest / uuid.uuid4().hex
        with gzip.open(f, "rb") as fin, gzip.open(p, "wb", compresslevel=1) as fout:
            for line in fin:
                if line.strip():
                    fout.write(coinm_line(line))
        out.append(p)
    return out[::-1]
