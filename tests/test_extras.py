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


def test_services_run_without_any_extra() -> None:
    """The runtime image installs no extra: every service module and the CLI import, and the
    bundled model loads, with the train/demo/dev packages made unimportable."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = (
        "import sys, importlib\n"
        "for mod in ('sklearn', 'matplotlib', 'optuna', 'mongomock_ng', 'pytest', 'websockets', 'compose'):\n"
        "    sys.modules[mod] = None\n"
        "for mod in ('collector.service', 'features.service', 'predictor.service', 'trader.service',\n"
        "            'notifier.service', 'tgbot.service', 'api.service', 'depthpilot_cli.main'):\n"
        "    importlib.import_module(mod)\n"
        "from predictor.artifact import load_artifact\n"
        "from depthpilot.paths import models_dir\n"
        "load_artifact(models_dir() / 'book-default')\n"
        "print('runtime ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "runtime ok" in proc.stdout, proc.stderr
