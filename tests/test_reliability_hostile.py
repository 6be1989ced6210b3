"""Hostile input through the real gateway over HTTP, and what it must leave behind.

One gateway process of its own (in front of the session's real Triton) gets the
whole hostile corpus (tests/fixtures/audio/hostile.py) plus malformed multipart,
oversized fields, broken encodings, a 5 MB chat body and bad base64. Every answer
must have the expected status in OpenAI's error shape, the gateway must stay
ready, and its resident memory must stay bounded. Its log and its temporary
directory are then checked: no key, no audio bytes, a request id on every line,
no temporary file left behind.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.audio import HOSTILE_MAX_SECONDS, HostileInput, Utterance
from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID, GatewayProcess, run_gateway, wait_ready
from tests.reliability.processes import open_files_under, rss_bytes

TRANSCRIBE = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"
AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}
MIB = 1024 * 1024
# Decoded audio is float32 at 16 kHz: what the duration limit lets one request hold.
DECODE_CAP_BYTES = int(HOSTILE_MAX_SECONDS * 16000 * 4)
# After the corpus the gateway may keep warm caches (VAD session, allocator arenas), not decode buffers.
SETTLED_GROWTH_BYTES = 200 * MIB
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[request_id=([^\]]+)\] ")


@dataclass
class RssSampler:
    """Samples a process's RSS every 20 ms in a thread: the peak between two reads."""

    pid: int
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Hardened:
    gateway: GatewayProcess
    temp_dir: Path
    client: httpx.Client
    rss_baseline: int
    sampler: RssSampler
    # What the process wrote to TMPDIR at startup, before any request: importing
    # onnxruntime (the VAD) writes its telemetry session file `.ses` there, once per process.
    temp_at_start: set[str]


@pytest.fixture(scope="module")
def hardened(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    """The gateway with an API key, debug logging and its own TMPDIR."""
    root = tmp_path_factory.mktemp("hostile-gateway")
    temp_dir = root / "tmp"
    temp_dir.mkdir()
    env = {
        "GATEWAY_TRITON__URL": triton_server.grpc_url,
        "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}"]',
        "GATEWAY_LOG_LEVEL": "debug",  # the most the log ever says
        "TMPDIR": str(temp_dir),
    }
    with run_gateway(env, root / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        with httpx.Client(base_url=gateway.base_url, headers=AUTH, timeout=180) as client:
            # Warm up (VAD model, decoder, gRPC channel) before taking the baseline.
            warm = client.post(TRANSCRIBE, data={"model": MODEL_ID},
                               files={"file": ("w.wav", _tone_wav(), "audio/wav")})
            assert warm.status_code == 200, warm.text
            sampler = RssSampler(gateway.process.pid)
            temp_at_start = {path.name for path in temp_dir.iterdir()}
            yield Hardened(gateway, temp_dir, client, rss_bytes(gateway.process.pid), sampler, temp_at_start)
            sampler.close()


def _tone_wav() -> bytes:
    import io
    import wave

    import numpy as np

    samples = (np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000) * 8000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def assert_openai_error(response: httpx.Response, statuses: tuple[int, ...], param: str | None = None) -> dict:
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:300]}"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error", body
    if param is not None:
        assert body["error"]["param"] == param, body
    assert response.headers.get("x-request-id"), "every response carries its request id"
    return body["error"]


def assert_still_ready(hardened: Hardened) -> None:
    assert hardened.gateway.process.poll() is None, "the gateway died"
    assert hardened.client.get("/health/ready").status_code == 200


