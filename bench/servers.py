"""The services under test, as separate processes on free loopback ports (as in production).

Triton comes from the launcher's `TritonServer`; the gateway is `python -m gateway` with
GATEWAY_* settings in its environment.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from launcher.installation import TritonInstallation, find_installation
from launcher.server import TritonServer
from launcher.settings import TritonSettings

_REPO_ROOT = Path(__file__).resolve().parents[1]
_POLL_S = 0.2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _installation(settings: TritonSettings) -> TritonInstallation:
    """The launcher's installation, with this interpreter's own libpython first.

    The wheel's python-backend stub links `libpython3.X.so`; without this it can pick
    the system's copy, whose ABI differs from this interpreter's extension modules
    (seen here: `_ssl` fails with `undefined symbol: _PyModule_Add`).
    """
    found = find_installation(settings.binary, settings.work_dir)
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return found
    return dataclasses.replace(found, library_dirs=(Path(libdir), *found.library_dirs))


@contextmanager
def triton(repository: Path, log_path: Path, ready_timeout_s: float) -> Iterator[TritonServer]:
    settings = TritonSettings(
        host="127.0.0.1",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        exit_timeout_secs=10,
    )
    server = TritonServer(repository, settings, log_path=log_path, installation=_installation(settings))
    server.start()
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop()


@dataclass
class Gateway:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def gateway(
    settings_env: Mapping[str, str],
    log_path: Path,
    start_timeout_s: float = 120.0,
    module: Sequence[str] = ("-m", "gateway"),
) -> Iterator[Gateway]:
    """`python -m gateway` (or `module`, a wrapper of it) with only the given GATEWAY_*
    settings (none inherited)."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env.update({"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **settings_env})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *module],
            cwd=_REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    handle = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(handle, start_timeout_s)
        yield handle
    finally:
        _stop(process)


def _wait_ready(handle: Gateway, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            tail = handle.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"gateway exited with {handle.process.returncode}:\n{tail}")
        try:
            response = httpx.get(f"{handle.base_url}/health/ready", timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(_POLL_S)
    raise RuntimeError(f"gateway not ready after {timeout_s} s: {last}")


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
