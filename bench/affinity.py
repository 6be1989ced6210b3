"""CPU pinning for the load runs, the same for both arms.

The load generator's CPU cost differs by arm (httpx multipart vs. gRPC with float32 arrays),
and left free it would spread over whichever core is idle. Pinned, it competes for exactly
one core in both arms, and the services for the same set:

- 3 or more usable CPUs: the client alone on the last one, the services on the rest;
- 2 CPUs: the services on both, the client on the last (it shares that core in both arms,
  never both cores);
- 1 CPU: nothing to pin.

Affinity is inherited: the services are started while this process holds the services'
set, and the client's set is taken afterwards, before any client thread (gRPC's) exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuPlan:
    services: frozenset[int]
    client: frozenset[int]

    @property
    def shared(self) -> bool:
        return bool(self.services & self.client)

    def describe(self) -> dict[str, object]:
        return {
            "services": sorted(self.services),
            "client": sorted(self.client),
            "client_shares_a_service_cpu": self.shared,
        }


def plan(usable: Sequence[int]) -> CpuPlan:
    cpus = sorted(set(usable))
    if not cpus:
        raise ValueError("no usable CPU")
    if len(cpus) >= 3:
        return CpuPlan(frozenset(cpus[:-1]), frozenset(cpus[-1:]))
    return CpuPlan(frozenset(cpus), frozenset(cpus[-1:]))


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_self(cpus: frozenset[int]) -> None:
    """Pin the calling thread (and every thread or process it starts from now on)."""
    os.sched_setaffinity(0, cpus)
