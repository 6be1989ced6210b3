"""The launcher against a real tritonserver, on a throwaway one-model repository."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from launcher import TritonServer, TritonSettings, TritonStartError
from launcher.installation import find_installation
from tests.fixtures.ports import free_port
from tests.fixtures.triton import log_tail, triton_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_TIMEOUT_SECS = 5

DOUBLER_CONFIG = """\
name: "doubler"
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { }
"""

# `ssl` is a stdlib C extension: it loads only if the stub runs on this
# interpreter's own libpython (not an older system one).
DOUBLER_MODEL = """\
import ssl  # noqa: F401

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = pb_utils.Tensor("OUT", (2.0 * x).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


# Decoupled: Triton's latency histogram (time to first response) covers these.
STREAMER_CONFIG = """\
name: "streamer"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

STREAMER_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for value in pb_utils.get_input_tensor_by_name(request, "IN").as_numpy():
                out = pb_utils.Tensor("OUT", np.array([value], dtype=np.float32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launcher_repo")
    (root / "doubler" / "1").mkdir(parents=True)
    (root / "doubler" / "config.pbtxt").write_text(DOUBLER_CONFIG)
    (root / "doubler" / "1" / "model.py").write_text(DOUBLER_MODEL)
    (root / "streamer" / "1").mkdir(parents=True)
    (root / "streamer" / "config.pbtxt").write_text(STREAMER_CONFIG)
    (root / "streamer" / "1" / "model.py").write_text(STREAMER_MODEL)
    return root


@pytest.fixture()
def log_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tritonserver.log"
    yield path


def _infer_http(server: TritonServer, values: list[float]) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("IN", [1, len(values)], "FP32")
    tensor.set_data_from_numpy(np.array([values], dtype=np.float32))
    return client.infer("doubler", [tensor]).as_numpy("OUT")


def _infer_grpc(server: TritonServer, values: list[float]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [1, len(values)], "FP32")
    tensor.set_data_from_numpy(np.array([values], dtype=np.float32))
    return client.infer("doubler", [tensor]).as_numpy("OUT")


def _stream_grpc(server: TritonServer, values: list[float]) -> list[float]:
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: received.put(error or result))
    tensor = grpcclient.InferInput("IN", [len(values)], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    client.async_stream_infer("streamer", [tensor], enable_empty_final_response=True)
    out: list[float] = []
    while True:
        item = received.get(timeout=30)
        assert not isinstance(item, Exception), item
        if item.get_response().parameters["triton_final_response"].bool_param:
            break
        out.extend(item.as_numpy("OUT").tolist())
    client.stop_stream()
    return out


def _port_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serves_http_grpc_and_latency_histograms(repository: Path, log_path: Path) -> None:
    with TritonServer(repository, triton_settings(), log_path=log_path) as server:
        np.testing.assert_array_equal(_infer_http(server, [1.0, 2.5]), [[2.0, 5.0]])
        np.testing.assert_array_equal(_infer_grpc(server, [-3.0]), [[-6.0]])
        assert _stream_grpc(server, [1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
        assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()
        metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        assert 'nv_inference_count{model="doubler",version="1"} 2' in metrics
        assert 'nv_inference_request_summary_us_count{model="doubler",version="1"} 2' in metrics
        version = httpclient.InferenceServerClient(server.http_url.removeprefix("http://")).get_server_metadata()
        if tuple(int(p) for p in version["version"].split(".")[:2]) >= (2, 52):
            # Time-to-first-response histograms exist from Triton 2.52 (24.11) on.
            assert 'nv_inference_first_response_histogram_ms_count{model="streamer",version="1"} 1' in metrics
        assert server.poll() is None


def test_sigterm_stops_within_exit_timeout_then_restarts_on_same_ports(repository: Path, log_path: Path) -> None:
    settings = triton_settings(exit_timeout_secs=EXIT_TIMEOUT_SECS)
    server = TritonServer(repository, settings, log_path=log_path)
    with server:
        first_pid = server.pid
        started = time.monotonic()
        server.terminate()
        assert server.wait(timeout=EXIT_TIMEOUT_SECS + 5) == 0, log_tail(log_path)
        assert time.monotonic() - started < EXIT_TIMEOUT_SECS + 5
    for port in (settings.http_port, settings.grpc_port, settings.metrics_port):
        assert not _port_listening(port)

    # Same ports, same object: a clean stop leaves nothing behind.
    with server:
        assert server.pid != first_pid
        np.testing.assert_array_equal(_infer_grpc(server, [4.0]), [[8.0]])


# A model that starts a process of its own, which ignores SIGTERM and outlives the server.
SPAWNER_MODEL = """\
import signal
import subprocess
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        child = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
        (Path(args["model_repository"]) / "child.pid").write_text(str(child.pid))

    def execute(self, requests):
        return []
"""


def test_stop_leaves_nothing_of_the_servers_process_group(tmp_path: Path, log_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "spawner" / "1").mkdir(parents=True)
    (root / "spawner" / "config.pbtxt").write_text(DOUBLER_CONFIG.replace('"doubler"', '"spawner"'))
    (root / "spawner" / "1" / "model.py").write_text(SPAWNER_MODEL)
    with TritonServer(root, triton_settings(exit_timeout_secs=EXIT_TIMEOUT_SECS), log_path=log_path) as server:
        stub_and_child = _descendants(server.pid)
        child = int((root / "spawner" / "child.pid").read_text())
        assert child in stub_and_child and len(stub_and_child) >= 2, [_command(p) for p in stub_and_child]
    left, _ = _wait_gone(stub_and_child, [], timeout=5)  # SIGKILL is at once; dying takes a moment
    assert not left, left


def test_refuses_a_port_in_use(repository: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TritonServer(repository, triton_settings(grpc_port=port))
        with pytest.raises(TritonStartError, match=f"gRPC port 127.0.0.1:{port} is already in use"):
            server.start()
        assert server.pid is None


def test_reports_a_server_that_exits_before_ready(tmp_path: Path, log_path: Path) -> None:
    # A model that cannot load makes tritonserver exit; the error carries its log.
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: oops\n')
    server = TritonServer(tmp_path / "repo", triton_settings(), log_path=log_path)
    with pytest.raises(TritonStartError, match=r"exited with code \d+ before it was ready(.|\n)*failed to load all models"):
        with server:
            pass
    assert server.poll() is not None


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="is not a directory"):
        TritonServer(tmp_path / "absent", triton_settings()).start()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_HTTP_PORT", "18100")
    monkeypatch.setenv("TRITON_GRPC_PORT", "18101")
    monkeypatch.setenv("TRITON_METRICS_PORT", "18102")
    settings = TritonSettings()
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (18100, 18101, 18102)
    for name in ("TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT"):
        monkeypatch.delenv(name)
    assert (TritonSettings().http_port, TritonSettings().grpc_port, TritonSettings().metrics_port) == (
        8000,
        8001,
        8002,
    )


def test_command_line(repository: Path, tmp_path: Path) -> None:
    settings = TritonSettings(http_port=1, grpc_port=2, metrics_port=3, exit_timeout_secs=7, work_dir=tmp_path)
    installation = find_installation(None, tmp_path)
    command = TritonServer(repository, settings, extra_args=["--log-verbose=1"]).command(installation)
    assert command[0] == str(installation.binary)
    for flag in (
        f"--model-repository={repository.resolve()}",
        "--http-address=127.0.0.1",
        "--http-port=1",
        "--grpc-address=127.0.0.1",
        "--grpc-port=2",
        "--metrics-port=3",
        "--metrics-config=histogram_latencies=true",
        "--metrics-config=summary_latencies=true",
        "--exit-timeout-secs=7",
    ):
        assert flag in command
    assert command[-1] == "--log-verbose=1"
    env = installation.env({"PATH": "/usr/bin"})
    # The python backend takes its interpreter from the first python on PATH.
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    if installation.backend_dir is not None:  # the nvidia-pytriton wheel, prepared here
        assert (installation.backend_dir / "python" / "triton_python_backend_stub").is_file()
        assert f"--backend-directory={installation.backend_dir}" in command
        assert any(str(d).endswith("nvidia_pytriton.libs") for d in installation.library_dirs)
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):
            assert installation.library_dirs[0] == Path(sysconfig.get_config_var("LIBDIR"))
            assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")


def _launcher(command: str, repository: Path, settings: TritonSettings, log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", command, "--repository", str(repository)],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "TRITON_HTTP_PORT": str(settings.http_port),
            "TRITON_GRPC_PORT": str(settings.grpc_port),
            "TRITON_METRICS_PORT": str(settings.metrics_port),
            "TRITON_EXIT_TIMEOUT_SECS": str(EXIT_TIMEOUT_SECS),
            **env,
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_http_ok(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout}s:\n{log.read_text(errors='replace')}")


def _wait_log(log: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


def test_cli_triton_runs_until_sigterm(repository: Path, tmp_path: Path) -> None:
    settings = triton_settings()
    log = tmp_path / "launcher.log"
    process = _launcher("triton", repository, settings, log)
    try:
        _wait_http_ok(f"http://127.0.0.1:{settings.http_port}/v2/health/ready", process, log)
        _wait_log(log, "Triton ready: http http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_TIMEOUT_SECS + 10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "tritonserver stopped (exit code 0)" in text, text
    assert not _port_listening(settings.http_port) and not _port_listening(settings.grpc_port)


def test_cli_serve_runs_triton_and_gateway_until_sigterm(repository: Path, tmp_path: Path) -> None:
    settings = triton_settings()
    gateway_port = free_port()
    log = tmp_path / "serve.log"
    process = _launcher("serve", repository, settings, log, GATEWAY_PORT=str(gateway_port), GATEWAY_HOST="127.0.0.1")
    try:
        _wait_http_ok(f"http://127.0.0.1:{settings.http_port}/v2/health/ready", process, log)
        _wait_http_ok(f"http://127.0.0.1:{gateway_port}/health/live", process, log)
        _wait_log(log, f"gateway started against Triton gRPC 127.0.0.1:{settings.grpc_port}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_TIMEOUT_SECS + 30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "tritonserver stopped (exit code 0)" in log.read_text()
    assert not _port_listening(gateway_port) and not _port_listening(settings.http_port)


# ---- no orphans: the launcher killed outright takes its servers with it ----------------

def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (children of every thread, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = {int(p) for p in children.read_text().split()}
            except OSError:
                continue
            todo.extend(pids - found)
            found |= pids
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def _kill_and_expect_nothing_left(process: subprocess.Popen, ports: list[int], log: Path) -> None:
    children = _descendants(process.pid)
    commands = " | ".join(_command(pid) for pid in children)
    assert "tritonserver" in commands, commands
    process.kill()  # SIGKILL: no handler runs, nothing is forwarded
    process.wait(timeout=10)
    # generous on a busy machine; it takes well under a second
    left, busy = _wait_gone(children, ports, timeout=20)
    assert not left and not busy, f"left running: {left}, ports still listening: {busy}\n{log.read_text()}"


def _wait_gone(pids: set[int], ports: list[int], timeout: float) -> tuple[list[str], list[int]]:
    """Wait until none of ``pids`` runs and no port listens; the commands still running
    (SIGKILLed on the way out: never leave the orphans a test is about) and the busy ports."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)]
        busy = [port for port in ports if _port_listening(port)]
        if not (left or busy) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    commands = [_command(pid) for pid in left]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return commands, busy


def test_sigkill_of_the_triton_launcher_leaves_no_tritonserver(repository: Path, tmp_path: Path) -> None:
    settings = triton_settings()
    log = tmp_path / "launcher.log"
    process = _launcher("triton", repository, settings, log)
    try:
        _wait_http_ok(f"http://127.0.0.1:{settings.http_port}/v2/health/ready", process, log)
        _kill_and_expect_nothing_left(
            process, [settings.http_port, settings.grpc_port, settings.metrics_port], log
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigkill_of_the_serve_launcher_leaves_no_tritonserver_or_gateway(repository: Path, tmp_path: Path) -> None:
    settings = triton_settings()
    gateway_port = free_port()
    log = tmp_path / "serve.log"
    process = _launcher("serve", repository, settings, log, GATEWAY_PORT=str(gateway_port), GATEWAY_HOST="127.0.0.1")
    try:
        _wait_http_ok(f"http://127.0.0.1:{gateway_port}/health/live", process, log)
        assert any("-m gateway" in _command(pid) for pid in _descendants(process.pid))
        _kill_and_expect_nothing_left(
            process, [gateway_port, settings.http_port, settings.grpc_port, settings.metrics_port], log
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
