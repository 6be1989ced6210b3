"""Launcher settings: one pydantic-settings class, read from the environment.

Triton's listen address and ports use the ``TRITON_`` prefix
(``TRITON_HTTP_PORT``, ``TRITON_GRPC_PORT``, ``TRITON_METRICS_PORT``, ...);
the gateway reads its own ``GATEWAY_*`` settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_work_dir() -> Path:
    return Path.home() / ".cache" / "canary-qwen-serve"


class TritonSettings(BaseSettings):
    """How tritonserver is started."""

    model_config = SettingsConfigDict(env_prefix="TRITON_", extra="ignore")

    host: str = Field(
        default="127.0.0.1",
        description="Address every Triton endpoint listens on (0.0.0.0 inside a container).",
    )
    http_port: int = Field(default=8000, ge=0, le=65535, description="HTTP/REST port (/v2/health/ready).")
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="gRPC port (the gateway's client).")
    metrics_port: int = Field(default=8002, ge=0, le=65535, description="Prometheus metrics port (/metrics).")
    exit_timeout_secs: PositiveInt = Field(
        default=30,
        description="On SIGTERM Triton waits this long for in-flight requests before it exits.",
    )
    ready_timeout_secs: PositiveInt = Field(
        default=300, description="How long the launcher waits for /v2/health/ready after the start."
    )
    binary: Path | None = Field(
        default=None,
        description="tritonserver to run. Unset: `tritonserver` on PATH (NVIDIA's container), "
        "else the binary bundled in the nvidia-pytriton wheel.",
    )
    work_dir: Path = Field(
        default_factory=_default_work_dir,
        description="Where the wheel's tritonserver is prepared once (backends, stub, caches).",
    )
    log_verbose: int = Field(default=0, ge=0, description="tritonserver --log-verbose level.")
