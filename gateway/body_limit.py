"""Request body caps per path, enforced before and while the body is read.

A declared Content-Length over the cap is refused at once (413, nothing read);
otherwise bytes are counted as they arrive and the read fails at the cap, so an
oversized or chunked upload is never stored whole. Form files are spooled to
temporary files by the multipart parser, which are deleted when the request ends.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response


class BodyTooLargeError(HTTPException):
    """Raised from `receive`: FastAPI passes HTTPExceptions through body parsing untouched."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, caps: Mapping[str, int]) -> None:
        self.app = app
        self._caps = dict(caps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self._caps.get(scope["path"]) if scope["type"] == "http" else None
        if cap is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            response = error_response(413, f"request body is larger than the limit of {cap} bytes",
                                      code="payload_too_large")
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLargeError(cap)
            return message

        await self.app(scope, counting_receive, send)
