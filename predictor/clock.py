"""One time base for training and serving (pure, no I/O).

A model eats rows on a fixed clock: sampled books (``FeatureSpec.sample_interval_s``), time
blocks or candles (``FeatureSpec.interval_s``). Its window length, label horizon and the largest
spacing allowed between two rows of a window are stated in SECONDS in the manifest's ``clock``
section, and the predictor service enforces them (vectors off the clock are refused, a larger
spacing restarts the window).

Manifests written before the ``clock`` section (rows only) are read with a clear conversion
when their rows had a fixed clock (blocks, candles, sampled books: seconds = rows x interval),
and refused with a clear reason when they did not (one row per book on the feed's own event
clock: "20 rows" meant 0.3-2 s depending on the feed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from features.spec import FeatureSpec

__all__ = ["ClockError", "ModelClock", "model_clock", "row_interval_from_features", "rows_for", "training_clock"]


class ClockError(ValueError):
    """A model or dataset has no usable fixed row clock, or seconds do not fit it."""


@dataclass(frozen=True)
class ModelClock:
    row_interval_s: float  # seconds between consecutive rows
    seq_len_s: float  # window length (seq_len rows)
    horizon_s: float  # label horizon
    max_gap_s: float  # largest spacing between consecutive rows inside one window
    source: str = "manifest"  # "manifest" | "converted from rows"

    @property
    def row_ns(self) -> int:
        return round(self.row_interval_s * 1e9)

    @property
    def max_gap_ns(self) -> int:
        return round(self.max_gap_s * 1e9)

    @property
    def seq_len(self) -> int:
        return rows_for(self.seq_len_s, self.row_interval_s, "seq_len_s")

    @property
    def horizon(self) -> int:
        return rows_for(self.horizon_s, self.row_interval_s, "horizon_s")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d


def rows_for(seconds: float, row_interval_s: float, what: str = "duration") -> int:
    """Seconds -> rows on the clock; refuses a duration that is not a whole number of rows."""
    n = seconds / row_interval_s
    if n < 1 or not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-6):
        raise ClockError(f"{what}={seconds:g} s is not a whole number (>= 1) of {row_interval_s:g} s rows")
    return round(n)


def row_interval_from_features(features: dict[str, Any] | None) -> float | None:
    """Seconds between rows of a model's features (``Manifest.features``), None if the rows
    follow the feed's own event clock or the manifest does not say."""
    if not features or "kind" not in features:
        return None
    if "spec" in features:
        return FeatureSpec.from_dict(features["spec"]).row_interval_s(str(features["kind"]))
    label = str(features.get("interval", ""))  # e.g. vectors read back from the store: "1s", "candle60s"
    if features["kind"] in ("block", "candle") and label.endswith("s"):
        try:
            return float(label.removeprefix("candle")[:-1])
        except ValueError:
            return None
    return None


def training_clock(features: dict[str, Any] | None, seq_len: int, horizon: int) -> dict[str, Any]:
    """The manifest's ``clock`` section for a model trained on ``features`` rows ({} when the
    rows have no fixed clock)."""
    row = row_interval_from_features(features)
    if row is None:
        return {}
    return ModelClock(row_interval_s=row, seq_len_s=seq_len * row, horizon_s=horizon * row, max_gap_s=row).to_dict()


def model_clock(manifest: Any) -> ModelClock:
    """The clock a model must be served on (``manifest``: a :class:`predictor.artifact.Manifest`);
    raises :class:`ClockError` (one clear line) when it has none."""
    clock = getattr(manifest, "clock", None) or {}
    if clock:
        try:
            mc = ModelClock(
                row_interval_s=float(clock["row_interval_s"]),
                seq_len_s=float(clock["seq_len_s"]),
                horizon_s=float(clock["horizon_s"]),
                max_gap_s=float(clock["max_gap_s"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClockError(f"model {manifest.model_id}: bad clock section {clock!r} ({exc})") from exc
        if mc.seq_len != int(manifest.seq_len):
            raise ClockError(
                f"model {manifest.model_id}: clock says {mc.seq_len_s:g} s windows = {mc.seq_len} rows "
                f"but seq_len is {manifest.seq_len}"
            )
        return mc
    row = row_interval_from_features(manifest.features)
    if row is None:
        kind = (manifest.features or {}).get("kind", "unknown")
        raise ClockError(
            f"model {manifest.model_id} counts its window ({manifest.seq_len} rows) and horizon in rows of "
            f"{kind!r} features with no fixed clock (one row per book), so its seconds depend on the feed; "
            f"retrain it on a sampled clock (FeatureSpec.sample_interval_s)"
        )
    horizon = int((manifest.label or {}).get("horizon", 0))
    return ModelClock(
        row_interval_s=row,
        seq_len_s=int(manifest.seq_len) * row,
        horizon_s=horizon * row,
        max_gap_s=row,
        source="converted from rows",
    )
