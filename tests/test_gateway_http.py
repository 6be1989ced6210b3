"""The gateway's HTTP behaviour that needs no model: errors, auth, limits, request ids,
temp files, graceful drain. A real gateway process (uvicorn) whose Triton address
is a closed loopback port; clients are httpx, raw sockets and the openai SDK."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

from tests.fixtures.audio.speech import synthesize
from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID, GatewayProcess, run_gateway, unreachable_triton_url

UPLOAD_LIMIT = 3_000_000
AUDIO_LIMIT_S = 5.0
AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}
TRANSCRIBE = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-http")


@pytest.fixture(scope="module")
def spool_dir(workdir: Path) -> Path:
    path = workdir / "spool"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def offline_gateway(workdir: Path, spool_dir: Path) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_TRITON__URL": unreachable_triton_url(),
        "GATEWAY_TRITON__READY_CACHE_S": "0",
        "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}", "second-key"]',
        "GATEWAY_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "GATEWAY_LIMITS__MAX_AUDIO_SECONDS": str(AUDIO_LIMIT_S),
        "GATEWAY_LIMITS__MAX_CONCURRENT_REQUESTS": "1",
        "GATEWAY_LIMITS__RETRY_AFTER_S": "3",
        "GATEWAY_CORS__ALLOW_ORIGINS": '["https://app.example"]',
        "TMPDIR": str(spool_dir),  # upload spool files land here: checked empty afterwards
    }
    with run_gateway(env, workdir / "offline.log") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(offline_gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=offline_gateway.base_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def speech_wav(workdir: Path) -> Path:
    return synthesize("Hello world.", workdir)


@pytest.fixture(scope="module")
def sdk(offline_gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{offline_gateway.base_url}/v1", api_key=GATEWAY_API_KEY, max_retries=0)


def assert_openai_error(response: httpx.Response, status: int, *, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    assert response.headers["x-request-id"]
    return body["error"]


def upload(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    data = {"model": MODEL_ID, **fields}
    with path.open("rb") as f:
        return client.post(TRANSCRIBE, headers=AUTH, data=data, files={"file": (path.name, f)})


# ------------------------------------------------------------------ probes, errors


def test_live_ready_and_metrics_open(client: httpx.Client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    error = assert_openai_error(client.get("/health/ready"), 503)
    assert "unreachable" in error["message"]
    assert "gateway_requests_total" in client.get("/metrics").text


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert assert_openai_error(client.get("/v1/nothing", headers=AUTH), 404)["code"] == "not_found"
    assert assert_openai_error(client.delete("/v1/models", headers=AUTH), 405)["code"] == "method_not_allowed"


def test_validation_errors_use_openai_body(client: httpx.Client, speech_wav: Path) -> None:
    response = client.post(TRANSCRIBE, headers=AUTH, data={"model": MODEL_ID})
    assert_openai_error(response, 400, param="file")
    response = upload(client, speech_wav, response_format="xml")
    assert_openai_error(response, 400, param="response_format")
    response = client.post(CHAT, headers=AUTH, content=b"{not json")
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"language": "fr"}, "language"),
        ({"timestamp_granularities[]": "word", "response_format": "verbose_json"}, "timestamp_granularities[]"),
        ({"prompt": "context"}, "prompt"),
        ({"temperature": "0.8"}, "temperature"),
        ({"include[]": "logprobs"}, "include[]"),
        ({"chunking_strategy[type]": "client_vad"}, "chunking_strategy[type]"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"},
         "chunking_strategy[threshold]"),
        ({"chunking_strategy[window]": "5"}, "chunking_strategy[window]"),
        ({"model": "whisper-1"}, "model"),
        ({"surprise": "1"}, "surprise"),
    ],
)
def test_parameters_never_silently_ignored(client: httpx.Client, speech_wav: Path, fields: dict, param: str) -> None:
    error = assert_openai_error(upload(client, speech_wav, **fields), 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_sdk_sees_unsupported_language_as_bad_request(sdk: openai.OpenAI, speech_wav: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(file=speech_wav, model=MODEL_ID, language="de")
    assert "English" in info.value.message


# ------------------------------------------------------------------ auth


def test_auth_required_on_v1(client: httpx.Client, offline_gateway: GatewayProcess) -> None:
    base = offline_gateway.base_url
    assert_openai_error(httpx.get(f"{base}/v1/models"), 401)
    assert_openai_error(httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert_openai_error(httpx.get(f"{base}/v1/models", headers={"Authorization": GATEWAY_API_KEY}), 401)
    for key in (GATEWAY_API_KEY, "second-key"):
        listed = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert listed.json()["data"][0]["id"] == MODEL_ID


def test_auth_checked_before_the_body_is_read(offline_gateway: GatewayProcess) -> None:
    # Headers only, body never sent: a 401 must come back anyway.
    status = _raw_post_headers_only(offline_gateway.base_url, TRANSCRIBE, content_length=10_000, auth=False)
    assert status == 401


def test_sdk_with_wrong_key(offline_gateway: GatewayProcess, speech_wav: Path) -> None:
    bad = openai.OpenAI(base_url=f"{offline_gateway.base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(file=speech_wav, model=MODEL_ID)


def test_keys_never_logged(offline_gateway: GatewayProcess, client: httpx.Client) -> None:
    client.get("/v1/models", headers=AUTH)
    log = offline_gateway.log_text()
    assert GATEWAY_API_KEY not in log and "second-key" not in log


# ------------------------------------------------------------------ request ids


def test_request_id_echoed_or_generated_and_logged(client: httpx.Client, offline_gateway: GatewayProcess,
                                                   speech_wav: Path) -> None:
    response = client.get("/v1/models", headers={**AUTH, "X-Request-ID": "client-chosen-42"})
    assert response.headers["x-request-id"] == "client-chosen-42"
    generated = client.get("/v1/models", headers=AUTH).headers["x-request-id"]
    assert len(generated) >= 16 and generated != "client-chosen-42"
    # A transcription (fails at Triton): its access line and its gateway lines carry its id.
    failed = upload(client, speech_wav)
    request_id = failed.headers["x-request-id"]
    time.sleep(0.2)
    lines = [line for line in offline_gateway.log_text().splitlines() if request_id in line]
    assert any("gateway.transcription" in line for line in lines)
    assert any("uvicorn.access" in line for line in lines)
    assert all("request_id=" in line for line in offline_gateway.log_text().splitlines()
               if line[:4].isdigit())


# ------------------------------------------------------------------ limits


def test_upload_over_limit_is_413_with_content_length(sdk: openai.OpenAI, workdir: Path) -> None:
    big = workdir / "big.wav"
    soundfile.write(big, np.zeros(UPLOAD_LIMIT // 4 + 1000, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(openai.APIStatusError) as info:
        sdk.audio.transcriptions.create(file=big, model=MODEL_ID)
    assert info.value.status_code == 413
    assert info.value.body["code"] == "payload_too_large"  # type: ignore[index]


def test_declared_oversize_refused_without_reading(offline_gateway: GatewayProcess) -> None:
    status = _raw_post_headers_only(offline_gateway.base_url, TRANSCRIBE, content_length=UPLOAD_LIMIT * 50)
    assert status == 413


def test_chunked_upload_over_limit_is_413(client: httpx.Client) -> None:
    boundary = "xyzBOUNDARY"

    def body() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{MODEL_ID}\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(UPLOAD_LIMIT // 10_000 + 20):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(TRANSCRIBE, content=body(),
                           headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert assert_openai_error(response, 413)["code"] == "payload_too_large"


def test_bad_audio_inputs(client: httpx.Client, workdir: Path) -> None:
    empty = workdir / "empty.wav"
    empty.write_bytes(b"")
    assert_openai_error(upload(client, empty), 400, param="file")
    text = workdir / "notes.txt"
    text.write_text("this is not audio at all\n" * 20)
    assert assert_openai_error(upload(client, text), 415, param="file")["code"] == "unsupported_media_type"
    garbage = workdir / "garbage.mp3"
    garbage.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20)
    assert_openai_error(upload(client, garbage), 400, param="file")


def test_decoded_duration_over_limit_is_413(client: httpx.Client, workdir: Path) -> None:
    # 8 s of 8 kHz u8 audio is ~64 KB: under the byte limit, over the 5 s duration limit.
    long_wav = workdir / "long.wav"
    soundfile.write(long_wav, np.zeros(8000 * 8, dtype=np.float32), 8000, subtype="PCM_U8")
    assert long_wav.stat().st_size < UPLOAD_LIMIT
    assert assert_openai_error(upload(client, long_wav), 413, param="file")["code"] == "audio_too_long"


def test_over_concurrency_limit_is_429_with_retry_after(offline_gateway: GatewayProcess, client: httpx.Client) -> None:
    # One request holds the only slot by never finishing its body.
    with _held_request(offline_gateway.base_url, TRANSCRIBE):
        time.sleep(0.3)
        response = client.post(CHAT, headers=AUTH, json={"model": MODEL_ID, "messages": [
            {"role": "user", "content": "hi"}]})
        error = assert_openai_error(response, 429)
        assert error["type"] == "rate_limit_error"
        assert response.headers["retry-after"] == "3"
    # Slot released once that connection is gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = client.post(CHAT, headers=AUTH, json={"model": MODEL_ID, "messages": [
            {"role": "user", "content": "hi"}]})
        if response.status_code != 429:
            break
        time.sleep(0.1)
    assert response.status_code == 503  # past admission, Triton is unreachable


# ------------------------------------------------------------------ Triton unreachable


def test_triton_unreachable_is_503(client: httpx.Client, sdk: openai.OpenAI, speech_wav: Path) -> None:
    assert assert_openai_error(upload(client, speech_wav), 503)["code"] == "upstream_unavailable"
    response = upload(client, speech_wav, stream="true")
    assert_openai_error(response, 503)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503


# ------------------------------------------------------------------ chat validation


def _chat(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post(CHAT, headers=AUTH, json={"model": MODEL_ID, **body})


def test_chat_rejects_what_it_cannot_honour(client: httpx.Client, speech_wav: Path) -> None:
    user = [{"role": "user", "content": "hi"}]
    assert_openai_error(_chat(client, messages=user, temperature=0.7), 400, param="temperature")
    assert_openai_error(_chat(client, messages=user, n=2), 400, param="n")
    assert_openai_error(_chat(client, messages=user, tools=[]), 400, param="tools")
    assert_openai_error(_chat(client, messages=user, max_tokens=100_000), 400, param="max_tokens")
    assert_openai_error(_chat(client, messages=[]), 400, param="messages")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    assert_openai_error(_chat(client, messages=image), 400)
    bad_b64 = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "@@@", "format": "wav"}}]}]
    assert assert_openai_error(_chat(client, messages=bad_b64), 400)["code"] == "invalid_base64"
    remote = [{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "https://x.example/a.wav"}}]}]
    assert_openai_error(_chat(client, messages=remote), 415)
    text = base64.b64encode(b"plain words, not sound\n" * 10).decode()
    not_audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": text, "format": "wav"}}]}]
    assert_openai_error(_chat(client, messages=not_audio), 415, param="messages.0.content.0")


# ------------------------------------------------------------------ CORS, temp files


def test_cors_preflight_for_configured_origin(client: httpx.Client) -> None:
    response = client.options(CHAT, headers={"Origin": "https://app.example",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options(CHAT, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def _spool_files_open(gateway: GatewayProcess, spool_dir: Path) -> list[str]:
    """Files under the spool dir the gateway still holds (unlinked temp files included)."""
    fd_dir = Path(f"/proc/{gateway.process.pid}/fd")
    targets = []
    for fd in fd_dir.iterdir():
        try:
            targets.append(str(fd.readlink()))
        except OSError:
            continue
    return [t for t in targets if t.startswith(str(spool_dir))]


def test_spooled_uploads_released(offline_gateway: GatewayProcess, client: httpx.Client, spool_dir: Path,
                                  workdir: Path) -> None:
    # 1.5 MB: over Starlette's in-memory spool size, so the upload goes to a temp file
    # (under the gateway's TMPDIR); the request fails (too long), the file must be gone.
    spooled = workdir / "spooled.wav"
    soundfile.write(spooled, np.zeros(750_000, dtype=np.float32), 16000, subtype="PCM_16")
    assert 1_048_576 < spooled.stat().st_size < UPLOAD_LIMIT
    with _held_request(offline_gateway.base_url, TRANSCRIBE, declared=2_000_000) as held:
        held.sock.sendall(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
                          + b"\0" * 1_200_000)
        deadline = time.monotonic() + 5
        while not _spool_files_open(offline_gateway, spool_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _spool_files_open(offline_gateway, spool_dir), "upload was not spooled to disk"
    _wait_released(offline_gateway, spool_dir)  # client went away mid-upload
    response = upload(client, spooled)
    while response.status_code == 429:  # the dropped connection's slot is freed asynchronously
        time.sleep(0.05)
        response = upload(client, spooled)
    assert_openai_error(response, 413, param="file")
    _wait_released(offline_gateway, spool_dir)  # request failed after spooling


def _wait_released(gateway: GatewayProcess, spool_dir: Path) -> None:
    deadline = time.monotonic() + 5
    while _spool_files_open(gateway, spool_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _spool_files_open(gateway, spool_dir) == []


# ------------------------------------------------------------------ graceful shutdown


def test_sigterm_drains_in_flight_requests(workdir: Path) -> None:
    env = {"GATEWAY_TRITON__URL": unreachable_triton_url(), "GATEWAY_DRAIN_TIMEOUT_S": "20"}
    with run_gateway(env, workdir / "drain.log") as gateway:
        with _held_request(gateway.base_url, CHAT, content_type="application/json") as held:
            time.sleep(0.3)
            gateway.process.terminate()
            time.sleep(0.5)
            assert gateway.process.poll() is None  # waiting for the in-flight request
            with pytest.raises(httpx.TransportError):  # no longer accepting
                httpx.get(f"{gateway.base_url}/health/live", timeout=2)
            payload = json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}).encode()
            held.finish(payload)
            status = held.read_status()
            assert status == 503  # answered (Triton is down), not dropped
        # uvicorn re-raises the SIGTERM it handled once the drain is over.
        assert gateway.process.wait(timeout=15) in (0, -15)
        assert "Finished server process" in gateway.log_text()


# ------------------------------------------------------------------ raw-socket helpers


class _Held:
    def __init__(self, sock: socket.socket, declared: int) -> None:
        self.sock = sock
        self.declared = declared

    def finish(self, payload: bytes) -> None:
        self.sock.sendall(payload.ljust(self.declared)[: self.declared])

    def read_status(self) -> int:
        self.sock.settimeout(15)
        head = self.sock.recv(4096).decode("latin-1")
        return int(head.split()[1])


def _open(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


class _held_request:
    """A POST whose headers are sent but whose body is held back."""

    def __init__(self, base_url: str, path: str, *, content_type: str = "multipart/form-data; boundary=b",
                 declared: int = 0) -> None:
        self.base_url = base_url
        self.path = path
        self.content_type = content_type
        self.declared = declared or 10_000

    def __enter__(self) -> _Held:
        self.sock = _open(self.base_url)
        host = self.base_url.removeprefix("http://")
        self.sock.sendall(
            f"POST {self.path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GATEWAY_API_KEY}\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {self.declared}\r\n\r\n".encode()
        )
        # Admitted at once (the slot is taken before the body is read), then waits for the body.
        return _Held(self.sock, self.declared)

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _raw_post_headers_only(base_url: str, path: str, *, content_length: int, auth: bool = True) -> int:
    with _open(base_url) as sock:
        host = base_url.removeprefix("http://")
        auth_line = f"Authorization: Bearer {GATEWAY_API_KEY}\r\n" if auth else ""
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth_line}"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {content_length}\r\n\r\n".encode()
        )
        head = sock.recv(4096).decode("latin-1")
        return int(head.split()[1])


# ------------------------------------------------------------------ protected probes


def test_health_and_metrics_protected_when_configured(workdir: Path) -> None:
    env = {
        "GATEWAY_TRITON__URL": unreachable_triton_url(),
        "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}"]',
        "GATEWAY_AUTH__PROTECT_HEALTH": "true",
        "GATEWAY_AUTH__PROTECT_METRICS": "true",
    }
    with run_gateway(env, workdir / "protected.log", start_timeout=60) as gateway:
        base = gateway.base_url
        for path in ("/health/ready", "/metrics"):
            assert_openai_error(httpx.get(f"{base}{path}"), 401)
        assert httpx.get(f"{base}/metrics", headers=AUTH).status_code == 200
        assert httpx.get(f"{base}/health/live", headers=AUTH).status_code == 200
        # No CORS unless origins are configured.
        preflight = httpx.options(f"{base}{CHAT}", headers={"Origin": "https://app.example",
                                                            "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
