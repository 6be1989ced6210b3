"""Resident memory of another process, from /proc (Linux).

`PeakRss` resets the kernel's high-water mark (VmHWM, via clear_refs) and also polls
VmRSS in a thread, so a peak is caught even where the reset is not permitted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

_KIB = 1024
_MIB = 1024 * 1024


def parse_status(text: str) -> dict[str, int]:
    """The `Vm*`/`Rss*` lines of /proc/<pid>/status in bytes (the kernel writes kB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key.startswith(("Vm", "Rss")) and len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0]) * _KIB
    return values


def read_status(pid: int) -> dict[str, int]:
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def rss_bytes(pid: int) -> int:
    return read_status(pid)["VmRSS"]


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mib(value: int) -> float:
    return round(value / _MIB, 1)


class PeakRss:
    """`with PeakRss(pid) as peak:` ... then `peak.peak_bytes`, `peak.baseline_bytes`."""

    def __init__(self, pid: int, poll_s: float = 0.02) -> None:
        self.pid = pid
        self.poll_s = poll_s
        self.baseline_bytes = 0
        self._polled_peak = 0
        self._hwm_reset = False
        self._hwm_after = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-poll", daemon=True)

    @property
    def peak_bytes(self) -> int:
        """Highest RSS seen: the kernel's mark when it was reset, never below the polled one."""
        return max(self._polled_peak, self._hwm_after if self._hwm_reset else 0)

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    @property
    def method(self) -> str:
        return "VmHWM reset + VmRSS poll" if self._hwm_reset else "VmRSS poll"

    def __enter__(self) -> PeakRss:
        self.baseline_bytes = rss_bytes(self.pid)
        self._polled_peak = self.baseline_bytes
        self._hwm_reset = reset_peak(self.pid)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        status = read_status(self.pid)
        self._polled_peak = max(self._polled_peak, status["VmRSS"])
        self._hwm_after = status.get("VmHWM", 0)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._polled_peak = max(self._polled_peak, rss_bytes(self.pid))
            except (OSError, KeyError):
                return  # the process is gone; __exit__ reports what was seen
