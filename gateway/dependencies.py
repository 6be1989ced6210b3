"""Annotated dependencies: the app-scoped objects routes need, from app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.chat import ChatService
from gateway.metrics import GatewayMetrics
from gateway.readiness import ReadinessProbe
from gateway.settings import Settings
from gateway.transcription import TranscriptionService


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _transcriber(request: Request) -> TranscriptionService:
    return request.app.state.transcriber


def _chat(request: Request) -> ChatService:
    return request.app.state.chat


def _readiness(request: Request) -> ReadinessProbe:
    return request.app.state.readiness


def _metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
TranscriberDep = Annotated[TranscriptionService, Depends(_transcriber)]
ChatDep = Annotated[ChatService, Depends(_chat)]
ReadinessDep = Annotated[ReadinessProbe, Depends(_readiness)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
