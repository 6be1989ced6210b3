"""`python -m gateway`: run the gateway under uvicorn with the settings' host and port."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn

from gateway.logging_setup import log_config
from gateway.settings import Settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    settings = Settings()
    # uvicorn drains on SIGTERM, then re-raises the signal under the handler it found:
    # this one turns a finished drain into exit status 0 (Kubernetes and compose read
    # -15 as a crash).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=log_config(settings.log_level),
        # SIGTERM: uvicorn stops accepting at once, then waits this long for in-flight requests.
        timeout_graceful_shutdown=settings.drain_timeout_s,
        proxy_headers=True,
        ws_ping_interval=settings.realtime.ping_interval_s,
        ws_ping_timeout=settings.realtime.ping_timeout_s,
    )


if __name__ == "__main__":
    main()
