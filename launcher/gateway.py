"""The HTTP gateway as a child process of `python -m launcher serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from launcher.parent_death import die_with_parent

# The gateway drains in-flight requests on SIGTERM (its own setting); past this
# many seconds the launcher stops waiting and kills it.
_STOP_TIMEOUT_SECS = 120.0


class GatewayProcess:
    """`python -m gateway` (uvicorn over gateway.app:create_app) pointed at one Triton."""

    def __init__(self, triton_grpc_url: str) -> None:
        self.triton_grpc_url = triton_grpc_url
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gateway"]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with the gateway aimed at the Triton this launcher started."""
        return {**base, "GATEWAY_TRITON__URL": self.triton_grpc_url}

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.command(),
            env=self.env(dict(os.environ)),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # signals come from the launcher only
            # If the launcher is killed outright: stop listening at once, answer what is in flight.
            preexec_fn=die_with_parent(signal.SIGTERM),
        )

    def poll(self) -> int | None:
        return self._process.poll() if self._process else None

    def stop(self) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode
