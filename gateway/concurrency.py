"""Admission control: at most N inference requests at once, the rest get 429.

Rejecting instead of queueing keeps latency bounded and lets clients (or a load
balancer) retry elsewhere; Retry-After tells them when. The slot is held until
the response body, streamed or not, has been sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response
from gateway.metrics import GatewayMetrics


class ConcurrencyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        retry_after_s: int,
        limited_prefixes: Sequence[str],
        metrics: GatewayMetrics,
    ) -> None:
        self.app = app
        self._limit = limit
        self._retry_after = str(retry_after_s)
        self._prefixes = tuple(limited_prefixes)
        self._metrics = metrics
        self._active = 0  # single event loop: no lock needed

    @property
    def active(self) -> int:
        return self._active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self._prefixes):
            await self.app(scope, receive, send)
            return
        if self._active >= self._limit:
            self._metrics.rejected.inc()
            response = error_response(
                429,
                f"too many concurrent requests (limit {self._limit}); retry after {self._retry_after} s",
                headers={"Retry-After": self._retry_after},
                code="too_many_requests",
            )
            await response(scope, receive, send)
            return
        self._active += 1
        self._metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self._active -= 1
            self._metrics.in_flight.dec()
