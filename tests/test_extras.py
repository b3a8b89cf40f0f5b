"""Optional imports fail with one line naming the extra to install."""
from __future__ import annotations

import sys

import pytest

from depthpilot.extras import MissingExtra, require


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.preprocessing", None)  # as if scikit-learn were absent
    with pytest.raises(MissingExtra) as err:
        require("sklearn.preprocessing", "train", "fitting a scaler (training)")
    msg = str(err.value)
    assert "\n" not in msg and "'train' extra" in msg and "pip install 'depthpilot[train]'" in msg


def test_scaler_fit_without_sklearn_says_train(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from predictor.dataset import Scaler

    monkeypatch.setitem(sys.modules, "sklearn.preprocessing", None)
    with pytest.raises(MissingExtra, match=r"depthpilot\[train\]"):
        Scaler.fit(np.ones((10, 3)))


def test_embedded_store_without_mongomock_says_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from depthpilot.store import Store, StoreError

    monkeypatch.setitem(sys.modules, "mongomock_ng", None)
    with pytest.raises(StoreError, match=r"depthpilot\[demo\]"):
        Store.connect("mongomock://extras-test", "x")


def test_present_module_is_returned() -> None:
    assert require("json", "dev", "x").dumps([1]) == "[1]"