def raw_multipart(*parts: tuple[bytes, bytes | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body built byte by byte: (field name, filename or None, content) per part."""
    boundary = b"reliability-boundary-7f3a"
    body = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


# ------------------------------------------------------------------ the audio corpus


def test_hostile_corpus(hardened: Hardened, hostile_inputs: list[HostileInput]) -> None:
    failures = []
    for item in hostile_inputs:
        response = hardened.client.post(
            TRANSCRIBE, data={"model": MODEL_ID, "response_format": "verbose_json"},
            files={"file": (item.filename, item.data, item.content_type)},
        )
        try:
            if item.status == 200:
                assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
                assert set(response.json()) >= {"text", "duration", "segments"}
            else:
                assert_openai_error(response, (item.status,))
            assert_still_ready(hardened)
        except AssertionError as exc:
            failures.append(f"{item.name}: {exc}")
    assert not failures, "\n".join(failures)


def test_memory_bounded_by_the_limits(hardened: Hardened, hostile_inputs: list[HostileInput]) -> None:
    """Peak RSS over the corpus (decode bomb included) stays under what the duration limit
    allows one request to hold, and the memory is given back afterwards."""
    assert hostile_inputs  # the corpus ran (this test follows test_hostile_corpus)
    time.sleep(1.0)
    settled = rss_bytes(hardened.gateway.process.pid)
    peak_growth = hardened.sampler.peak - hardened.rss_baseline
    print(f"\ngateway RSS: baseline {hardened.rss_baseline / MIB:.0f} MiB, peak {hardened.sampler.peak / MIB:.0f} MiB, "
          f"settled {settled / MIB:.0f} MiB")
    assert peak_growth < 2 * DECODE_CAP_BYTES, f"peak grew {peak_growth / MIB:.0f} MiB"
    assert settled - hardened.rss_baseline < SETTLED_GROWTH_BYTES, f"settled at +{(settled - hardened.rss_baseline) / MIB:.0f} MiB"


# ------------------------------------------------------------------ malformed requests


def test_multipart_without_file(hardened: Hardened) -> None:
    body, headers = raw_multipart((b"model", None, MODEL_ID.encode()))
    assert_openai_error(hardened.client.post(TRANSCRIBE, content=body, headers=headers), (400,), param="file")
    assert_still_ready(hardened)


def test_multipart_with_file_twice(hardened: Hardened, utterances: list[Utterance]) -> None:
    audio = utterances[0].path.read_bytes()
    body, headers = raw_multipart((b"model", None, MODEL_ID.encode()), (b"file", b"a.wav", audio),
                                  (b"file", b"b.wav", audio))
    # Which of two files to transcribe is ambiguous: refuse rather than pick one silently.
    assert_openai_error(hardened.client.post(TRANSCRIBE, content=body, headers=headers), (400,), param="file")
    assert_still_ready(hardened)


@pytest.mark.parametrize("size", [2 * MIB, 20 * MIB])
def test_enormous_form_field(hardened: Hardened, utterances: list[Utterance], size: int) -> None:
    audio = utterances[0].path.read_bytes()
    body, headers = raw_multipart((b"model", None, MODEL_ID.encode()), (b"language", None, b"e" * size),
                                  (b"file", b"a.wav", audio))
    assert_openai_error(hardened.client.post(TRANSCRIBE, content=body, headers=headers), (400, 413))
    assert_still_ready(hardened)


def test_thousands_of_form_fields(hardened: Hardened) -> None:
    parts = [(f"x{i}".encode(), None, b"1") for i in range(5000)]
    body, headers = raw_multipart((b"model", None, MODEL_ID.encode()), *parts)
    assert_openai_error(hardened.client.post(TRANSCRIBE, content=body, headers=headers), (400, 413))
    assert_still_ready(hardened)


@pytest.mark.parametrize("where", ["value", "filename", "field name"])
def test_invalid_utf8_in_form(hardened: Hardened, utterances: list[Utterance], where: str) -> None:
    audio = utterances[0].path.read_bytes()
    bad = b"\xff\xfe\xc3("
    model = (b"model", None, bad if where == "value" else MODEL_ID.encode())
    file = (b"file", bad + b".wav" if where == "filename" else b"a.wav", audio)
    extra = [(b"lang" + bad, None, b"en")] if where == "field name" else []
    body, headers = raw_multipart(model, file, *extra)
    response = hardened.client.post(TRANSCRIBE, content=body, headers=headers)
    if where == "filename":  # the name is never used (content decides the format): valid audio is fine
        assert response.status_code == 200, response.text
    else:
        assert_openai_error(response, (400,))
    assert_still_ready(hardened)


def test_invalid_utf8_json_body(hardened: Hardened) -> None:
    body = b'{"model": "' + b"\xff\xfe" + b'", "messages": [{"role": "user", "content": "hi"}]}'
    response = hardened.client.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    assert_openai_error(response, (400,))
    assert_still_ready(hardened)


def test_five_megabyte_chat_body(hardened: Hardened) -> None:
    """5 MB of text is far past the model's context: a clear 400, quickly, not a 5xx or a hang."""
    started = time.monotonic()
    response = hardened.client.post(CHAT, json={
        "model": MODEL_ID, "max_completion_tokens": 4,
        "messages": [{"role": "user", "content": "word " * (5 * MIB // 5)}],
    })
    assert_openai_error(response, (400, 413))
    assert time.monotonic() - started < 30
    assert_still_ready(hardened)


def test_five_megabyte_malformed_json(hardened: Hardened) -> None:
    body = b'{"model": "' + MODEL_ID.encode() + b'", "messages": [' + b"[" * (5 * MIB)
    response = hardened.client.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    assert_openai_error(response, (400,))
    assert_still_ready(hardened)


@pytest.mark.parametrize("data", ["not base64 at all!", "UklGRg=", "////" * 3 + "=" * 5, "\u00e9\u00e9\u00e9\u00e9"])
def test_invalid_base64_input_audio(hardened: Hardened, data: str) -> None:
    response = hardened.client.post(CHAT, json={"model": MODEL_ID, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is said?"},
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
    ]}]})
    error = assert_openai_error(response, (400,))
    assert error["param"] == "messages.0.content.1", error
    assert_still_ready(hardened)


def test_valid_base64_of_non_audio(hardened: Hardened) -> None:
    response = hardened.client.post(CHAT, json={"model": MODEL_ID, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"plain text, no audio").decode()}},
    ]}]})
    assert_openai_error(response, (400, 415))


