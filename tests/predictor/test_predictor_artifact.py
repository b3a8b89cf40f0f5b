"""Artifact loading: spec mismatch refused, corrupted/missing files give ArtifactError."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from predictor.artifact import ArtifactError, ModelSpecMismatch, git_commit, load_artifact


@pytest.fixture
def art_copy(trained, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(trained["path"], dst)
    return dst


def test_matching_spec_loads(trained):
    art = load_artifact(trained["path"], expected_spec_hash=trained["data"].spec_hash)
    assert art.manifest.spec_hash == trained["data"].spec_hash
    assert not art.model.training


def test_spec_mismatch_is_refused_naming_both_hashes(trained):
    with pytest.raises(ModelSpecMismatch) as ei:
        load_artifact(trained["path"], expected_spec_hash="0123456789abcdef")
    msg = str(ei.value)
    assert trained["data"].spec_hash in msg and "0123456789abcdef" in msg
    assert ei.value.artifact_hash == trained["data"].spec_hash
    assert isinstance(ei.value, ArtifactError)


def test_flipped_weight_bytes_are_detected(art_copy):
    w = art_copy / "model.pt"
    b = bytearray(w.read_bytes())
    for i in (len(b) // 2, len(b) // 2 + 1, len(b) - 100):
        b[i] ^= 0xFF
    w.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifact(art_copy)


def test_garbage_weights_with_matching_checksum_give_artifact_error(art_copy):
    w = art_copy / "model.pt"
    w.write_bytes(w.read_bytes()[:200])  # truncated file
    man = json.loads((art_copy / "manifest.json").read_text())
    man["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    (art_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="cannot rebuild"):
        load_artifact(art_copy)


def test_bad_json_missing_files_and_keys(art_copy, tmp_path):
    with pytest.raises(ArtifactError, match="no manifest"):
        load_artifact(tmp_path / "nowhere")
    mp = art_copy / "manifest.json"
    good = mp.read_text()
    mp.write_text(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        load_artifact(art_copy)
    man = json.loads(good)
    del man["scaler"]
    mp.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="lacks"):
        load_artifact(art_copy)
    mp.write_text(good)
    (art_copy / "model.pt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(art_copy)


def test_inconsistent_manifest_is_rejected(art_copy):
    mp = art_copy / "manifest.json"
    man = json.loads(mp.read_text())
    man["feature_names"] = man["feature_names"][:-1]
    mp.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="inconsistent"):
        load_artifact(art_copy)


def test_git_commit_tolerates_absence(tmp_path):
    assert git_commit(tmp_path) is None  # not a repository
