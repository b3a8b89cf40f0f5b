"""Real recordings for the feature-engine tests (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"
USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"
KLINES = "binance-spot-btcusdt-klines-1m-2024-12/BTCUSDT_1m.csv.gz"


def _need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"recording {p} not found (set DEPTHPILOT_DATA_DIR)")
    return p


@pytest.fixture(scope="session")
def spot25(data_dir):
    from features.io import load_book_snapshots_csv

    return load_book_snapshots_csv(_need(data_dir / SPOT / "derived_book_snapshot_25.csv.gz"))


@pytest.fixture(scope="session")
def usdm25(data_dir):
    from features.io import load_book_snapshots_csv

    return load_book_snapshots_csv(_need(data_dir / USDM / "derived_book_snapshot_25.csv.gz"))


@pytest.fixture(scope="session")
def spot250(data_dir):
    """First 1,500 books of the spot recording rebuilt at 250 levels from the raw diffs."""
    from features.io import load_binance_books

    return load_binance_books(_need(data_dir / SPOT / "raw"), depth=250, max_snapshots=1500)


@pytest.fixture(scope="session")
def klines(data_dir):
    from features.io import load_klines

    return load_klines(_need(data_dir / KLINES))


@pytest.fixture(scope="session")
def spot_trades(data_dir):
    from features.io import load_trades_csv

    return load_trades_csv(_need(data_dir / SPOT / "derived_trades.csv.gz"))
