"""Where things live on disk: data directory resolution shared by every service and test."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Directory holding market-data recordings.

    ``DEPTHPILOT_DATA_DIR`` if set, else ``./data`` (relative to the working directory, then to
    the repository root) if it exists, else ``../shared/datasets`` next to the repository.
    Returns the first candidate that exists; if none exists, the last candidate is returned so
    error messages name a concrete path.
    """
    env = os.environ.get("DEPTHPILOT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd() / "data", REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "datasets"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]


def models_dir() -> Path:
    """Directory of bundled trained models (committed, small)."""
    return Path(os.environ.get("DEPTHPILOT_MODELS_DIR", REPO_ROOT / "predictor" / "models"))


def cache_dir() -> Path:
    """Root of depthpilot's own caches (e.g. the backtest's catalogue of rebuilt books, under
    ``books/``): ``DEPTHPILOT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/depthpilot``, else
    ``~/.cache/depthpilot``. Nothing is created here."""
    env = os.environ.get("DEPTHPILOT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "depthpilot"
