"""The commands end to end (typer, in process) and the HTML report in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from depthpilot_cli.main import app
from tests.backtest.conftest import USDM
from tests.trader.helpers import need_data

_out: dict[str, Path] = {}


def _evaluate_report(tmp_path_factory) -> Path:
    if "eval" not in _out:
        rec = need_data(USDM) / "derived_book_snapshot_25.csv.gz"  # a top-25 CSV export of the recording
        out = tmp_path_factory.mktemp("evaluate")
        r = CliRunner().invoke(
            app,
            [
                "evaluate",
                "--books",
                str(rec),
                "-o",
                str(out),
                "--random-draws",
                "3",
                "--set",
                "entry_threshold=0.45",
                "--set",
                "confirm_k=1",
            ],
        )
        assert r.exit_code == 0, r.output
        _out["eval"] = out
    return _out["eval"]


def test_evaluate_command_writes_forecast_drift_and_trading_report(tmp_path_factory):
    out = _evaluate_report(tmp_path_factory)
    m = json.loads((out / "metrics.json").read_text())
    fc = m["forecast"]
    # scored on the model's 100 ms clock (the recording's 480 s: <= 4,800 ticks), not on its 9,017 books
    assert fc["clock"] == "sampled 0.1 s"
    assert 4000 < fc["rows"] <= 4800 < m["recording"]["books"]
    for who in ("model", "persistence"):
        assert {"log_loss", "direction_auc", "move_auc", "score_return_spearman"} <= set(fc[who])
    assert set(fc["stored_baselines"]) == {"majority", "persistence", "random"}
    assert m["drift"]["missing"]  # the bundled manifest has no training quantiles: said so
    assert m["drift"]["features"]
    html = (out / "report.html").read_text()
    assert 'id="forecast"' in html and 'id="drift"' in html and "Missing:" in html


def test_backtest_command_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("nothing")
    r = CliRunner().invoke(app, ["backtest", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "unknown recording format" in r.output
    r = CliRunner().invoke(app, ["backtest", str(bad), "--set", "confirm_k=zero"])
    assert r.exit_code == 2 and "confirm_k" in r.output
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"confrim_k": 2}')  # a typo is refused, not silently the default
    r = CliRunner().invoke(app, ["backtest", str(bad), "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown parameter(s) confrim_k" in r.output
    cfg.write_text("[1, 2]")
    r = CliRunner().invoke(app, ["backtest", str(bad), "--config", str(cfg)])
    assert r.exit_code == 2 and "want a table of TraderConfig fields" in r.output
    trunc = tmp_path / "trunc.csv.gz"  # a truncated download: one line naming the file, not "Aborted."
    trunc.write_bytes((need_data(USDM) / "derived_book_snapshot_25.csv.gz").read_bytes()[:20000])
    r = CliRunner().invoke(app, ["backtest", str(trunc), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and str(trunc) in " ".join(r.output.split()), r.output
    cfg.write_text('{"trader": {"confirm_k": 2}}')  # accepted: fails only on the recording
    r = CliRunner().invoke(app, ["backtest", str(bad), "--config", str(cfg)])
    assert r.exit_code == 2 and "unknown recording format" in r.output


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium not installed (apt-get install -y chromium; `make test` does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def test_html_report_renders_in_headless_chromium(tmp_path_factory, tmp_path):
    exe = _chromium()
    html = _evaluate_report(tmp_path_factory) / "report.html"
    base = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(base + ["--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    d = dom.stdout
    assert '<table id="metrics">' in d and '<table id="forecast">' in d
    assert d.count('src="data:image/png;base64,') >= 2  # equity and drawdown, embedded
    assert "net PnL after fees" in d and 'id="verdict"' in d
    png = tmp_path / "shot.png"
    shot = subprocess.run(
        base + [f"--screenshot={png}", "--window-size=1200,2400", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.returncode == 0 and png.stat().st_size > 10_000, shot.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    non_white = (img < 0.95).any(axis=2).mean()
    assert non_white > 0.03, non_white  # text, tables and plots drawn, not a blank page
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # plot colours


def test_optimize_command_bad_grid_is_one_line(tmp_path):
    r = CliRunner().invoke(app, ["optimize", str(tmp_path), "--grid", '{"confirm_k": [0]}'])
    assert r.exit_code == 2 and "--grid" in r.output and "confirm_k" in r.output
    r = CliRunner().invoke(app, ["optimize", str(tmp_path), "--grid", '{"nope": [1]}'])
    assert r.exit_code == 2 and "unknown parameter" in r.output


def test_the_three_commands_share_one_option_set():
    import typer.main

    from depthpilot_cli.backtest_options import _SHARED

    cmd = typer.main.get_command(app)
    opts = {}
    for name in ("backtest", "evaluate", "optimize"):
        sub = cmd.commands[name]  # type: ignore[attr-defined]
        opts[name] = {p.name: (tuple(p.opts), p.default) for p in sub.params}
        assert set(_SHARED) <= set(opts[name]), name
    for k in _SHARED:
        assert opts["backtest"][k] == opts["evaluate"][k] == opts["optimize"][k], k
    assert opts["backtest"]["model"][0] == ("--model", "-m") and opts["evaluate"]["latency_ms"][1] == 50.0
    # each command keeps its own options too
    assert "train_books" in opts["evaluate"] and "grid" in opts["optimize"] and "recordings" in opts["backtest"]
