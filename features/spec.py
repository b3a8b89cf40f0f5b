"""FeatureSpec: which features, depths and windows are computed, and its stable hash.

The hash (first 16 hex chars of sha256 over the canonical JSON of the spec) travels in every
FeatureVector and in every trained model; :func:`check_spec_hash` refuses a mismatch loudly.
Changing any field (or ``version``, bumped when a formula changes) changes the hash.

Column layout is fixed by :func:`feature_names` (per snapshot), :func:`aggregate_names`
(per time block) and :func:`candle_names` (candle indicators); the kernels write columns in
exactly that order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FeatureSpec",
    "SpecError",
    "SpecMismatchError",
    "DEFAULT_DEPTHS",
    "feature_names",
    "aggregate_names",
    "candle_names",
    "check_spec_hash",
    "FEATURE_FORMULA_VERSION",
    "DEFAULT_MAX_GAP_S",
]

# Bump when any formula changes meaning: old models then refuse the new features.
FEATURE_FORMULA_VERSION = 1

DEFAULT_MAX_GAP_S = 10.0
# fields left out of the canonical JSON (and so of the hash) while at their default, so that
# specs written before the field existed keep their hash
_HASH_OPTIONAL = {"sample_interval_s": 0.0, "max_gap_s": DEFAULT_MAX_GAP_S}

DEFAULT_DEPTHS: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250)

# per-depth columns, in order, for each depth d
PER_DEPTH = ("bid_vol", "ask_vol", "vol_ratio", "bid_dist_pct", "ask_dist_pct", "depth_ok")
# scalar per-snapshot columns, in order
SCALARS = (
    "mid",
    "spread",
    "spread_bps",
    "microprice",
    "micro_dev_bps",
    "imb_top",
    "imb_dw",
    "ofi",
    "n_bid_levels",
    "n_ask_levels",
)


class SpecError(ValueError):
    """A FeatureSpec is invalid or its features do not match what a consumer expects."""


class SpecMismatchError(SpecError):
    """Features were produced by a different FeatureSpec than the consumer was built for."""

    def __init__(self, expected: str, actual: str, where: str = "") -> None:
        self.expected = expected
        self.actual = actual
        msg = (
            f"feature spec mismatch{(' in ' + where) if where else ''}: expected spec_hash {expected!r}, got {actual!r}"
        )
        super().__init__(msg)


def _ints(xs: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the feature columns and their values.

    Book features
      depths          cumulative-volume depths in levels (sorted, unique, >= 1). When a side has
                      fewer levels than ``d`` the value is computed over the levels available
                      and ``depth_ok_d`` is 0.0 (1.0 when both sides have >= d levels).
      dwi_levels      levels used by the depth-weighted imbalance (weights 1/(i+1), i = 0..).
    Time aggregation
      interval_s      block length in seconds (>= 1); default 60.
      change_features per-snapshot base names whose last-value change between blocks is
                      emitted (``d_<name>``; seed system's dvol/dvor).
    Candle indicators (windows in bars)
      sma_windows, ewma_spans, cci_window, evm_window, bb_window/bb_k, force_span, roc_window
      evm_volume_scale  EMV = (midpoint move) * (high-low) * scale / volume
      vol_bench_window  bars in the rolling benchmark of volume (1440 = one day of 1 m bars),
                        vol_bench_min_periods bars needed before it is defined
    Anomaly
      anomaly_window / anomaly_min_periods / anomaly_threshold: robust z-score over the
      previous ``anomaly_window`` values (current value excluded), |z| >= threshold -> event.
    """

    depths: tuple[int, ...] = DEFAULT_DEPTHS
    dwi_levels: int = 10
    interval_s: float = 60.0
    change_features: tuple[str, ...] = ("bid_vol", "ask_vol", "vol_ratio")
    sma_windows: tuple[int, ...] = (5, 20, 60)
    ewma_spans: tuple[int, ...] = (12, 26)
    cci_window: int = 20
    evm_window: int = 14
    evm_volume_scale: float = 1.0
    bb_window: int = 20
    bb_k: float = 2.0
    force_span: int = 13
    roc_window: int = 10
    vol_bench_window: int = 1440
    vol_bench_min_periods: int = 60
    anomaly_window: int = 240
    anomaly_min_periods: int = 30
    anomaly_threshold: float = 6.0
    version: int = FEATURE_FORMULA_VERSION
    # Clock (see features.clock). 0 = event clock (one row per snapshot); > 0 = books sampled on a
    # fixed clock: the row at tick k*sample_interval_s is the last book at or before it.
    sample_interval_s: float = 0.0
    # No snapshot for longer than this (or a held book older than this at a tick) is a feed gap:
    # per-symbol state (OFI, block change baseline) restarts after it.
    max_gap_s: float = DEFAULT_MAX_GAP_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", _ints(self.depths))
        object.__setattr__(self, "sma_windows", _ints(self.sma_windows))
        object.__setattr__(self, "ewma_spans", _ints(self.ewma_spans))
        object.__setattr__(self, "change_features", tuple(str(x) for x in self.change_features))
        d = self.depths
        if not d or any(x < 1 for x in d) or list(d) != sorted(set(d)):
            raise SpecError(f"depths must be non-empty, sorted, unique, >= 1; got {d}")
        for name in (
            "dwi_levels",
            "cci_window",
            "evm_window",
            "bb_window",
            "force_span",
            "roc_window",
            "vol_bench_window",
            "vol_bench_min_periods",
            "anomaly_window",
            "anomaly_min_periods",
        ):
            if int(getattr(self, name)) < 1:
                raise SpecError(f"{name} must be >= 1; got {getattr(self, name)}")
        if any(w < 1 for w in self.sma_windows) or any(s < 1 for s in self.ewma_spans):
            raise SpecError("sma_windows and ewma_spans must be >= 1")
        if not (self.interval_s >= 1.0):
            raise SpecError(f"interval_s must be >= 1 s; got {self.interval_s}")
        if not (self.sample_interval_s >= 0.0) or (0.0 < self.sample_interval_s < 0.001):
            raise SpecError(f"sample_interval_s must be 0 (event clock) or >= 0.001 s; got {self.sample_interval_s}")
        if not (self.max_gap_s > 0.0) or self.max_gap_s < self.sample_interval_s:
            raise SpecError(f"max_gap_s must be > 0 and >= sample_interval_s; got {self.max_gap_s}")
        if self.sample_interval_s and self.interval_ns % self.sample_interval_ns:
            raise SpecError(
                f"interval_s {self.interval_s} must be a multiple of sample_interval_s "
                f"{self.sample_interval_s} (blocks are built from sampled rows)"
            )
        if self.vol_bench_min_periods > self.vol_bench_window:
            raise SpecError("vol_bench_min_periods must be <= vol_bench_window")
        if self.anomaly_min_periods > self.anomaly_window:
            raise SpecError("anomaly_min_periods must be <= anomaly_window")
        unknown = set(self.change_features) - set(PER_DEPTH[:3]) - set(SCALARS)
        if unknown:
            raise SpecError(f"change_features has unknown names {sorted(unknown)}")

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
            if not (k in _HASH_OPTIONAL and v == _HASH_OPTIONAL[k])
        }

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise SpecError(f"unknown FeatureSpec fields {sorted(extra)}")
        return cls(**d)

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def interval_ns(self) -> int:
        return int(round(self.interval_s * 1e9))

    @property
    def sample_interval_ns(self) -> int:
        """Row clock of sampled specs in ns (0 = event clock)."""
        return int(round(self.sample_interval_s * 1e9))

    @property
    def max_gap_ns(self) -> int:
        return int(round(self.max_gap_s * 1e9))

    def row_interval_s(self, kind: str) -> float | None:
        """Seconds between consecutive rows of feature ``kind`` (snapshot/block/candle), or None
        when rows follow the feed's own event clock (unsampled snapshots)."""
        if kind == "snapshot":
            return self.sample_interval_s or None
        return float(self.interval_s)


