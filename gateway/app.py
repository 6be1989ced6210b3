"""App factory: `uvicorn --factory gateway.app:create_app`."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gateway.auth import AuthMiddleware
from gateway.body_limit import BodyLimitMiddleware
from gateway.chat import ChatService
from gateway.concurrency import ConcurrencyLimitMiddleware
from gateway.errors import install_error_handlers
from gateway.logging_setup import log_config
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.model_facts import ModelFactsCheck
from gateway.readiness import ReadinessProbe
from gateway.realtime import routes as realtime
from gateway.realtime.connection import RealtimeService
from gateway.request_context import REQUEST_ID_HEADER, RequestIdMiddleware
from gateway.routes import chat, health, models, transcriptions
from gateway.settings import Settings
from gateway.transcription import TranscriptionService
from gateway.triton_client import TritonClient

log = logging.getLogger(__name__)

# Multipart overhead and the small form fields on top of the file itself.
_FORM_OVERHEAD_BYTES = 64 * 1024
# JSON chat bodies carry audio as base64 (4/3 of the bytes) plus the messages.
_CHAT_OVERHEAD_BYTES = 1024 * 1024


def _lifespan(settings: Settings, metrics: GatewayMetrics):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The gRPC aio channel must be created inside the running event loop.
        triton = TritonClient(settings.triton, metrics)
        facts = ModelFactsCheck(triton.model_parameters, settings)
        transcriber = TranscriptionService(settings, triton, metrics, facts)
        app.state.transcriber = transcriber
        app.state.chat = ChatService(settings, triton, transcriber)
        app.state.realtime = RealtimeService(settings, triton, metrics, facts)
        await facts.at_startup()  # settings the model cannot serve stop the start here
        app.state.readiness = ReadinessProbe(
            facts.guard(triton.models_ready),
            [settings.triton.asr_model, settings.triton.asr_stream_model, settings.triton.chat_model],
            settings.triton.ready_cache_s,
        )
        log.info("gateway serving %s via Triton %s", settings.model.id, settings.triton.url)
        try:
            yield
        finally:
            await triton.close()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Also when started as `uvicorn --factory`: every line gets its request id.
    logging.config.dictConfig(log_config(settings.log_level))
    metrics = GatewayMetrics()
    app = FastAPI(
        title="Canary-Qwen gateway",
        summary="OpenAI-compatible speech recognition and audio Q&A over Triton",
        version="0.1.0",
        lifespan=_lifespan(settings, metrics),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)

    app.include_router(transcriptions.router)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(realtime.router)

    # add_middleware wraps: the last added runs first.
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        limit=settings.limits.max_concurrent_requests,
        retry_after_s=settings.limits.retry_after_s,
        limited_prefixes=("/v1/audio/", "/v1/chat/"),
        metrics=metrics,
    )
    upload_cap = settings.limits.max_upload_bytes
    app.add_middleware(BodyLimitMiddleware, caps={
        transcriptions.ROUTE: upload_cap + _FORM_OVERHEAD_BYTES,
        chat.ROUTE: upload_cap * 4 // 3 + _CHAT_OVERHEAD_BYTES,
    })
    protected = ["/v1/"]
    if settings.auth.protect_health:
        protected.append("/health/")
    if settings.auth.protect_metrics:
        protected.append("/metrics")
    app.add_middleware(AuthMiddleware, api_keys=settings.auth.api_keys, protected_prefixes=protected)
    if settings.cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
