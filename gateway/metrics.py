"""Prometheus metrics of the gateway, on a registry owned by each app instance."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
_PIECE_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds", "HTTP request latency (to the end of the body).",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Inference requests being handled now.", registry=r
        )
        self.rejected = Counter(
            "gateway_requests_rejected", "Requests refused by the concurrency limit (429).", registry=r
        )
        self.audio_seconds = Counter(
            "gateway_audio_seconds", "Seconds of decoded audio processed.", ["route"], registry=r
        )
        self.real_time_factor = Histogram(
            "gateway_real_time_factor",
            "Processing time divided by audio duration per transcription (lower is faster).",
            buckets=_RTF_BUCKETS, registry=r,
        )
        self.pieces = Histogram(
            "gateway_pieces_per_request", "Audio pieces sent to Triton per request.",
            buckets=_PIECE_BUCKETS, registry=r,
        )
        self.triton_latency = Histogram(
            "gateway_triton_request_duration_seconds", "Latency of Triton calls by model.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.triton_errors = Counter(
            "gateway_triton_errors", "Failed Triton calls by model and gRPC status.",
            ["model", "status"], registry=r,
        )
        # Per Triton replica (address host:port); series of a replica that is no longer resolved are removed.
        self.triton_replica_requests = Counter(
            "gateway_triton_replica_requests", "Triton call attempts by replica, model and outcome "
            "(ok, a gRPC status, cancelled).", ["replica", "model", "status"], registry=r,
        )
        self.triton_replica_latency = Histogram(
            "gateway_triton_replica_request_duration_seconds", "Latency of Triton call attempts by replica.",
            ["replica", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.triton_replica_in_flight = Gauge(
            "gateway_triton_replica_in_flight", "Triton calls in flight by replica.", ["replica"], registry=r
        )
        self.triton_replica_ready = Gauge(
            "gateway_triton_replica_ready", "1 while the replica's last check or call found it ready, else 0.",
            ["replica"], registry=r,
        )
        self.triton_retries = Counter(
            "gateway_triton_retries", "Calls retried on another replica after UNAVAILABLE, by model.",
            ["model"], registry=r,
        )
        self.realtime_sessions_open = Gauge(
            "gateway_realtime_sessions_open", "Realtime transcription sessions open now.", registry=r
        )
        self.realtime_sessions = Counter(
            "gateway_realtime_sessions", "Realtime sessions ended, by how they ended.", ["outcome"], registry=r
        )
        self.realtime_utterances = Counter(
            "gateway_realtime_utterances", "Committed realtime utterances by outcome.", ["outcome"], registry=r
        )
        self.realtime_errors = Counter(
            "gateway_realtime_errors", "Error events sent to realtime clients, by code.", ["code"], registry=r
        )
        self.realtime_transcript_latency = Histogram(
            "gateway_realtime_transcript_latency_seconds",
            "From the end of an utterance (VAD stop or client commit) to its completed transcript.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )


class MetricsMiddleware:
    """Counts every HTTP request by its route template (not the raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route=path, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=path, method=method).observe(time.perf_counter() - started)
