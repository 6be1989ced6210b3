"""Load spread over two real Triton replicas, and failover: one gateway in front of two
tritonservers on 127.0.0.2 and 127.0.0.3 (same cpu-tier repository, same ports, as pods of
a headless Service would be), given as the static `GATEWAY_TRITON__ADDRESSES` list.

Counts are read from each Triton's own metrics (what the server really ran), not only from
the gateway's. The servers start once for the module; the kill test restarts the one it kills.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from launcher import TritonServer
from tests.fixtures.gateway import MODEL_ID, GatewayProcess, run_gateway, wait_ready
from tests.fixtures.ports import free_port
from tests.fixtures.triton import log_tail, triton_settings

HOSTS = ("127.0.0.2", "127.0.0.3")
ASR_MODEL = "canary_qwen"
REQUESTS = 64
CONCURRENCY = 4
START_TIMEOUT_S = 900  # two servers loading at once on a busy 2-core machine
TRANSCRIBE = "/v1/audio/transcriptions"
# The first test also waits for the model build and both servers' start-up; the kill test for a restart.
pytestmark = pytest.mark.timeout(2 * START_TIMEOUT_S + 600)


def _free_on_every_host() -> int:
    """A port free on every loopback address of HOSTS (replicas share ports, like pods)."""
    while True:
        port = free_port()
        try:
            for host in HOSTS:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port


@pytest.fixture(scope="module")
def replicas(model_repository_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonServer]]:
    ports = {name: _free_on_every_host() for name in ("http_port", "grpc_port", "metrics_port")}
    logs = tmp_path_factory.mktemp("replicas")
    servers = [
        TritonServer(model_repository_dir, triton_settings(host=host, **ports), log_path=logs / f"{host}.log")
        for host in HOSTS
    ]
    try:
        for server in servers:  # both load at once
            server.start()
        for server in servers:
            server.wait_ready(timeout=START_TIMEOUT_S)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def gateway(replicas: list[TritonServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    addresses = ",".join(f'"{server.grpc_url}"' for server in replicas)
    env = {
        "GATEWAY_TRITON__ADDRESSES": f"[{addresses}]",
        "GATEWAY_TRITON__HEALTH_INTERVAL_S": "0.5",
        "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": "8",  # short answers: the test is about routing
    }
    with run_gateway(env, tmp_path_factory.mktemp("replica_gateway") / "gateway.log") as process:
        wait_ready(process.base_url, timeout=120)
        yield process


@pytest.fixture(scope="module")
def speech(speech_factory: Callable[[str], Path]) -> bytes:
    return speech_factory("Two servers share the work.").read_bytes()


def _served(server: TritonServer) -> int:
    """Requests this Triton answered for the audio ensemble (its own counter)."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    found = re.search(rf'^nv_inference_request_success{{model="{ASR_MODEL}",version="1"}} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _served_since(servers: list[TritonServer], before: list[int], expected: int) -> list[int]:
    """Requests each server answered since `before`, once they add up to `expected`: Triton counts
    a request when its stats are recorded, which can come just after the response was sent."""
    deadline = time.monotonic() + 10
    while True:
        served = [_served(server) - b for server, b in zip(servers, before, strict=True)]
        if sum(served) >= expected or time.monotonic() > deadline:
            return served
        time.sleep(0.1)


def _gateway_metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _transcribe(base_url: str, audio: bytes) -> httpx.Response:
    return httpx.post(
        f"{base_url}{TRANSCRIBE}",
        data={"model": MODEL_ID},
        files={"file": ("speech.wav", audio, "audio/wav")},
        timeout=300,
    )


def _run_load(base_url: str, audio: bytes, count: int, on_done: Callable[[int], None] | None = None) -> list[int]:
    """`count` transcriptions, CONCURRENCY at a time; their status codes in completion order."""
    statuses: list[int] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        try:
            status = _transcribe(base_url, audio).status_code
        except httpx.TransportError:
            status = -1
        with lock:
            statuses.append(status)
            done = len(statuses)
        if on_done is not None:
            on_done(done)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(count)))
    return statuses


def _share_ok(part: int, whole: int) -> bool:
    return 0.3 * whole <= part <= 0.7 * whole


