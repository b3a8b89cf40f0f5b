"""Under CI=true a test that lacks its data fails (naming the missing data) instead of
skipping; outside CI it still skips. Runs pytest on one real data test in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_TEST = "tests/collector/test_replay.py::test_tardis_book_snapshot_fixture"


def _run(ci: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DEPTHPILOT_DATA_DIR": "/nonexistent/depthpilot-data",
        "CI": ci,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", DATA_TEST],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_data_fails_under_ci_and_names_it() -> None:
    proc = _run("true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed" in proc.stdout
    assert "CI=true: skipped tests fail" in proc.stdout
    assert "tardis-format-fixtures" in proc.stdout and "/nonexistent/depthpilot-data" in proc.stdout


def test_missing_data_skips_outside_ci() -> None:
    proc = _run("")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout


def test_excused_skips_are_few_and_reasoned() -> None:
    from tests.conftest import EXCUSED_SKIPS, excused_skip

    assert len(EXCUSED_SKIPS) <= 5
    for pattern, needle, why in EXCUSED_SKIPS:
        assert pattern and needle and len(why) > 40
    assert excused_skip("tests/test_store.py::test_x[mongodb]", "set MONGO_URL=mongodb://... to run") is not None
    assert excused_skip("tests/test_store.py::test_x", "dataset missing: /x") is None
    assert excused_skip("tests/features/test_a.py::test_b", "recording not found") is None
