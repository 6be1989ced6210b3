"""Closed-loop load: N workers, each sends its next request as soon as the last one answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Job = TypeVar("Job")


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    audio_s: float
    wall_s: float
    latencies_s: list[float]  # per request, from its send to its answer
    tokens: int  # generated tokens where the path reports them, else 0


@dataclass(frozen=True)
class Timed(Generic[Job]):
    job: Job
    audio_s: float


async def run_load(
    jobs: Sequence[Timed[Job]],
    call: Callable[[Job], Awaitable[int]],
    concurrency: int,
) -> LoadResult:
    """Run every job once with `concurrency` in flight. `call` returns generated tokens (or 0).

    Any failed request aborts the run: a benchmark over errors would flatter the figures.
    """
    queue: asyncio.Queue[Timed[Job]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            sent = time.perf_counter()
            produced = await call(item.job)  # not `tokens += await ...`: that reads tokens before the await
            tokens += produced
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(jobs))):
            group.create_task(worker())
    wall = time.perf_counter() - started
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies),
        audio_s=sum(job.audio_s for job in jobs),
        wall_s=wall,
        latencies_s=latencies,
        tokens=tokens,
    )


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs of one path as one: totals of audio and wall time, all latencies."""
    if not results:
        raise ValueError("nothing to merge")
    return LoadResult(
        concurrency=results[0].concurrency,
        requests=sum(r.requests for r in results),
        audio_s=sum(r.audio_s for r in results),
        wall_s=sum(r.wall_s for r in results),
        latencies_s=[latency for r in results for latency in r.latencies_s],
        tokens=sum(r.tokens for r in results),
    )
