"""Triton replicas: one gRPC channel per Triton server, picked round-robin among the ready ones.

gRPC's own ``round_robin`` policy over a ``dns:///`` target would spread calls too, but it
hides which server took each call: the gateway could then neither retry a failed call on
*another* server nor count calls per server. So the gateway resolves the target itself:

- ``host:port``: one replica (gRPC resolves the name, as a plain channel does);
- ``dns:///host:port``: one replica per address the name resolves to, resolved again every
  ``resolve_interval_s`` (a Kubernetes headless Service answers with its ready pods' IPs);
- ``addresses``: a static list of ``host:port`` (hosts without service discovery).

A background task checks every replica's readiness every ``health_interval_s``. Calls go
round-robin to the replicas last seen ready; when none is, to all of them (a stale check
must never be what refuses a call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import KeepAliveOptions
from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway.metrics import GatewayMetrics
from gateway.settings import TritonSettings
from gateway.triton_address import DNS_SCHEME, join_host_port, split_host_port

log = logging.getLogger(__name__)

_KEEPALIVE = KeepAliveOptions()
# tritonclient's own defaults, plus a short reconnect backoff: gRPC's default grows to
# 120 s, so a replica that comes back after a minute would sit idle for another minute.
CHANNEL_ARGS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", int(_KEEPALIVE.keepalive_permit_without_calls)),
    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

# (host, port) -> "host:port" addresses; tests pass their own.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every TCP address ``host`` resolves to (the event loop's resolver runs in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({join_host_port(str(info[4][0]), port) for info in infos})


def status_of(exc: BaseException) -> str:
    """The gRPC status of a Triton call's failure as text ("StatusCode.UNAVAILABLE"), or ""."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code())
    if isinstance(exc, InferenceServerException):
        return str(exc.status() or "")
    return ""


@dataclass(eq=False)
class Replica:
    """One Triton server and the channel to it."""

    address: str
    client: InferenceServerClient
    # None until the first check: usable, like a ready one.
    ready: bool | None = None
    reason: str = "not checked yet"
    in_flight: int = 0
    # (model, status) label pairs this replica's counters were given: removed with it.
    series: set[tuple[str, str]] = field(default_factory=set)