def feature_names(spec: FeatureSpec) -> list[str]:
    """Per-snapshot columns (the output of batch_features / StreamingFeatures.update)."""
    names = [f"{p}_{d}" for d in spec.depths for p in PER_DEPTH]
    names.extend(SCALARS)
    return names


def change_columns(spec: FeatureSpec) -> list[str]:
    """Per-snapshot columns whose between-block change is emitted, in order."""
    out: list[str] = []
    for base in spec.change_features:
        if base in SCALARS:
            out.append(base)
        else:
            out.extend(f"{base}_{d}" for d in spec.depths)
    return out


def aggregate_names(spec: FeatureSpec) -> list[str]:
    """Per-block columns: n_snapshots, mean_<f>..., last_<f>..., d_<f> for change columns."""
    base = feature_names(spec)
    return (
        ["n_snapshots"]
        + [f"mean_{n}" for n in base]
        + [f"last_{n}" for n in base]
        + [f"d_{n}" for n in change_columns(spec)]
    )


def candle_names(spec: FeatureSpec) -> list[str]:
    names = ["ret_log"]
    names += [f"sma_{w}" for w in spec.sma_windows]
    names += [f"close_sma_{w}_pct" for w in spec.sma_windows]
    names += [f"ewma_{s}" for s in spec.ewma_spans]
    names += [f"close_ewma_{s}_pct" for s in spec.ewma_spans]
    names += [f"cci_{spec.cci_window}", f"evm_{spec.evm_window}"]
    w = spec.bb_window
    names += [f"bb_mid_{w}", f"bb_upper_{w}", f"bb_lower_{w}", f"bb_width_{w}", f"bb_pctb_{w}"]
    names += [f"force_{spec.force_span}", f"roc_{spec.roc_window}"]
    names += [f"vol_rel_{spec.vol_bench_window}", f"vol_z_{spec.anomaly_window}"]
    return names


def check_spec_hash(expected: "str | FeatureSpec", actual: "str | FeatureSpec", where: str = "") -> None:
    """Raise :class:`SpecMismatchError` (naming both hashes) unless the two specs/hashes agree."""
    e = expected.hash if isinstance(expected, FeatureSpec) else str(expected)
    a = actual.hash if isinstance(actual, FeatureSpec) else str(actual)
    if e != a:
        raise SpecMismatchError(e, a, where)
