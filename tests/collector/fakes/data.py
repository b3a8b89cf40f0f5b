"""Dataset lookup for tests: skip with a clear reason when a recording is missing."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from depthpilot.paths import data_dir


def require(relpath: str) -> Path:
    """Path of ``relpath`` inside the data dir, or skip the test saying what is missing."""
    p = data_dir() / relpath
    if not p.exists():
        pytest.skip(f"dataset file {relpath!r} not found under data dir {data_dir()} "
                    f"(set DEPTHPILOT_DATA_DIR)")
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


def fixture_json(name: str):
    """Hand-written protocol scaffolding (exchangeInfo etc.) kept next to this module."""
    return json.loads((Path(__file__).parent / name).read_text())
