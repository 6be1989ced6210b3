"""Realtime session limits, on a gateway of their own (tiny limits) in front of the session Triton.

Each limit ends the session the same way: an `error` event in OpenAI's shape with a code
naming the limit, then a close frame with a clear code (1013: no session slot; 1008: the
client's own limits). The gateway stays healthy and serves the next session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.gateway import GatewayProcess, run_gateway, wait_ready

PATH = "/v1/realtime?intent=transcription"
IDLE_S = 1.5
SESSION_S = 4.0
BUFFERED_S = 2.0
QUEUED_EVENTS = 16
MANUAL = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}}}


@pytest.fixture(scope="module")
def limited_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_TRITON__URL": triton_server.grpc_url,
        "GATEWAY_REALTIME__MAX_SESSIONS": "1",
        "GATEWAY_REALTIME__IDLE_TIMEOUT_S": str(IDLE_S),
        "GATEWAY_REALTIME__MAX_SESSION_S": str(SESSION_S),
        "GATEWAY_REALTIME__MAX_BUFFERED_AUDIO_S": str(BUFFERED_S),
        "GATEWAY_REALTIME__MAX_MESSAGE_BYTES": "16384",
        "GATEWAY_REALTIME__MAX_QUEUED_EVENTS": str(QUEUED_EVENTS),
    }
    with run_gateway(env, tmp_path_factory.mktemp("limited") / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        yield gateway


def _url(gateway: GatewayProcess) -> str:
    return gateway.base_url.replace("http://", "ws://", 1) + PATH


async def _no_session_open(gateway: GatewayProcess) -> None:
    """The previous test's session is fully gone (max_sessions is 1)."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as http:
        while "gateway_realtime_sessions_open 0.0" not in (await http.get(f"{gateway.base_url}/metrics")).text:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def _closed_with(ws: ClientConnection, timeout: float) -> tuple[list[dict[str, Any]], int | None]:
    """Events until the server closes, and its close code."""
    events: list[dict[str, Any]] = []
    try:
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None


def _silence(seconds: float) -> str:
    return base64.b64encode(np.zeros(int(seconds * 16000), "<i2").tobytes()).decode("ascii")


async def _commit_three(ws: ClientConnection) -> None:
    """Three commits of 0.5 s each, in 0.25 s appends (under the 16 kB message limit)."""
    for _ in range(3):
        for _ in range(2):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _silence(0.25)}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))


def _assert_three_committed_and_sent(events: list[dict[str, Any]]) -> None:
    """`_commit_three`'s items were committed and each got its result, in commit order."""
    committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    done = [e["item_id"] for e in events if e["type"].endswith(("transcription.completed", "transcription.failed"))]
    assert len(committed) == 3 and done == committed


async def test_second_session_is_refused_with_1013(limited_gateway: GatewayProcess) -> None:
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as first:
        assert json.loads(await first.recv())["type"] == "session.created"
        async with connect(_url(limited_gateway)) as second:
            events, code = await _closed_with(second, 10)
        assert code == 1013
        assert [e["error"]["code"] for e in events] == ["session_limit_reached"]
        assert events[0]["error"]["type"] == "rate_limit_error"
        await first.send(json.dumps(MANUAL))  # the first session is unaffected
        assert json.loads(await first.recv())["type"] == "session.updated"


async def test_idle_session_is_closed(limited_gateway: GatewayProcess) -> None:
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        started = time.monotonic()
        events, code = await _closed_with(ws, 10)
    assert code == 1008
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "idle_timeout"
    assert time.monotonic() - started >= IDLE_S * 0.9


async def test_session_length_is_bounded(limited_gateway: GatewayProcess) -> None:
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        await ws.recv()
        await ws.send(json.dumps(MANUAL))
        started = time.monotonic()

        async def keep_alive() -> None:  # never idle: only the session length can end it
            while True:
                await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
                await asyncio.sleep(IDLE_S / 3)

        sender = asyncio.create_task(keep_alive())
        events, code = await _closed_with(ws, 10)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert code == 1008
    assert events[-1]["error"]["code"] == "session_expired"
    assert SESSION_S * 0.9 <= time.monotonic() - started <= SESSION_S + 5


