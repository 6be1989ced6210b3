"""Probes and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dependencies import MetricsDep, ReadinessDep
from gateway.errors import error_response
from gateway.protocol import ErrorResponse

router = APIRouter(tags=["operations"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up (no dependency checks)."""
    return {"status": "ok"}


@router.get("/health/ready",
            responses={503: {"model": ErrorResponse, "description": "Triton or a model is not ready"}})
async def ready(readiness: ReadinessDep) -> JSONResponse:
    """200 only while Triton and every ensemble are ready; 503 otherwise."""
    state = await readiness.get()
    if not state.ready:
        return error_response(503, state.reason, code="not_ready")
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}})
async def metrics(gateway_metrics: MetricsDep) -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(gateway_metrics.registry), media_type=CONTENT_TYPE_LATEST)
