"""Sampling profiles of the service processes with py-spy, in an untimed extra phase.

py-spy attaches to running processes (no restart, no code change) and writes "raw"
collapsed stacks: one line per distinct stack, `frame;frame;...;leaf count`. The summary
keeps, per process, the share of samples whose innermost frame is each function.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_LINE_NUMBER = re.compile(r":\d+\)$")


def leaf_function(stack: str) -> str:
    """`a (x.py:1);b (y.py:7)` -> `b (y.py)`: the innermost frame without its line number."""
    leaf = stack.rsplit(";", 1)[-1].strip()
    return _LINE_NUMBER.sub(")", leaf) or "(native or idle)"


def summarize(raw: str, rate_hz: int, top: int = 8) -> dict[str, Any]:
    """Busy seconds and the top leaf functions (percent of samples) of one raw profile."""
    leaves: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if count.isdigit():
            leaves[leaf_function(stack)] += int(count)
    total = sum(leaves.values())
    if not total:
        return {"busy_s": 0.0, "top": []}
    return {
        "busy_s": round(total / rate_hz, 2),
        "top": [[name, round(100 * n / total, 1)] for name, n in leaves.most_common(top)],
    }


def find_py_spy() -> Path | None:
    # The virtual environment's bin is not on PATH when it runs as .venv/bin/python.
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    return Path(found) if found else None


class Profiles:
    """`with Profiles(py_spy, {"gateway": pid, ...}, out_dir):` records each process until exit."""

    def __init__(self, py_spy: Path, processes: Mapping[str, int], out_dir: Path, rate_hz: int = 50) -> None:
        self.py_spy = py_spy
        self.processes = dict(processes)
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def path(self, name: str) -> Path:
        return self.out_dir / f"{name.replace(':', '-').replace(' ', '-')}.txt"

    def __enter__(self) -> Profiles:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.processes.items():
            log = self.path(name).with_suffix(".log").open("wb")
            self._logs.append(log)
            self._running[name] = subprocess.Popen(
                [str(self.py_spy), "record", "--pid", str(pid), "--rate", str(self.rate_hz),
                 "--format", "raw", "--output", str(self.path(name)), "--nonblocking"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for process in self._running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for process in self._running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()

    def summaries(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for name in self.processes:
            path = self.path(name)
            if path.exists():
                result[name] = summarize(path.read_text(errors="replace"), self.rate_hz)
        return dict(sorted(result.items(), key=lambda item: -float(item[1]["busy_s"])))
