"""Readiness: at least one Triton replica up with every ensemble loaded (the check is
TritonClient.models_ready over all replicas), cached briefly so probes and load balancers
polling /health/ready do not hammer Triton."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


class ReadinessProbe:
    def __init__(
        self,
        check: Callable[[Sequence[str]], Awaitable[tuple[bool, str]]],
        models: Sequence[str],
        cache_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._models = tuple(models)
        self._cache_s = cache_s
        self._clock = clock
        self._last: Readiness | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Readiness:
        async with self._lock:  # concurrent probes share one Triton round trip
            if self._last is None or self._clock() - self._checked_at >= self._cache_s:
                ready, reason = await self._check(self._models)
                self._last = Readiness(ready, reason)
                self._checked_at = self._clock()
            return self._last
