"""`depthpilot train` refuses labels that leave a class almost empty: exit 2 and one line with the
class counts and the hint, before anything is fitted or written; `--allow-imbalanced` trains but
warns loudly and records it in the manifest and the report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from depthpilot_cli.main import app

runner = CliRunner()
RAW = "binance-spot-btcusdt-2024-08-08-l2diff/raw"  # the `--source books` default recording
TOP25 = "binance-spot-btcusdt-2024-08-08-l2diff/derived_book_snapshot_25.csv.gz"  # same day, quicker to load


def _expected_counts(path, horizon=5, threshold=0.0005):
    from features.spec import FeatureSpec
    from predictor.labels import LabelSpec, class_counts, make_labels
    from predictor.sources import from_books

    spec = LabelSpec("updown", horizon, threshold)
    d = from_books(path, FeatureSpec(interval_s=1.0), kind="snapshot")
    return class_counts(make_labels(spec, d.prices), spec.classes)


def test_books_defaults_are_refused_with_one_line(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHPILOT_DATA_DIR", str(data_dir))
    counts = _expected_counts(data_dir / RAW)
    n = sum(counts.values())
    assert min(counts.values()) < 0.05 * n  # the data really leaves a class almost empty
    out = tmp_path / "m"
    res = runner.invoke(app, ["train", "--source", "books", "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    for c, k in counts.items():
        assert f"{c}={k}" in line
    assert "--threshold" in line and "--horizon" in line and "--allow-imbalanced" in line
    assert "horizon=5" in line and "threshold=0.0005" in line
    assert not out.exists()  # nothing fitted, nothing written


def test_allow_imbalanced_trains_but_warns_and_records(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHPILOT_DATA_DIR", str(data_dir))
    out = tmp_path / "m"
    counts = _expected_counts(data_dir / TOP25)
    if min(counts.values()) >= 0.05 * sum(counts.values()):
        pytest.fail(f"{TOP25}: labels are not imbalanced ({counts}); the test needs another recording")
    res = runner.invoke(
        app,
        [
            "train",
            "--source",
            "books",
            "--path",
            str(data_dir / TOP25),
            "-o",
            str(out),
            "--allow-imbalanced",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--seq-len",
            "8",
            "--folds",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.stderr and "imbalanced" in res.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["data_range"]["imbalanced_labels_allowed"] is True
    assert man["data_range"]["label_counts"] == counts
    assert man["train_config"]["allow_imbalanced"] is True
    assert any("imbalanced" in w for w in man["metrics"]["warnings"])
    report = (out / "report.md").read_text()
    assert "IMBALANCED" in report and "## Warnings" in report
