"""Model artifact: one directory = ``model.pt`` (state_dict) + ``manifest.json``.

The manifest carries everything needed to serve the model without the training code's config:
feature-spec hash and feature names, label definition and class names, seq_len, model shape,
scaler parameters, decision thresholds, walk-forward metrics, training data range, git commit,
and the sha256 of the weights file. ``report.md`` and plots sit next to it when training wrote them.

``load_artifact`` refuses a feature-spec mismatch (:class:`ModelSpecMismatch`, naming both hashes)
and turns every other problem -- missing file, bad JSON, missing key, checksum mismatch,
unloadable weights -- into :class:`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType

import numpy as np
import torch

from predictor.dataset import Scaler
from predictor.labels import LabelError, LabelSpec
from predictor.model import LSTMClassifier, ModelConfig

__all__ = [
    "ArtifactError",
    "ModelSpecMismatch",
    "ArtifactPath",
    "Manifest",
    "LoadedArtifact",
    "save_artifact",
    "write_manifest",
    "load_artifact",
    "git_commit",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"

ArtifactPath = NewType("ArtifactPath", Path)


class ArtifactError(RuntimeError):
    """The artifact directory is missing, incomplete or corrupted."""


class ModelSpecMismatch(ArtifactError):
    """The model was trained on features from a different FeatureSpec than the one in use."""

    def __init__(self, artifact_hash: str, expected_hash: str, path: Path | str):
        self.artifact_hash = artifact_hash
        self.expected_hash = expected_hash
        super().__init__(
            f"model at {path} was trained on feature spec {artifact_hash!r} but the running feature "
            f"spec is {expected_hash!r}; retrain the model or run the matching features"
        )


@dataclass
class Manifest:
    model_id: str
    spec_hash: str
    feature_names: list[str]
    label: dict[str, Any]
    classes: list[str]
    seq_len: int
    model: dict[str, Any]
    scaler: dict[str, list[float]]
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_range: dict[str, Any] = field(default_factory=dict)
    # which feature vectors feed the model: {"kind", "interval", "spec"} (see features.pipeline)
    features: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    # row clock in seconds: row_interval_s, seq_len_s, horizon_s, max_gap_s (predictor.clock)
    clock: dict[str, Any] = field(default_factory=dict)
    # baselines fitted on the final model's training labels (predictor.evaluate.FittedBaselines)
    baselines: dict[str, Any] = field(default_factory=dict)
    git_commit: str | None = None
    created_at: str = ""
    torch_version: str = torch.__version__
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class LoadedArtifact:
    path: Path
    manifest: Manifest
    model: LSTMClassifier  # eval mode, CPU
    scaler: Scaler
    label: LabelSpec

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def seq_len(self) -> int:
        return self.manifest.seq_len


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit(cwd: Path | str | None = None) -> str | None:
    """Current git commit of the repo (None when git or the repo -- or any commit -- is absent)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def save_artifact(out_dir: Path | str, model: LSTMClassifier, manifest: Manifest) -> ArtifactPath:
    """Write weights then manifest (manifest last, atomically, so a half-written dir never loads)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wpath = out / manifest.weights_file
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, wpath)
    manifest.weights_sha256 = _sha256(wpath)
    write_manifest(out, manifest.to_dict())
    return ArtifactPath(out)


def write_manifest(out_dir: Path | str, manifest: dict[str, Any]) -> Path:
    """Write an artifact's ``manifest.json`` atomically (a reader never sees it half-written)."""
    mpath = Path(out_dir) / MANIFEST_FILE
    tmp = mpath.with_name(MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, mpath)
    return mpath


def load_artifact(path: Path | str, expected_spec_hash: str | None = None) -> LoadedArtifact:
    p = Path(path)
    mpath = p / MANIFEST_FILE
    if not mpath.is_file():
        raise ArtifactError(f"no {MANIFEST_FILE} in {p} (not a model artifact directory?)")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: unreadable manifest ({exc})") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{mpath}: manifest is not a JSON object")
    required = (
        "model_id",
        "spec_hash",
        "feature_names",
        "label",
        "classes",
        "seq_len",
        "model",
        "scaler",
        "weights_sha256",
        "format_version",
    )
    missing = [k for k in required if k not in raw]
    if missing:
        raise ArtifactError(f"{mpath}: manifest lacks {missing}")
    if raw["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{mpath}: format version {raw['format_version']} (this build reads {FORMAT_VERSION})")
    man = Manifest.from_dict(raw)
    if expected_spec_hash is not None and man.spec_hash != expected_spec_hash:
        raise ModelSpecMismatch(man.spec_hash, expected_spec_hash, p)

    wpath = p / man.weights_file
    if not wpath.is_file():
        raise ArtifactError(f"weights file {wpath} is missing")
    digest = _sha256(wpath)
    if digest != man.weights_sha256:
        raise ArtifactError(f"weights file {wpath} is corrupted: sha256 {digest} != manifest {man.weights_sha256}")
    try:
        cfg = ModelConfig.from_dict(man.model)
        label = LabelSpec.from_dict(man.label)
        scaler = Scaler.from_dict(man.scaler)
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model = LSTMClassifier(cfg)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, LabelError, EOFError, OSError) as exc:
        raise ArtifactError(f"{p}: cannot rebuild the model ({type(exc).__name__}: {exc})") from exc
    if (
        len(man.feature_names) != cfg.n_features
        or scaler.mean.shape != (cfg.n_features,)
        or scaler.scale.shape != (cfg.n_features,)
        or not np.all(scaler.scale > 0)
    ):
        raise ArtifactError(f"{p}: inconsistent feature count / scaler in manifest")
    if len(man.classes) != cfg.n_classes or man.classes != label.classes:
        raise ArtifactError(f"{p}: class list {man.classes} inconsistent with model/label")
    model.eval()
    return LoadedArtifact(path=p, manifest=man, model=model, scaler=scaler, label=label)
