"""CPU seconds per service process (Linux /proc), to show where a phase's time goes.

Reading /proc/<pid>/stat costs nothing measurable, so it runs in the timed phases
(unlike a sampling profiler). Triton's python models are child processes of
tritonserver (`triton_python_backend_stub <repo>/<model>/1/model.py ...`), named here
by their model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
CLIENT = "bench client"  # the load generator (this process)


def parse_stat(text: str) -> tuple[int, float]:
    """(parent pid, user + system CPU seconds) from one /proc/<pid>/stat line.

    The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    """
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state(3) ppid(4) ... utime(14) stime(15), i.e. offsets 1 and 11, 12 here.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def model_of(cmdline: list[str]) -> str | None:
    """The model name of a python backend stub's command line, else None."""
    if not cmdline or not cmdline[0].endswith("triton_python_backend_stub") or len(cmdline) < 2:
        return None
    parts = Path(cmdline[1]).parts  # <repo>/<model>/<version>/model.py
    return parts[-3] if len(parts) >= 3 else None


def _read_stat(pid: int) -> tuple[int, float] | None:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone, or not ours to read


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def service_processes(triton_pid: int, gateway_pid: int) -> dict[str, int]:
    """component name -> pid: gateway, tritonserver, and one `model:<name>` per stub."""
    found = {"gateway": gateway_pid, "tritonserver": triton_pid, CLIENT: os.getpid()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is None or stat[0] != triton_pid:
            continue
        model = model_of(_cmdline(int(entry.name)))
        if model is not None:
            found[f"model:{model}"] = int(entry.name)
    return found


def cpu_seconds(processes: Mapping[str, int]) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, pid in processes.items():
        stat = _read_stat(pid)
        if stat is not None:
            times[name] = stat[1]
    return times


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds spent per component between two readings, busiest first, idle ones dropped."""
    spent = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    return dict(sorted(((n, s) for n, s in spent.items() if s > 0), key=lambda item: -item[1]))
