"""``features build`` (and ``train --source books``, through the same ``load_books``) rebuild raw
Binance books with the collector's batch rebuild: the books and the written feature file are
the same, bit for bit, as through the collector's replay, on the real spot clip of
tests/collector/test_offline_equals_live.py and on both whole raw recordings."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from collector.binance_batch import rebuild_recording
from features.build import build, load_books, write_frame
from features.io import RecordingError, load_binance_books, replay_binance_books
from features.spec import FeatureSpec
from tests.collector.venue_data import SPOT, USDM, raw_files

DEPTH = 25


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.float64:  # NaN padding included
        a, b = a.view(np.int64), b.view(np.int64)
    return bool(np.array_equal(a, b))


def spot_clip(dest: Path) -> Path:
    """The first 6,000 lines of the real spot recording (as test_offline_equals_live)."""
    with gzip.open(raw_files(SPOT)[0], "rb") as fin, gzip.open(dest, "wb", compresslevel=1) as fout:
        for _, line in zip(range(6000), fin):
            fout.write(line)
    return dest


def test_features_build_file_equals_the_replay_path(tmp_path, uid):
    from depthpilot_cli.main import app

    clip = spot_clip(tmp_path / uid)
    assert rebuild_recording(clip, DEPTH) is not None, "the batch path was not taken"
    spec = FeatureSpec(depths=(5, 10, 20, 25), interval_s=1.0)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    out = tmp_path / "batch.parquet"
    args = ["features", "build", "--books", str(clip), "--kind", "snapshot", "--depth", str(DEPTH)]
    r = CliRunner().invoke(app, [*args, "--spec", str(spec_file), "-o", str(out)])
    assert r.exit_code == 0, r.output

    ts, bids, asks = replay_binance_books(clip, DEPTH)
    ref = tmp_path / "replay.parquet"
    write_frame(build(spec, "snapshot", ts=ts, bids=bids, asks=asks), ref)
    got, want = pd.read_parquet(out), pd.read_parquet(ref)
    assert len(want) > 50 and list(got.columns) == list(want.columns)
    for c in want.columns:
        assert same_bits(got[c].to_numpy(), want[c].to_numpy()), c
    assert np.isfinite(want.drop(columns="ts").to_numpy()).any()


@pytest.mark.parametrize("dataset", [SPOT, USDM])
def test_whole_recordings_give_the_replay_books(dataset, tmp_path):
    files = raw_files(dataset)
    for depth in (250, DEPTH):
        assert rebuild_recording(files[0].parent, depth) is not None, "the batch path was not taken"
        fast = load_books(files[0].parent, depth=depth)  # what features build and training call
        slow = replay_binance_books(files[0].parent, depth)
        assert fast[1].shape[1:] == (depth, 2)
        for name, a, b in zip(("ts", "bids", "asks"), fast, slow):
            assert same_bits(a, b), (dataset, depth, name)
    head = load_binance_books(files, depth=250, max_snapshots=700)  # several files given one by one
    for a, b in zip(head, replay_binance_books(files, 250, max_snapshots=700)):
        assert same_bits(a, b)
    assert len(head[0]) == 700


def test_the_replay_still_answers_what_the_batch_path_does_not_cover(tmp_path):
    clip = spot_clip(tmp_path / "clip.gz")
    bad = tmp_path / "bad.gz"
    with gzip.open(clip, "rb") as fin, gzip.open(bad, "wb") as fout:
        lines = fin.read().splitlines(keepends=True)
        fout.write(b"".join(lines[:3000]) + b"not a recording line\n" + b"".join(lines[3000:]))
    assert rebuild_recording(bad, DEPTH) is None  # left to the replay, which names the line
    with pytest.raises(RecordingError):
        load_binance_books(bad, DEPTH)
    lone = tmp_path / "no_snapshot.gz"  # diffs only: no book can be built
    with gzip.open(lone, "wb") as fout:
        fout.write(b"".join(x for x in lines if b"lastUpdateId" not in x))
    with pytest.raises(RecordingError, match="no book could be built"):
        load_binance_books(lone, DEPTH)
