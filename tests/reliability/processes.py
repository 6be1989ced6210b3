"""Process probes for the reliability tests: resident memory, process groups,
and a Triton that can be SIGKILLed and started again on the same ports."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from launcher import TritonServer, TritonSettings

_SHM = "/dev/shm/"


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def group_members(pgid: int) -> list[int]:
    """Live processes of one process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def mapped_shm(pids: list[int]) -> set[Path]:
    """/dev/shm files mapped by these processes (the python backend's regions)."""
    paths: set[Path] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            at = line.find(_SHM)
            if at >= 0:
                paths.add(Path(line[at:].removesuffix(" (deleted)")))
    return paths


def open_files_under(pid: int, folder: Path) -> list[str]:
    """Files under `folder` that `pid` holds open (unlinked temporary files included)."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(folder)):
            held.append(target)
    return held


class RestartableTriton:
    """A tritonserver on fixed ports that a test may SIGKILL and start again.

    `start()` blocks until ready. `kill()` SIGKILLs the whole process group (the
    server and its python backend stubs, as a container kill would) and removes
    the shared-memory regions the dead stubs can no longer clean up.
    """

    def __init__(self, repository: Path, settings: TritonSettings, log_path: Path) -> None:
        self.repository = repository
        self.settings = settings
        self.log_path = log_path
        self._server: TritonServer | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}/metrics"

    def start(self, timeout: float = 120.0) -> None:
        self._server = TritonServer(self.repository, self.settings, log_path=self.log_path)
        self._server.start()
        try:
            self._server.wait_ready(timeout)
        except BaseException:
            self._server.stop()
            raise

    def kill(self) -> None:
        server = self._server
        if server is None or server.pid is None or server.poll() is not None:
            return
        members = group_members(server.pid)
        regions = mapped_shm(members)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        server.stop()  # closes the log file
        deadline = time.monotonic() + 10
        while group_members(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for region in regions:
            region.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
