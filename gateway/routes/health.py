"""Probes and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dependencies import MetricsDep, ReadinessDep
from gateway.errors import error_response

router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up (no dependency checks)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(readiness: ReadinessDep) -> JSONResponse:
    """200 only while Triton and every ensemble are ready; 503 otherwise."""
    state = await readiness.get()
    if not state.ready:
        return error_response(503, state.reason, code="not_ready")
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(gateway_metrics: MetricsDep) -> Response:
    return Response(generate_latest(gateway_metrics.registry), media_type=CONTENT_TYPE_LATEST)
