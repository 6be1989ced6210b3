"""Pure arithmetic of the report: percentiles and real-time factors."""

from __future__ import annotations

import math
from collections.abc import Sequence


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