async def test_what_was_committed_is_still_sent_when_the_session_ends(limited_gateway: GatewayProcess) -> None:
    """Utterances committed just before the session's time is up are still transcribed and
    their results sent, before the `session_expired` error (they were cancelled unsent)."""
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        await ws.recv()
        started = time.monotonic()
        await ws.send(json.dumps(MANUAL))
        while (left := started + SESSION_S - 0.3 - time.monotonic()) > 0:  # never idle until then
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await asyncio.sleep(min(left, IDLE_S / 3))
        await _commit_three(ws)
        events, code = await _closed_with(ws, 60)
    assert code == 1008 and events[-1]["error"]["code"] == "session_expired"
    _assert_three_committed_and_sent(events)


async def test_audio_faster_than_it_can_be_transcribed_is_bounded(limited_gateway: GatewayProcess) -> None:
    """Appends past the buffered-audio limit (never committed here): error, then close 1008."""
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        await ws.recv()
        await ws.send(json.dumps(MANUAL))
        await ws.recv()
        for _ in range(int(BUFFERED_S / 0.25) + 3):  # 0.25 s appends (10.7 kB of base64: under the 16 kB limit)
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _silence(0.25)}))
        events, code = await _closed_with(ws, 10)
    assert code == 1008
    assert events[-1]["error"]["code"] == "buffer_limit_exceeded", [e.get("error", e["type"]) for e in events]


async def test_what_was_committed_is_still_sent_when_the_buffer_limit_ends_the_session(
    limited_gateway: GatewayProcess,
) -> None:
    """Audio committed just before appends overrun the buffered-audio limit is still
    transcribed and its results sent, before the `buffer_limit_exceeded` error."""
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        await ws.recv()
        await ws.send(json.dumps(MANUAL))
        await _commit_three(ws)  # 1.5 s waiting for transcription, then the flood
        for _ in range(int(BUFFERED_S / 0.25) + 3):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _silence(0.25)}))
        events, code = await _closed_with(ws, 60)
    assert code == 1008 and events[-1]["error"]["code"] == "buffer_limit_exceeded"
    _assert_three_committed_and_sent(events)


async def test_message_over_the_limit_is_refused_but_the_session_goes_on(limited_gateway: GatewayProcess) -> None:
    await _no_session_open(limited_gateway)
    async with connect(_url(limited_gateway)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": _silence(0.5)}))  # 21.4 kB
        event = json.loads(await ws.recv())
        assert (event["type"], event["error"]["code"]) == ("error", "message_too_large")
        await ws.send(json.dumps(MANUAL))
        assert json.loads(await ws.recv())["type"] == "session.updated"
    async with httpx.AsyncClient() as http:  # still healthy
        assert (await http.get(f"{limited_gateway.base_url}/health/ready")).status_code == 200


async def test_client_that_never_reads_is_closed(limited_gateway: GatewayProcess) -> None:
    """Server events pile up behind a client that does not read: bounded, then the session ends."""
    await _no_session_open(limited_gateway)
    host, port = limited_gateway.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel buffers little for us
    update = json.dumps({"type": "transcription_session.update", "session": {}})  # answered with ~500 bytes
    async with connect(_url(limited_gateway), sock=sock, max_queue=1, close_timeout=1) as ws:
        try:
            for _ in range(20000):
                await ws.send(update)
        except ConnectionClosed:
            pass  # closed while we were still sending
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as http:
            while 'gateway_realtime_sessions_total{outcome="client_not_reading"}' not in (
                    await http.get(f"{limited_gateway.base_url}/metrics")).text:
                assert time.monotonic() < deadline, "the session was not closed"
                await asyncio.sleep(0.2)
