"""Facts about where and on what a run happened: machine, CPUs, accelerator, code version."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def memory_gib(meminfo: str) -> float | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def accelerator() -> str:
    """The CUDA device the cpu tier's python models would use, else "none"."""
    try:
        import torch
    except ImportError:
        return "none"
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "none"


BENCH_OUTPUTS = ("bench/results", "README.md")


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=_REPO_ROOT, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def describe(now: dt.datetime) -> dict[str, Any]:
    # The benchmark's own outputs do not count: a second run in a row would otherwise always
    # report its code as changed.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in BENCH_OUTPUTS))
    return {
        "machine": f"{platform.node()} ({platform.machine()}, {cpu_model(_read('/proc/cpuinfo'))})",
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(_read("/proc/meminfo")),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "accelerator": accelerator(),
        "python": platform.python_version(),
        "date": now.isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "commit_dirty": bool(dirty and dirty != "unknown"),
    }
