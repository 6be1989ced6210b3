"""ReplicaPool's bookkeeping (gateway/triton_replicas.py) with a scripted resolver: which
replicas exist after each resolution, and who gets the next call. Real calls over real
servers are in tests/test_replicas.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.metrics import GatewayMetrics
from gateway.settings import TritonSettings
from gateway.triton_address import join_host_port, split_host_port
from gateway.triton_replicas import ReplicaPool
from tests.fixtures.ports import free_port


def _closed_ports(n: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(n)]


class ScriptedResolver:
    def __init__(self) -> None:
        self.answer: list[str] | OSError = []
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if isinstance(self.answer, OSError):
            raise self.answer
        return list(self.answer)


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def _settings(**values: object) -> TritonSettings:
    # Checks far apart: the test drives resolution itself.
    return TritonSettings.model_validate({"health_interval_s": 3600, "connect_timeout_s": 0.5, **values})


def test_dns_target_follows_what_the_name_resolves_to() -> None:
    a, b, c = _closed_ports(3)
    resolver = ScriptedResolver()
    resolver.answer = [a, b]

    async def body() -> None:
        metrics = GatewayMetrics()
        pool = ReplicaPool(_settings(url="dns:///triton:8001"), metrics, ["m"], resolver=resolver)
        first = await pool.pick()  # waits for the first resolution
        assert first is not None and {r.address for r in pool.replicas} == {a, b}
        resolver.answer = [b, c]
        await pool.resolve()
        assert [r.address for r in pool.replicas] == [b, c]
        resolver.answer = OSError("temporary DNS failure")
        await pool.resolve()  # a failed lookup keeps what we have
        assert [r.address for r in pool.replicas] == [b, c]
        resolver.answer = []
        await pool.resolve()  # so does an empty answer
        assert [r.address for r in pool.replicas] == [b, c]
        await pool.close()

    _run(body)


def test_round_robin_prefers_ready_replicas_and_never_refuses_when_none_is() -> None:
    addresses = _closed_ports(3)

    async def body() -> None:
        pool = ReplicaPool(_settings(addresses=addresses), GatewayMetrics(), ["m"])
        picks = [(await pool.pick()).address for _ in range(6)]  # type: ignore[union-attr]
        assert sorted(picks) == sorted(addresses * 2)  # each twice: round-robin
        first, second, third = pool.replicas
        pool.mark_failed(second, "test")
        picks = {(await pool.pick()).address for _ in range(6)}  # type: ignore[union-attr]
        assert picks == {first.address, third.address}
        other = await pool.pick(exclude={first.address})
        assert other is not None and other.address == third.address
        for replica in pool.replicas:
            pool.mark_failed(replica, "test")
        assert await pool.pick() is not None  # a stale "out" never refuses a call by itself
        assert await pool.pick(exclude=set(addresses)) is None
        ready, reason = await pool.check()  # nobody listens on these ports
        assert not ready and all(address in reason for address in addresses), reason
        await pool.close()

    _run(body)


def test_addresses_parse_and_settings_refuse_bad_targets() -> None:
    assert split_host_port("10.0.0.5:8001") == ("10.0.0.5", 8001)
    assert split_host_port("[fd00::5]:8001") == ("fd00::5", 8001)
    assert join_host_port("fd00::5", 8001) == "[fd00::5]:8001"
    assert TritonSettings(url="dns:///canary-qwen-triton:8001").url.startswith("dns:///")
    for bad in ("triton", "triton:http", "dns://8.8.8.8/triton:8001", "triton:0"):
        with pytest.raises(ValueError):
            TritonSettings(url=bad)
    with pytest.raises(ValueError):
        TritonSettings(addresses=["10.0.0.5"])


def test_the_real_resolver_lists_every_address_of_a_name() -> None:
    from gateway.triton_replicas import resolve_addresses

    addresses = asyncio.run(resolve_addresses("localhost", 8001))
    assert "127.0.0.1:8001" in addresses and addresses == sorted(set(addresses))
    assert all(split_host_port(a)[1] == 8001 for a in addresses)
