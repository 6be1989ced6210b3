"""Pure arithmetic of the report: percentiles, real-time factors, bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rtfx(audio_seconds: float, wall_seconds: float) -> float:
    """Audio seconds processed per wall (or CPU) second: higher is faster."""
    if wall_seconds <= 0:
        raise ValueError("elapsed time must be positive")
    return audio_seconds / wall_seconds


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


# --- Intervals over rounds -------------------------------------------------------------
# Each figure comes from rounds (one pass over the corpus per arm and concurrency); rounds
# are resampled with replacement, pairs kept together, and the 2.5 / 97.5 percentiles of
# the resampled statistic give a 95 % percentile-bootstrap interval.
BOOTSTRAP_RESAMPLES = 4000
MIN_ROUNDS = 3  # below this a bootstrap interval says nothing: reported as none
_BOOTSTRAP_SEED = 16


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % bootstrap interval over rounds."""

    value: float
    low: float | None  # None with fewer than MIN_ROUNDS rounds: no spread to speak of
    high: float | None
    rounds: int

    @property
    def bounds(self) -> list[float] | None:
        return None if self.low is None or self.high is None else [self.low, self.high]

    def as_dict(self, digits: int = 3) -> dict[str, Any]:
        bounds = self.bounds
        return {
            "value": round(self.value, digits),
            "ci95": None if bounds is None else [round(b, digits) for b in bounds],
            "rounds": self.rounds,
        }


def _resample_indices(rounds: int, resamples: int, seed: int) -> np.ndarray:
    if rounds <= 0:
        raise ValueError("no rounds to resample")
    return np.random.default_rng(seed).integers(0, rounds, size=(resamples, rounds))


def _interval(value: float, resampled: np.ndarray, rounds: int) -> Interval:
    if rounds < MIN_ROUNDS:
        return Interval(float(value), None, None, rounds)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Interval(float(value), float(low), float(high), rounds)


def rate_interval(
    amounts: Sequence[float], seconds: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _BOOTSTRAP_SEED
) -> Interval:
    """sum(amounts) / sum(seconds) (e.g. RTFx: audio s per wall s) over rounds."""
    a, s = np.asarray(amounts, dtype=float), np.asarray(seconds, dtype=float)
    if a.shape != s.shape:
        raise ValueError("amounts and seconds differ in length")
    idx = _resample_indices(a.size, resamples, seed)
    return _interval(a.sum() / s.sum(), a[idx].sum(axis=1) / s[idx].sum(axis=1), a.size)


def rate_ratio_interval(
    numerator: tuple[Sequence[float], Sequence[float]],
    denominator: tuple[Sequence[float], Sequence[float]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = _BOOTSTRAP_SEED,
) -> Interval:
    """(rate of numerator) / (rate of denominator), each rate a sum(amounts) / sum(seconds).

    Round i of both arms ran side by side (one ABBA slot), so they are resampled as a pair:
    drifts of the shared machine that hit both arms cancel in the ratio.
    """
    na, ns = (np.asarray(v, dtype=float) for v in numerator)
    da, ds = (np.asarray(v, dtype=float) for v in denominator)
    if not na.size == ns.size == da.size == ds.size:
        raise ValueError("paired rounds differ in count")
    idx = _resample_indices(na.size, resamples, seed)
    value = (na.sum() / ns.sum()) / (da.sum() / ds.sum())
    resampled = (na[idx].sum(axis=1) / ns[idx].sum(axis=1)) / (da[idx].sum(axis=1) / ds[idx].sum(axis=1))
    return _interval(value, resampled, na.size)


def percentile_interval(
    rounds: Sequence[Sequence[float]], q: float, *, resamples: int = 1000, seed: int = _BOOTSTRAP_SEED
) -> Interval:
    """The q-th percentile of all rounds' values pooled, resampling whole rounds."""
    pooled = [v for values in rounds for v in values]
    idx = _resample_indices(len(rounds), resamples, seed)
    arrays = [np.asarray(values, dtype=float) for values in rounds]
    resampled = np.array([np.percentile(np.concatenate([arrays[i] for i in row]), q) for row in idx])
    return _interval(percentile(pooled, q), resampled, len(rounds))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.size < 2 or x.size != y.size:
        raise ValueError("a slope needs two or more paired points")
    dx = x - x.mean()
    denominator = float(np.sum(dx * dx))
    if denominator == 0:
        raise ValueError("all xs are equal")
    return float(np.sum(dx * (y - y.mean())) / denominator)


def slope_interval(xs: Sequence[float], ys: Sequence[float]) -> Interval:
    """Least-squares slope with its 95 % interval from the residuals (Student's t with n - 2
    degrees of freedom); no interval below MIN_ROUNDS points. `rounds` is the point count."""
    from scipy.stats import t as student_t  # only the soak needs it

    value = slope(xs, ys)
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.size < MIN_ROUNDS:
        return Interval(value, None, None, int(x.size))
    dx = x - x.mean()
    residuals = y - y.mean() - value * dx
    error = math.sqrt(float(np.sum(residuals**2)) / (x.size - 2) / float(np.sum(dx * dx)))
    half = float(student_t.ppf(0.975, x.size - 2)) * error
    return Interval(value, value - half, value + half, int(x.size))
