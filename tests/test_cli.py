"""The `depthpilot` command line on real data: export from the store, offline feature build
with the spec hash in the file, training from that file, topology check, config masking."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from depthpilot import messages as m
from depthpilot_cli.main import app
from depthpilot.paths import models_dir
from depthpilot.store import Store

runner = CliRunner()


def test_config_masks_secrets(monkeypatch):
    monkeypatch.setenv("BYBIT_API_SECRET", "s3cr3t-value-xyz")
    monkeypatch.setenv("AMQP_URL", "amqp://u:pa55word-abc@h:5672/%2F")
    res = runner.invoke(app, ["config"])
    assert res.exit_code == 0, res.output
    assert "s3cr3t-value-xyz" not in res.output and "pa55word-abc" not in res.output
    assert "***" in res.output


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("SNAPSHOT_RATE_HZ", "fast")
    res = runner.invoke(app, ["config"])
    assert res.exit_code == 2 and "SNAPSHOT_RATE_HZ" in res.output


def test_export_features_build_and_train(monkeypatch, tmp_path, uid, data_dir):
    from features.io import load_book_snapshots_csv

    url = f"mongomock://{uid}"
    monkeypatch.setenv("MONGO_URL", url)
    monkeypatch.setenv("MONGO_DB", f"cli_{uid}")
    ts, bids, asks = load_book_snapshots_csv(
        data_dir / "binance-usdm-btcusdt-2024-07-18-l2diff" / "derived_book_snapshot_25.csv.gz"
    )
    store = Store.connect(url, f"cli_{uid}", snapshot_ttl_s=None)
    snaps = [
        m.BookSnapshot(
            exchange="binanceusdm",
            symbol="BTCUSDT",
            ts_exchange=int(t),
            ts_recv=int(t) + 5,
            seq=i,
            bids=b,
            asks=a,
            depth=25,
        )
        for i, (t, b, a) in enumerate(zip(ts, bids, asks))
    ]
    assert store.insert_many("snapshots", snaps).inserted == len(snaps)

    out = tmp_path / "snaps.parquet"
    res = runner.invoke(
        app, ["export", "snapshots", "--exchange", "binanceusdm", "--symbol", "BTCUSDT", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert len(df) == len(snaps)
    np.testing.assert_array_equal(df["bids[0].price"].to_numpy(), bids[:, 0, 0])
    assert (df["timestamp"].to_numpy() * 1000 == ts).all()

    # the export is a valid book source for the offline feature build
    feats = tmp_path / "feats.parquet"
    res = runner.invoke(
        app,
        [
            "features",
            "build",
            "--books",
            str(out),
            "--kind",
            "block",
            "-o",
            str(feats),
            "--spec",
            str(models_dir() / "book-default" / "manifest.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    meta = pq.read_schema(feats).metadata
    manifest = json.loads(open(str(models_dir() / "book-default" / "manifest.json")).read())
    assert meta[b"depthpilot.spec_hash"].decode() == manifest["spec_hash"]
    assert meta[b"depthpilot.kind"] == b"block"

    art = tmp_path / "model"
    res = runner.invoke(
        app,
        [
            "train",
            "--source",
            "features",
            "--path",
            str(feats),
            "--horizon",
            "3",
            "--threshold",
            "0.00005",
            "--seq-len",
            "8",
            "--hidden",
            "8",
            "--epochs",
            "2",
            "--folds",
            "2",
            "-o",
            str(art),
        ],
    )
    assert res.exit_code == 0, res.output
    from predictor.artifact import load_artifact

    loaded = load_artifact(art, expected_spec_hash=manifest["spec_hash"])
    assert loaded.manifest.features["kind"] == "block"
    assert not any(n.endswith("_mid") or n.endswith("microprice") for n in loaded.manifest.feature_names)
    assert (art / "report.md").is_file()


def test_export_nothing_is_an_error(monkeypatch, tmp_path, uid):
    monkeypatch.setenv("MONGO_URL", f"mongomock://{uid}")
    res = runner.invoke(app, ["export", "trades", "--exchange", "x", "--symbol", "Y", "-o", str(tmp_path / "t.csv")])
    assert res.exit_code == 1 and "nothing to export" in res.output
