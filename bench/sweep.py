"""The load sweep: both arms (gateway, Triton direct) at every concurrency, in rounds.

One round runs every concurrency level once per arm, one pass over the corpus each.
Within a level the arms alternate in ABBA BAAB order across rounds (G T | T G | T G | G T),
and the levels' order flips every round, so a slow drift of the shared machine's load hits
both arms and all levels alike. Every run is kept: the report derives each figure and its
bootstrap interval from the per-round numbers, pairing the two arms of a round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.load import LoadResult, Timed, run_load

log = logging.getLogger("bench")

ARMS = ("gateway", "triton")


@dataclass
class ArmRuns:
    """Rounds of one arm at one concurrency, in round order, plus what they cost."""

    runs: list[LoadResult] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # Triton counter deltas, summed
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, summed

    def add(self, result: LoadResult, metrics: dict[str, dict[str, float]], cpu: dict[str, float]) -> None:
        self.runs.append(result)
        for name, seconds in cpu.items():
            self.cpu_s[name] = round(self.cpu_s.get(name, 0.0) + seconds, 2)
        for model, values in metrics.items():
            total = self.metrics.setdefault(model, {})
            for name, value in values.items():
                total[name] = total.get(name, 0.0) + value


Sweep = dict[tuple[str, int], ArmRuns]
Measure = Callable[[Callable[[], Awaitable[LoadResult]]], Awaitable[tuple[LoadResult, Any, dict[str, float]]]]


def arm_order(round_index: int) -> tuple[str, str]:
    """ABBA BAAB: rounds 0 and 3 start with the gateway, rounds 1 and 2 with Triton."""
    return ARMS if round_index % 4 in (0, 3) else (ARMS[1], ARMS[0])


def level_order(levels: Sequence[int], round_index: int) -> list[int]:
    """Ascending in even rounds, descending in odd ones."""
    ordered = sorted(levels)
    return ordered if round_index % 2 == 0 else ordered[::-1]


def passes_for(level: int, corpus_size: int) -> int:
    """Passes over the corpus so every worker of this level has at least one request."""
    return max(1, math.ceil(level / corpus_size))


def schedule(levels: Sequence[int], rounds: int) -> list[tuple[int, int, str]]:
    """(round, level, arm) in the order they run."""
    return [
        (r, level, arm) for r in range(rounds) for level in level_order(levels, r) for arm in arm_order(r)
    ]


async def run_sweep(
    levels: Sequence[int],
    rounds: int,
    jobs_for: Callable[[int], list[Timed[Any]]],
    calls: dict[str, Callable[[Any], Awaitable[int]]],
    measure: Measure,
) -> Sweep:
    """Every (round, level, arm) of `schedule`, measured; `jobs_for(level)` gives a round's jobs."""
    sweep: Sweep = {(arm, level): ArmRuns() for level in levels for arm in ARMS}
    for round_index, level, arm in schedule(levels, rounds):
        work = jobs_for(level)
        log.info("round %d/%d: %s at concurrency %d, %d requests", round_index + 1, rounds, arm, level, len(work))
        call = calls[arm]
        result, metrics, cpu = await measure(lambda: run_load(work, call, level))
        sweep[(arm, level)].add(result, metrics, cpu)
    return sweep
