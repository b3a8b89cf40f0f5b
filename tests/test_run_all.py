"""`make run`: every service in one process on the in-memory bus and store, no Docker, no
keys: real recorded books flow collector -> features -> predictor -> signals -> the trader,
which trades them on paper and prints its trades and PnL after fees."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from depthpilot.paths import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(420)
def test_run_all_in_one_process_produces_signals(data_dir):
    port = _free_port()
    env = {
        **os.environ,
        "DEPTHPILOT_ENV_FILE": "",
        "API_PORT": str(port),
        "REPLAY_SPEED": "20",
        "DEPTHPILOT_DATA_DIR": str(data_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "depthpilot_cli", "run-all"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        import httpx

        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert health and health["status"] == "ok", health
        status = httpx.get(f"http://127.0.0.1:{port}/services/predictor/status", timeout=5).json()
        assert status["ok"] and status["result"]["model_id"].startswith("book-default")
        # at least 25 s of the demo, then until the paper trader shows a closed trade: on a
        # loaded machine the services take longer to get through the same stretch of recording
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            closed = [int(x) for x in re.findall(r"^trader \(paper\) \|.*\| trades: (\d+) \|", "".join(lines), re.M)]
            if time.monotonic() - t0 >= 25 and closed and closed[-1] >= 1:
                break
            time.sleep(1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: clean exit
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out
    last = [ln for ln in out.splitlines() if ln.startswith("pipeline |")][-1]
    counts = dict(re.findall(r"(\w+): (\d+)", last))
    assert int(counts["collector"]) > 100 and int(counts["features"]) > 100, last
    assert int(counts["predictor"]) > 10, last
    assert re.search(r"book->signal p50 [\d.]+ ms", last), last  # end-to-end latency from the trace stamps
    assert "Traceback" not in out, out
    # the demo trades on paper: periodic trader lines, then a summary of trades and PnL after fees
    assert int(counts["trader"]) >= 1, last  # orders sent
    trader_lines = [ln for ln in out.splitlines() if ln.startswith("trader (paper) | signals: BTCUSDT")]
    assert trader_lines, out[-3000:]
    summary = [ln for ln in out.splitlines() if ln.startswith("summary |")][-1]
    m = re.search(r"trades: (\d+) \| wins: (\d+) \| pnl after fees: (-?\d+\.\d{4}) USDT \| fees: (\d+\.\d{4})", summary)
    assert m, summary
    trades, wins, pnl, fees = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert trades >= 1 and 0 <= wins <= trades and fees > 0 and pnl == pnl, summary
