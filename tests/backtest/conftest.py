"""Shared, session-scoped inputs of the backtest tests: the bundled model and the two
developer-visible Binance L2 recordings rebuilt once (missing data: skip, or FAIL under CI=true)."""

from __future__ import annotations

import pytest

from tests.trader.helpers import need_data

SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"
USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"
_cache: dict = {}


@pytest.fixture(scope="session")
def pred():
    from backtest.signals import load_model

    return load_model()


def books_of(rel: str, pred):
    if rel not in _cache:
        from backtest.data import load_recording
        from backtest.signals import model_depth

        _cache[rel] = load_recording(need_data(rel), depth=model_depth(pred))
    return _cache[rel]


@pytest.fixture(scope="session")
def usdm_books(pred):
    return books_of(USDM, pred)


@pytest.fixture(scope="session")
def spot_books(pred):
    return books_of(SPOT, pred)
