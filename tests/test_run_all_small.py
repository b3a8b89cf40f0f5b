"""`make run` in a fresh clone: no recordings -> fetch the sample one, or say in one line what
to do; SIGTERM stops run-all like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from depthpilot.paths import REPO_ROOT
from tests.test_run_all import _free_port
from tests.test_sample_data import _Server

RECORDING = "binance-spot-btcusdt-2024-08-08-l2diff"


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "nodata"
    monkeypatch.setenv("DEPTHPILOT_DATA_DIR", str(empty))
    monkeypatch.setenv("COLLECTOR_SOURCE", "replay")
    monkeypatch.delenv("REPLAY_PATHS", raising=False)
    return empty


def test_no_data_and_no_network_says_what_to_do_in_one_line(
    no_data: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from depthpilot_cli.run_all import ensure_demo_data

    with _Server(data_dir, mode="404") as srv, pytest.raises(typer.Exit) as exit_:
        ensure_demo_data(base_url=srv.url)
    assert exit_.value.exit_code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert "DEPTHPILOT_DATA_DIR" in lines[-1] and "make sample-data" in lines[-1]
    assert all("REPLAY_PATHS" not in ln for ln in lines)  # not a variable the user ever set
    assert not no_data.exists()  # the failed fetch left no empty directory


def test_no_data_fetches_the_sample_recording(no_data: Path, data_dir: Path) -> None:
    from depthpilot_cli.run_all import ensure_demo_data

    with _Server(data_dir) as srv:
        ensure_demo_data(base_url=srv.url)
    raw = no_data / RECORDING / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(p.name for p in (data_dir / RECORDING / "raw").iterdir())
    assert os.environ["DEPTHPILOT_DATA_DIR"] == str(no_data)


def test_sigterm_stops_run_all_like_ctrl_c(data_dir: Path) -> None:
    env = {
        **os.environ,
        "DEPTHPILOT_ENV_FILE": "",
        "API_PORT": str(_free_port()),
        "DEPTHPILOT_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "depthpilot_cli", "run-all"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("running ") or time.monotonic() > deadline:
                break
        assert any(ln.startswith("running ") for ln in seen), "".join(seen)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "pipeline |" in out and out.rstrip().endswith("stopped"), out
    assert "Traceback" not in out, out
