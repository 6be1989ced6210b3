# syntax=docker/dockerfile:1
# The OpenAI-compatible HTTP gateway (CPU only: no torch, no CUDA).
# Build from the repository root: docker build -f docker/gateway.Dockerfile -t canary-qwen-gateway .

# ---- build: a virtual environment with the pinned `gateway` extra -------------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
# Dependencies before code, so a code change reuses the dependency layer.
COPY constraints.txt pyproject.toml ./
COPY canary_qwen/ canary_qwen/
COPY gateway/ gateway/
# Binary wheels only: the final image has no compiler, so nothing may need one.
# silero-vad only for its ONNX file (gateway/audio/vad.py): --no-deps keeps torch out.
RUN pip install --only-binary=:all: -c constraints.txt '.[gateway]' \
    && pip install --only-binary=:all: --no-deps -c constraints.txt silero-vad \
    && python -m compileall -q /opt/venv

# ---- runtime: the venv on a clean slim image, unprivileged ------------------
FROM python:3.11.14-slim-bookworm

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080

# A fixed uid/gid the Kubernetes securityContext can name (runAsUser 10001).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway

COPY --from=build /opt/venv /opt/venv

# Read-only root friendly: bytecode is precompiled, nothing writes outside /tmp
# (uploads spool there: mount a tmpfs/emptyDir at /tmp).
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('GATEWAY_PORT', '8080'), timeout=4)"]

# uvicorn in factory mode (gateway.app:create_app) with the gateway's settings applied:
# GATEWAY_HOST/PORT, log format and level, and the SIGTERM drain (GATEWAY_DRAIN_TIMEOUT_S).
# Exec form: it is PID 1 and receives SIGTERM directly.
CMD ["python", "-m", "gateway"]