@pytest.mark.parametrize("route", [TRANSCRIBE, CHAT])
def test_unknown_model_id(hardened: Hardened, utterances: list[Utterance], route: str) -> None:
    if route == TRANSCRIBE:
        response = hardened.client.post(route, data={"model": "whisper-1"},
                                        files={"file": ("a.wav", utterances[0].path.read_bytes(), "audio/wav")})
    else:
        response = hardened.client.post(route, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    error = assert_openai_error(response, (400, 404), param="model")
    assert error["code"] == "model_not_found"


def test_wrong_content_type(hardened: Hardened) -> None:
    assert_openai_error(hardened.client.post(TRANSCRIBE, content=b"RIFF....", headers={"Content-Type": "audio/wav"}),
                        (400, 415))
    assert_openai_error(hardened.client.post(CHAT, content=b"model=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), (400, 415))


# ------------------------------------------------------------------ what the traffic left behind


def test_no_temporary_files_left(hardened: Hardened) -> None:
    """Every upload above went through the gateway's TMPDIR (spooled multipart parts);
    none may remain, neither as a name nor as an open unlinked file."""
    def leftovers() -> set[str]:
        return {path.name for path in hardened.temp_dir.iterdir()} - hardened.temp_at_start

    assert hardened.temp_at_start <= {".ses"}, hardened.temp_at_start
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        leftovers() or open_files_under(hardened.gateway.process.pid, hardened.temp_dir)
    ):
        time.sleep(0.1)
    assert leftovers() == set()
    assert open_files_under(hardened.gateway.process.pid, hardened.temp_dir) == []


def test_key_and_audio_never_logged(hardened: Hardened, hostile_inputs: list[HostileInput],
                                    utterances: list[Utterance]) -> None:
    text = hardened.gateway.log_path.read_bytes()
    assert text, "no log captured"
    assert GATEWAY_API_KEY.encode() not in text
    audio = utterances[0].path.read_bytes()
    samples = [audio[1000 + i * 997: 1000 + i * 997 + 24] for i in range(8)]
    for sample in samples:
        for form in (sample, sample.hex().encode(), base64.b64encode(sample)[:24], repr(sample)[2:40].encode()):
            assert form not in text, f"audio bytes in the log: {form!r}"
    assert b"RIFF" not in text and b"OggS" not in text and b"fLaC" not in text


def test_request_id_on_every_log_line(hardened: Hardened) -> None:
    lines = [line for line in hardened.gateway.log_text().splitlines() if line.strip()]
    assert len(lines) > 20
    untagged = [line for line in lines if not LOG_LINE.match(line)]
    assert not untagged, "log lines without a request id field:\n" + "\n".join(untagged[:10])
    # Lines written while a request ran carry that request's id (access lines included).
    access = [line for line in lines if '"POST /v1/' in line]
    assert access and all(LOG_LINE.match(line).group(1) != "-" for line in access), access[:5]  # type: ignore[union-attr]


def test_every_response_has_a_request_id(hardened: Hardened) -> None:
    client = hardened.client
    responses = [
        client.get("/health/live"), client.get("/health/ready"), client.get("/metrics"), client.get("/v1/models"),
        client.get("/nowhere"), client.delete("/v1/models"),
        httpx.post(f"{hardened.gateway.base_url}{CHAT}", json={}),  # 401, no key
        client.post(CHAT, json={"model": MODEL_ID}),  # 400
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.request.url.path, r.status_code) for r in responses]
    assert len(set(ids)) == len(ids)
    # 413 from the body limit, answered before the body is read.
    head = _raw_headers_only(hardened.gateway.base_url, TRANSCRIBE, content_length=10**9)
    assert head.startswith("HTTP/1.1 413") and "\r\nx-request-id: " in head.lower(), head
    echoed = client.get("/v1/models", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    forged = client.get("/v1/models", headers={"X-Request-ID": "<script>" + "x" * 300})
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", forged.headers["x-request-id"]), "client ids are sanitised"


def _raw_headers_only(base_url: str, path: str, content_length: int) -> str:
    """Send only the request head (a huge declared body) and return the response head."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GATEWAY_API_KEY}\r\n"
                     f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {content_length}\r\n\r\n"
                     .encode())
        return sock.recv(65536).decode("latin-1").split("\r\n\r\n")[0]


def test_cors_off_by_default(hardened: Hardened) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = hardened.client.options(CHAT, headers={**origin, "Access-Control-Request-Method": "POST"})
    assert not any(name.startswith("access-control-") for name in preflight.headers), preflight.headers
    simple = hardened.client.get("/v1/models", headers=origin)
    assert simple.status_code == 200
    assert not any(name.startswith("access-control-") for name in simple.headers), simple.headers


def test_ready_after_everything(hardened: Hardened) -> None:
    assert_still_ready(hardened)
    text = json.loads(hardened.client.get("/v1/models").text)
    assert text["data"][0]["id"] == MODEL_ID
