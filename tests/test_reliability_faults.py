"""Faults between the gateway and Triton, with both as separate processes started here.

Triton serves scripted python models (tests/reliability/fake_models.py) with the
ensembles' tensors: one that is slow, one that raises, one that streams a word at a
time until cancelled. The gateway is pointed at them through its model-name
settings, so every fault happens on cue and Triton starts in seconds. Each model
writes what it did to an events file: that is how upstream cancellation is observed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.settings import ModelSettings
from tests.fixtures.audio import Utterance
from tests.fixtures.audio.speech import read_audio, write_wav
from tests.fixtures.gateway import MODEL_ID, GatewayProcess, run_gateway, wait_ready
from tests.fixtures.triton import triton_settings
from tests.reliability.fake_models import FakeModel, Mode, read_events, read_requests, write_fake_repository
from tests.reliability.processes import RestartableTriton

TRANSCRIBE = "/v1/audio/transcriptions"
SLOW_S = 3.0  # how long the slow model takes per request
STREAM_WORD_S = 0.1  # one streamed word every this many seconds
MODELS = [
    FakeModel("quick", Mode.SLOW),
    FakeModel("slow", Mode.SLOW, delay_s=SLOW_S),
    FakeModel("raises", Mode.RAISE, instances=1),
    FakeModel("stream_slow", Mode.STREAM, delay_s=STREAM_WORD_S),
]


@dataclass
class FakeTriton:
    server: RestartableTriton
    events: Path

    def events_of(self, model: str, what: str) -> int:
        return sum(1 for name, event in read_events(self.events) if (name, event) == (model, what))

    def wait_event(self, model: str, what: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.events_of(model, what) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{model} never logged {count} x {what!r}: {read_events(self.events)}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def fake_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTriton]:
    root = tmp_path_factory.mktemp("fake-triton")
    events = root / "events.txt"
    repository = write_fake_repository(root / "repository", MODELS, events)
    server = RestartableTriton(repository, triton_settings(exit_timeout_secs=3), root / "tritonserver.log")
    server.start()
    try:
        yield FakeTriton(server, events)
    finally:
        server.stop()


def gateway_env(triton: FakeTriton, asr_model: str = "slow", **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_TRITON__URL": triton.server.grpc_url,
        "GATEWAY_TRITON__ASR_MODEL": asr_model,
        "GATEWAY_TRITON__ASR_STREAM_MODEL": "stream_slow",
        "GATEWAY_TRITON__CHAT_MODEL": "stream_slow",
        "GATEWAY_TRITON__READY_CACHE_S": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def speech(utterances: list[Utterance]) -> bytes:
    return utterances[0].path.read_bytes()


def transcribe(base_url: str, audio: bytes, *, stream: bool = False, request_id: str | None = None,
               timeout: float = 30.0) -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    data = {"model": MODEL_ID, **({"stream": "true"} if stream else {})}
    return httpx.post(f"{base_url}{TRANSCRIBE}", data=data, files={"file": ("speech.wav", audio, "audio/wav")},
                      headers=headers, timeout=timeout)


def assert_openai_error(response: httpx.Response, statuses: tuple[int, ...]) -> dict:
    assert response.status_code in statuses, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert response.headers.get("x-request-id"), "every response carries its request id"
    return body["error"]


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# ------------------------------------------------------------------ a model that raises


def test_model_error_is_502_with_request_id_in_log(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    with run_gateway(gateway_env(fake_triton, asr_model="raises"), tmp_path / "gateway.log") as gateway:
        wait_ready(gateway.base_url, timeout=30)
        response = transcribe(gateway.base_url, speech, request_id="rel-raise-0001")
        error = assert_openai_error(response, (500, 502))
        assert response.headers["x-request-id"] == "rel-raise-0001"
        fake_triton.wait_event("raises", "error")
        failure_lines = [line for line in gateway.log_text().splitlines() if "request_id=rel-raise-0001" in line]
        assert any(" 50" in line and ("WARNING" in line or "ERROR" in line) for line in failure_lines), \
            f"the failure is not logged with its request id:\n{gateway.log_text()[-3000:]}"
        # One failing model does not make the gateway unready or break the next request.
        assert httpx.get(f"{gateway.base_url}/health/ready").status_code == 200
        assert_openai_error(transcribe(gateway.base_url, speech), (500, 502))


# ------------------------------------------------------------------ Triton slower than the deadline


# A scripted slow model, not a tiny deadline on the real ensemble: tritonserver 2.51 (the
# embedded server) can segfault when a gRPC call is cancelled within a millisecond or so of
# arriving (triton-inference-server/server#7368, fixed in 24.12 by #7840), which took the
# shared session server down once. Chat's calls take their deadline from the same
# TritonClient._remaining_s.
def test_triton_slower_than_timeout_is_504(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    env = gateway_env(fake_triton, GATEWAY_TRITON__INFER_TIMEOUT_S="1")
    with run_gateway(env, tmp_path / "gateway.log") as gateway:
        started = time.monotonic()
        response = transcribe(gateway.base_url, speech)
        elapsed = time.monotonic() - started
        error = assert_openai_error(response, (504,))
        assert error["code"] == "upstream_timeout"
        assert elapsed < SLOW_S, f"504 after {elapsed:.1f} s: the deadline was not enforced"


def test_a_deadline_too_short_to_call_is_504_without_a_call(fake_triton: FakeTriton, speech: bytes,
                                                             tmp_path: Path) -> None:
    env = gateway_env(fake_triton, GATEWAY_TRITON__INFER_TIMEOUT_S="0.01")
    with run_gateway(env, tmp_path / "gateway.log") as gateway:
        before = fake_triton.events_of("slow", "start")
        error = assert_openai_error(transcribe(gateway.base_url, speech), (504,))
        assert error["code"] == "upstream_timeout"
        time.sleep(0.5)  # a call that was sent would have logged its start by now
        assert fake_triton.events_of("slow", "start") == before


def test_request_deadline_is_504(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    env = gateway_env(fake_triton, GATEWAY_LIMITS__REQUEST_TIMEOUT_S="1")
    with run_gateway(env, tmp_path / "gateway.log") as gateway:
        before = fake_triton.events_of("slow", "cancelled")
        error = assert_openai_error(transcribe(gateway.base_url, speech), (504,))
        assert error["code"] == "request_timeout"
        # The abandoned Triton call is cancelled too, not left running.
        fake_triton.wait_event("slow", "cancelled", before + 1, timeout=SLOW_S)


# ------------------------------------------------------------------ token budget


def test_each_piece_asks_a_token_budget_its_audio_can_hold(fake_triton: FakeTriton, utterances: list[Utterance],
                                                           tmp_path: Path) -> None:
    """A model that loops stops where the piece's audio could not have said more
    (ModelSettings.asr_budget): a short clip asks far less than asr_max_new_tokens, a long one
    the cap; caption cues and streamed pieces ask the same way."""
    model = ModelSettings()
    short = utterances[0].path.read_bytes()
    clips = [read_audio(u.path) for u in utterances]
    assert len({rate for _, rate in clips}) == 1
    long = write_wav(tmp_path / "long.wav", np.concatenate([samples for samples, _ in clips] * 3), clips[0][1])
    with run_gateway(gateway_env(fake_triton, asr_model="quick"), tmp_path / "gateway.log") as gateway:
        wait_ready(gateway.base_url, timeout=30)
        for audio in (short, long.read_bytes()):
            assert transcribe(gateway.base_url, audio).status_code == 200
        cues = httpx.post(f"{gateway.base_url}{TRANSCRIBE}", data={"model": MODEL_ID, "response_format": "srt"},
                          files={"file": ("speech.wav", short, "audio/wav")}, timeout=30)
        assert cues.status_code == 200, cues.text
        streamed = len(read_requests(fake_triton.events, "stream_slow"))
        with httpx.stream("POST", f"{gateway.base_url}{TRANSCRIBE}", timeout=30,
                          data={"model": MODEL_ID, "stream": "true"},
                          files={"file": ("speech.wav", short, "audio/wav")}) as response:
            assert any(line.startswith("data: ") for line in response.iter_lines())
    asked = read_requests(fake_triton.events, "quick")
    asked_streaming = read_requests(fake_triton.events, "stream_slow")[streamed:]
    assert len(asked) >= 3 and len(asked_streaming) == 1, (asked, asked_streaming)
    for samples, budget in asked + asked_streaming:
        assert budget == model.asr_budget(samples), (samples, budget)
    assert asked[0][1] < model.asr_max_new_tokens // 2  # a few seconds of speech
    assert max(budget for _, budget in asked[1:-1]) == model.asr_max_new_tokens  # tens of seconds: the cap
    assert asked_streaming[0] == asked[0]


# ------------------------------------------------------------------ client disconnects


def test_disconnect_mid_stream_cancels_upstream(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    with run_gateway(gateway_env(fake_triton), tmp_path / "gateway.log") as gateway:
        before = fake_triton.events_of("stream_slow", "cancelled")
        with httpx.stream("POST", f"{gateway.base_url}{TRANSCRIBE}", timeout=30,
                          data={"model": MODEL_ID, "stream": "true"},
                          files={"file": ("speech.wav", speech, "audio/wav")}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert any(line.startswith("data: ") for line in lines)  # the first delta arrived
        # The connection is closed: the model must see the cancellation (200 words would take 20 s).
        fake_triton.wait_event("stream_slow", "cancelled", before + 1, timeout=5)
        assert fake_triton.events_of("stream_slow", "done") == 0


def test_disconnect_while_waiting_cancels_upstream(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    with run_gateway(gateway_env(fake_triton), tmp_path / "gateway.log") as gateway:
        before = fake_triton.events_of("slow", "cancelled")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gateway.base_url}{TRANSCRIBE}", data={"model": MODEL_ID},
                       files={"file": ("speech.wav", speech, "audio/wav")}, timeout=httpx.Timeout(10, read=1.0))
        fake_triton.wait_event("slow", "cancelled", before + 1, timeout=SLOW_S)


# ------------------------------------------------------------------ Triton killed, then back


def _outcome(base_url: str, audio: bytes, stream: bool) -> tuple[int, list[dict], float]:
    """(HTTP status, SSE events, seconds taken) of one request that is in flight when Triton dies."""
    started = time.monotonic()
    response = transcribe(base_url, audio, stream=stream, timeout=60)
    events = sse_events(response.text) if stream and response.status_code == 200 else []
    return response.status_code, events, time.monotonic() - started


def test_sigkill_triton_in_flight_then_recovers(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    with run_gateway(gateway_env(fake_triton), tmp_path / "gateway.log") as gateway:
        wait_ready(gateway.base_url, timeout=30)
        starts = fake_triton.events_of("slow", "start") + fake_triton.events_of("stream_slow", "start")
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(_outcome, gateway.base_url, speech, stream) for stream in [False] * 5 + [True] * 3]
            deadline = time.monotonic() + 15
            while fake_triton.events_of("slow", "start") + fake_triton.events_of("stream_slow", "start") < starts + 6:
                assert time.monotonic() < deadline, f"requests never reached Triton: {read_events(fake_triton.events)}"
                time.sleep(0.05)
            killed_at = time.monotonic()
            fake_triton.server.kill()
            outcomes = [future.result(timeout=30) for future in futures]
        # Every request ended within seconds of the kill, with 502/503, or (a stream already
        # under way) with an error event that ends the stream.
        for status, events, took in outcomes:
            assert time.monotonic() - killed_at < 15 and took < 20
            if events:
                assert events[-1].get("error", {}).get("message"), events[-1]
                assert "Triton" in events[-1]["error"]["message"] or events[-1]["error"]["code"], events[-1]
            else:
                assert status in (502, 503), status
        ready = httpx.get(f"{gateway.base_url}/health/ready", timeout=10)
        assert_openai_error(ready, (503,))
        assert_openai_error(transcribe(gateway.base_url, speech), (502, 503))

        fake_triton.server.start()  # same ports
        restarted = time.monotonic()
        wait_ready(gateway.base_url, timeout=30)
        recovered_s = time.monotonic() - restarted
        assert gateway.process.poll() is None, "the same gateway process serves on"
        assert transcribe(gateway.base_url, speech).status_code == 200
        print(f"\ngateway ready again {recovered_s:.1f} s after Triton was")


# ------------------------------------------------------------------ graceful shutdown


def test_sigterm_drains_in_flight_requests(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    drain_s = 10.0
    env = gateway_env(fake_triton, GATEWAY_DRAIN_TIMEOUT_S=str(drain_s))
    with run_gateway(env, tmp_path / "gateway.log") as gateway:
        starts = fake_triton.events_of("slow", "start")
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(transcribe, gateway.base_url, speech) for _ in range(3)]
            fake_triton.wait_event("slow", "start", starts + 3)
            gateway.process.send_signal(signal.SIGTERM)
            terminated = time.monotonic()
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # no longer accepting
                httpx.get(f"{gateway.base_url}/health/live", timeout=2)
            responses = [future.result(timeout=drain_s + 5) for future in futures]
        assert [r.status_code for r in responses] == [200] * 3, [r.text for r in responses]
        gateway.process.wait(timeout=drain_s + 5)
        assert time.monotonic() - terminated < drain_s
        assert "Finished server process" in gateway.log_text()


def test_sigterm_past_the_drain_timeout_still_exits(fake_triton: FakeTriton, speech: bytes, tmp_path: Path) -> None:
    env = gateway_env(fake_triton, GATEWAY_DRAIN_TIMEOUT_S="1")
    with run_gateway(env, tmp_path / "gateway.log") as gateway:
        starts = fake_triton.events_of("slow", "start")
        result: list[httpx.Response | Exception] = []

        def request() -> None:
            try:
                result.append(transcribe(gateway.base_url, speech))
            except httpx.HTTPError as exc:
                result.append(exc)

        thread = threading.Thread(target=request)
        thread.start()
        fake_triton.wait_event("slow", "start", starts + 1)
        terminated = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(timeout=10)
        assert time.monotonic() - terminated < 1 + 3, "the drain timeout bounds the shutdown"
        thread.join(timeout=10)
        assert result, "the client was left hanging"


def test_sigterm_exit_code_is_zero(fake_triton: FakeTriton, tmp_path: Path) -> None:
    with run_gateway(gateway_env(fake_triton), tmp_path / "gateway.log") as gateway:
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=10) == 0