def test_requests_spread_over_both_replicas(
    replicas: list[TritonServer], gateway: GatewayProcess, speech: bytes
) -> None:
    before = [_served(server) for server in replicas]
    statuses = _run_load(gateway.base_url, speech, REQUESTS)
    assert statuses == [200] * REQUESTS, statuses
    served = _served_since(replicas, before, REQUESTS)
    assert sum(served) == REQUESTS, served
    assert all(_share_ok(n, REQUESTS) for n in served), f"uneven spread {served} of {REQUESTS}"
    # The gateway's per-replica counters tell the same story.
    for server, n in zip(replicas, served, strict=True):
        assert _gateway_metric(
            gateway, "gateway_triton_replica_requests_total", replica=server.grpc_url, model=ASR_MODEL, status="ok"
        ) >= n


def test_a_killed_replica_costs_no_request_and_is_used_again_when_back(
    replicas: list[TritonServer], gateway: GatewayProcess, speech: bytes
) -> None:
    survivor, victim = replicas
    warm = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        statuses.extend(_run_load(gateway.base_url, speech, 48, on_done=lambda done: done >= 8 and warm.set()))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert warm.wait(timeout=300), "the load did not get going"
        # Freeze it first, so calls are surely caught in flight on it, then SIGKILL it (an OOM kill).
        os.kill(victim.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while _gateway_metric(gateway, "gateway_triton_replica_in_flight", replica=victim.grpc_url) < 1:
            assert time.monotonic() < deadline, "no call reached the frozen replica"
            time.sleep(0.05)
        victim.kill()
    finally:
        loader.join(timeout=600)
    assert statuses == [200] * 48, f"client errors after a replica died: {statuses}"
    # The calls caught on the dead replica failed there and were answered by the other one.
    assert _gateway_metric(gateway, "gateway_triton_retries_total", model=ASR_MODEL) >= 1
    assert _gateway_metric(
        gateway, "gateway_triton_replica_requests_total", replica=victim.grpc_url, status="StatusCode.UNAVAILABLE"
    ) >= 1
    assert httpx.get(f"{gateway.base_url}/health/ready", timeout=10).status_code == 200  # one is enough
    assert _gateway_metric(gateway, "gateway_triton_replica_ready", replica=victim.grpc_url) == 0

    # Back on the same address: the gateway finds it without a restart.
    victim.start()
    try:
        victim.wait_ready(timeout=START_TIMEOUT_S)
    except Exception:
        pytest.fail(f"the restarted replica did not come up:\n{log_tail(victim.log_path)}")  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while _gateway_metric(gateway, "gateway_triton_replica_ready", replica=victim.grpc_url) != 1:
        assert time.monotonic() < deadline, "the gateway did not see the replica ready again"
        time.sleep(0.5)
    before = [0, _served(survivor)]  # the restarted one is a fresh process: counts from zero
    statuses = _run_load(gateway.base_url, speech, 16)
    assert statuses == [200] * 16, statuses
    back, rest = _served_since([victim, survivor], before, 16)
    assert back + rest == 16, (back, rest)
    assert _share_ok(back, 16), f"the replica that came back served {back} of 16"


def test_streams_go_through_the_replicas(gateway: GatewayProcess, speech: bytes) -> None:
    """Streamed transcription and chat take the same replica path (decoupled ensembles)."""
    response = httpx.post(
        f"{gateway.base_url}{TRANSCRIBE}",
        data={"model": MODEL_ID, "stream": "true"},
        files={"file": ("speech.wav", speech, "audio/wav")},
        timeout=300,
    )
    assert response.status_code == 200 and "transcript.text.done" in response.text, response.text
    chat = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": MODEL_ID, "stream": True, "max_completion_tokens": 4,
              "messages": [{"role": "user", "content": "hi"}]},
        timeout=300,
    )
    assert chat.status_code == 200 and "data: [DONE]" in chat.text, chat.text
    for model in ("canary_qwen_stream", "canary_qwen_chat"):
        assert _gateway_metric(gateway, "gateway_triton_replica_requests_total", model=model, status="ok") >= 1
