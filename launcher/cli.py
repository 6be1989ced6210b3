"""`python -m launcher triton|serve --repository DIR [-- extra tritonserver flags]`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from launcher.gateway import GatewayProcess
from launcher.installation import TritonNotFoundError
from launcher.server import TritonServer, TritonStartError
from launcher.settings import TritonSettings
from launcher.signals import StopRequest

log = logging.getLogger("launcher")

# How often the main loop checks that its children are still alive.
_WATCH_SECS = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("triton", "run tritonserver on the model repository until SIGTERM / Ctrl-C"),
        ("serve", "run tritonserver, then the HTTP gateway in front of it, until SIGTERM / Ctrl-C"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--repository", type=Path, required=True, help="filled Triton model repository")
        sub.add_argument(
            "extra", nargs=argparse.REMAINDER, help="after `--`: extra tritonserver flags, passed through"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    server = TritonServer(args.repository, TritonSettings(), extra_args=extra)
    try:
        with StopRequest() as stop:
            return _run(server, stop, with_gateway=args.command == "serve")
    except (TritonNotFoundError, TritonStartError) as exc:
        log.error("%s", exc)
        return 1


def _run(server: TritonServer, stop: StopRequest, *, with_gateway: bool) -> int:
    gateway: GatewayProcess | None = None
    try:
        server.start()
        log.info("tritonserver started (pid %s) on %s", server.pid, server.repository)
        try:
            server.wait_ready()
        except TritonStartError:
            if stop.requested:  # stopped while loading: not an error
                return 0
            raise
        log.info("Triton ready: %s", ", ".join(f"{k} {v}" for k, v in server.urls.items()))
        if with_gateway:
            gateway = GatewayProcess(server.grpc_url)
            gateway.start()
            log.info("gateway started against Triton gRPC %s", server.grpc_url)
        while not stop.event.wait(_WATCH_SECS):
            if server.poll() is not None:
                log.error("tritonserver exited unexpectedly with code %s", server.poll())
                return 1
            if gateway is not None and gateway.poll() is not None:
                log.error("gateway exited unexpectedly with code %s", gateway.poll())
                return 1
        log.info("signal %s: stopping", stop.signum)
        return 0
    finally:
        # Gateway first, so it stops taking requests before Triton goes away.
        if gateway is not None:
            gateway.stop()
        code = server.stop()
        log.info("tritonserver stopped (exit code %s)", code)