class ReplicaPool:
    """The replicas of one Triton target, their health, and which one takes the next call."""

    def __init__(
        self,
        settings: TritonSettings,
        metrics: GatewayMetrics,
        models: Sequence[str],
        resolver: Resolver = resolve_addresses,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models = tuple(models)
        self._resolver = resolver
        self._replicas: list[Replica] = []
        self._retired: list[Replica] = []
        self._turn = 0
        self._dns: tuple[str, int] | None = None
        self._resolved = asyncio.Event()
        if settings.addresses:
            self._set_addresses(list(dict.fromkeys(settings.addresses)))
        elif settings.url.startswith(DNS_SCHEME):
            self._dns = split_host_port(settings.url.removeprefix(DNS_SCHEME))
        else:
            self._set_addresses([settings.url])
        if self._dns is None:
            self._resolved.set()
        # Created inside the running loop (the app's lifespan), like the channels.
        self._task = asyncio.get_running_loop().create_task(self._maintain(), name="triton-replicas")

    @property
    def replicas(self) -> list[Replica]:
        return list(self._replicas)

    async def pick(self, exclude: Collection[str] = ()) -> Replica | None:
        """The next replica round-robin (ready ones first), or None when there is no other."""
        if not self._resolved.is_set():  # dns:/// before its first answer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resolved.wait(), self._settings.connect_timeout_s)
        candidates = [r for r in self._replicas if r.address not in exclude]
        usable = [r for r in candidates if r.ready is not False] or candidates
        if not usable:
            return None
        self._turn += 1
        return usable[self._turn % len(usable)]

    def mark_failed(self, replica: Replica, reason: str) -> None:
        """Stop sending to a replica that failed a call until a check sees it ready again."""
        self._set_ready(replica, False, reason)

    @contextlib.contextmanager
    def track(self, replica: Replica, model: str) -> Iterator[None]:
        """Count one call on ``replica``: in flight while inside, then its outcome and latency."""
        m = self._metrics
        replica.in_flight += 1
        m.triton_replica_in_flight.labels(replica=replica.address).inc()
        started = time.perf_counter()
        status = "ok"
        try:
            yield
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            status = status_of(exc) or "error"
            raise
        except BaseException:
            status = "cancelled"  # the caller went away (client disconnect, generator closed)
            raise
        finally:
            replica.in_flight -= 1
            m.triton_replica_in_flight.labels(replica=replica.address).dec()
            replica.series.add((model, status))
            m.triton_replica_requests.labels(replica=replica.address, model=model, status=status).inc()
            m.triton_replica_latency.labels(replica=replica.address, model=model).observe(
                time.perf_counter() - started
            )

    async def check(self, models: Sequence[str] | None = None) -> tuple[bool, str]:
        """Check every replica now; (at least one ready, why / why not)."""
        replicas = list(self._replicas)
        if not replicas:
            target = self._settings.url if self._dns else ", ".join(self._settings.addresses)
            return False, f"Triton unreachable: {target} resolves to no address"
        wanted = self._models if models is None else tuple(models)
        reasons = await asyncio.gather(*(self._check_one(r, wanted) for r in replicas))
        for replica, reason in zip(replicas, reasons, strict=True):
            if replica in self._replicas:  # not removed while we waited
                self._set_ready(replica, reason is None, reason or "ready")
        ready = sum(reason is None for reason in reasons)
        if ready:
            return True, f"ready ({ready} of {len(replicas)} Triton replicas)"
        if len(replicas) == 1:
            return False, str(reasons[0])
        return False, "no Triton replica is ready: " + "; ".join(
            f"{r.address}: {reason}" for r, reason in zip(replicas, reasons, strict=True)
        )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for replica in [*self._replicas, *self._retired]:
            await replica.client.close()
        self._replicas, self._retired = [], []

    # ---------------------------------------------------------------- internals

    async def _check_one(self, replica: Replica, models: Sequence[str]) -> str | None:
        """None when ready, else why not."""
        timeout = self._settings.connect_timeout_s
        client = replica.client
        try:
            if not await client.is_server_ready(client_timeout=timeout):
                return "Triton is not ready"
            for model in models:
                if not await client.is_model_ready(model, client_timeout=timeout):
                    return f"model {model} is not ready"
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            return f"Triton unreachable: {status_of(exc) or exc}"
        return None

    def _set_ready(self, replica: Replica, ready: bool, reason: str) -> None:
        if replica.ready is not None and replica.ready != ready:
            log.warning("Triton replica %s is %s (%s)", replica.address, "ready" if ready else "out", reason)
        replica.ready, replica.reason = ready, reason
        self._metrics.triton_replica_ready.labels(replica=replica.address).set(1 if ready else 0)

    def _set_addresses(self, addresses: Sequence[str]) -> None:
        """Keep the replicas still listed, add new ones, retire the rest (closed once idle)."""
        current = {r.address: r for r in self._replicas}
        kept: list[Replica] = []
        for address in addresses:
            replica = current.pop(address, None)
            if replica is None:
                replica = Replica(address, InferenceServerClient(url=address, channel_args=CHANNEL_ARGS))
                log.info("Triton replica %s added", address)
            kept.append(replica)
        for gone in current.values():
            log.info("Triton replica %s removed (no longer resolved)", gone.address)
            self._retired.append(gone)
        self._replicas = kept

    async def resolve(self) -> None:
        """Resolve the dns:/// name now: add new addresses, retire those gone."""
        assert self._dns is not None
        host, port = self._dns
        try:
            addresses = await self._resolver(host, port)
        except OSError as exc:  # keep the replicas we have: DNS hiccups must not empty the pool
            log.warning("resolving Triton %s failed: %s", self._settings.url, exc)
            return
        finally:
            self._resolved.set()
        if addresses:
            self._set_addresses(addresses)
        else:
            log.warning("Triton %s resolved to no address; keeping %d replicas", self._settings.url,
                        len(self._replicas))

    async def _close_idle_retired(self) -> None:
        still: list[Replica] = []
        for replica in self._retired:
            if replica.in_flight:
                still.append(replica)
                continue
            await replica.client.close()
            self._forget_metrics(replica)
        self._retired = still

    def _forget_metrics(self, replica: Replica) -> None:
        m, address = self._metrics, replica.address
        for metric in (m.triton_replica_ready, m.triton_replica_in_flight):
            with contextlib.suppress(KeyError):
                metric.remove(address)
        for model, status in replica.series:
            with contextlib.suppress(KeyError):
                m.triton_replica_requests.remove(address, model, status)
            with contextlib.suppress(KeyError):
                m.triton_replica_latency.remove(address, model)

    async def _maintain(self) -> None:
        """Resolve (dns:/// only) and check every replica, forever."""
        next_resolve = 0.0
        while True:
            try:
                if self._dns is not None and time.monotonic() >= next_resolve:
                    await self.resolve()
                    next_resolve = time.monotonic() + self._settings.resolve_interval_s
                await self.check()
                await self._close_idle_retired()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad round
                log.exception("Triton replica maintenance failed")
            await asyncio.sleep(self._settings.health_interval_s)
