"""TritonServer: start tritonserver as a child process, wait until ready, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from launcher.installation import TritonInstallation, find_installation
from launcher.parent_death import die_with_parent
from launcher.settings import TritonSettings

# Extra seconds after --exit-timeout-secs before a stuck server is killed.
_KILL_GRACE_SECS = 10.0
_POLL_SECS = 0.2


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready."""


class TritonServer:
    """One tritonserver process over a model repository.

    ``with TritonServer(repo) as server:`` starts it and waits until
    ``/v2/health/ready``; leaving the block stops it (SIGTERM, then SIGKILL
    after the exit timeout).
    """

    def __init__(
        self,
        repository: Path,
        settings: TritonSettings | None = None,
        *,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        installation: TritonInstallation | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.settings = settings or TritonSettings()
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self._installation = installation
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # Addresses, as clients want them.
    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port, the form tritonclient.grpc takes."""
        return f"{self._client_host}:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.metrics_port}/metrics"

    @property
    def urls(self) -> dict[str, str]:
        return {"http": self.http_url, "grpc": self.grpc_url, "metrics": self.metrics_url}

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def poll(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._process.poll() if self._process else None

    def command(self, installation: TritonInstallation) -> list[str]:
        s = self.settings
        return [
            str(installation.binary),
            f"--model-repository={self.repository}",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
            "--allow-metrics=true",
            # Time-to-first-response histograms of decoupled (streaming) models,
            # Triton >= 2.52 (24.11); the wheel's 2.51 accepts and ignores it.
            "--metrics-config=histogram_latencies=true",
            # p50/p90/p99 of request, queue and compute latency per model (any version).
            "--metrics-config=summary_latencies=true",
            f"--exit-timeout-secs={s.exit_timeout_secs}",
            f"--log-verbose={s.log_verbose}",
            *installation.args(),
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start tritonserver (returns at once; see wait_ready)."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("tritonserver is already running")
        if not self.repository.is_dir():
            raise TritonStartError(f"model repository {self.repository} is not a directory")
        self._check_ports_free()
        installation = self._installation or find_installation(self.settings.binary, self.settings.work_dir)
        stdout: IO[bytes] | None = None
        if self._log is not None:  # left open by a kill(): restarting after one
            self._log.close()
            self._log = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = stdout = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            self.command(installation),
            env=installation.env(dict(os.environ)),
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C reaches only the
            # launcher, which forwards one SIGTERM (a second signal would make
            # Triton skip its graceful shutdown).
            start_new_session=True,
            # If the launcher is killed outright, Triton goes with it (its python
            # backend stubs follow their parent on their own) and frees its ports.
            preexec_fn=die_with_parent(signal.SIGKILL),
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until /v2/health/ready answers 200; raise TritonStartError if it exits first."""
        process = self._require_process()
        limit = self.settings.ready_timeout_secs if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = f"{self.http_url}/v2/health/ready"
        while True:
            code = process.poll()
            if code is not None:
                raise TritonStartError(f"tritonserver exited with code {code} before it was ready{self._log_tail()}")
            if _http_ok(url):
                return
            if time.monotonic() > deadline:
                raise TritonStartError(f"tritonserver was not ready within {limit}s{self._log_tail()}")
            time.sleep(_POLL_SECS)

    def terminate(self) -> None:
        """Ask tritonserver to shut down gracefully (SIGTERM); returns at once."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; its exit code."""
        return self._require_process().wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, wait out the exit timeout, then SIGKILL whatever of its group is left
        (the server itself, or a stub that outlived it). Returns the exit code."""
        process = self._process
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(self.settings.exit_timeout_secs + _KILL_GRACE_SECS)
            return self.kill()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self) -> int | None:
        """SIGKILL at once (what an OOM kill does) the whole process group: the server if it
        still runs, and its python backend stubs (or anything a model started), which could
        otherwise outlive it and run on under init. The group id stays taken while any
        member lives, so this never reaches another group."""
        process = self._process
        if process is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("tritonserver was not started")
        return self._process

    def _check_ports_free(self) -> None:
        s = self.settings
        for name, port in (("HTTP", s.http_port), ("gRPC", s.grpc_port), ("metrics", s.metrics_port)):
            if port and not _port_free(s.host, port):
                raise TritonStartError(f"Triton {name} port {s.host}:{port} is already in use")

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - loopback http URL we built
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
