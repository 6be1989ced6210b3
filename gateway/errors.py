"""Typed API errors and the handlers that render every failure as OpenAI's error body.

Serving code raises an `APIError` subclass (audio errors become one through
`audio_api_error`); the handlers below turn it, and every framework error (validation,
404, 405, unexpected exceptions), into
``{"error": {"message", "type", "param", "code"}}`` with the matching status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.audio.errors import AudioError, AudioTooLongError, EmptyAudioError, NotAudioError, UndecodableAudioError
from gateway.protocol import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)


_STATUS_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}


def error_type_for(status_code: int) -> str:
    """OpenAI's error `type` for a status: the one rule, for typed errors and framework ones alike."""
    return _STATUS_TYPES.get(status_code, "invalid_request_error" if status_code < 500 else "server_error")


class APIError(Exception):
    """An error the client sees. Subclasses fix the status (which fixes the type) and default code."""

    status_code: int = 500
    default_code: str | None = None

    @property
    def error_type(self) -> str:
        return error_type_for(self.status_code)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class BadRequestError(APIError):
    status_code = 400


class AuthenticationError(APIError):
    status_code = 401
    default_code = "invalid_api_key"


class NotFoundError(APIError):
    status_code = 404
    default_code = "not_found"


class PayloadTooLargeError(APIError):
    status_code = 413
    default_code = "payload_too_large"


class UnsupportedMediaError(APIError):
    status_code = 415
    default_code = "unsupported_media_type"


class TooManyRequestsError(APIError):
    status_code = 429
    default_code = "too_many_requests"


class UpstreamError(APIError):
    """Triton answered with an error we cannot attribute to the request."""

    status_code = 502
    default_code = "upstream_error"


class UpstreamUnavailableError(APIError):
    status_code = 503
    default_code = "upstream_unavailable"


class UpstreamTimeoutError(APIError):
    status_code = 504
    default_code = "upstream_timeout"


# The one mapping from what is wrong with an upload (the audio package's errors) to HTTP.
_AUDIO_ERRORS: dict[type[AudioError], tuple[type[APIError], str]] = {
    EmptyAudioError: (BadRequestError, "empty_audio"),
    UndecodableAudioError: (BadRequestError, "undecodable_audio"),
    NotAudioError: (UnsupportedMediaError, "unsupported_media_type"),
    AudioTooLongError: (PayloadTooLargeError, "audio_too_long"),
}


def audio_api_error(exc: AudioError, param: str | None = None) -> APIError:
    """The client's error for an audio error: its status, OpenAI type and code, the audio's message."""
    kind = next((k for k in type(exc).__mro__ if k in _AUDIO_ERRORS), None)
    error_class, code = _AUDIO_ERRORS[kind] if kind else (BadRequestError, "invalid_audio")
    return error_class(exc.message, param=param, code=code)


# OpenAPI `responses` of the inference routes: each status they answer with OpenAI's error body.
INFERENCE_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 429, 502, 503, 504)
}

def error_body(status_code: int, message: str, *, error_type: str | None = None,
               param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error document for one failure."""
    if error_type is None:
        error_type = error_type_for(status_code)
    return ErrorResponse(error=ErrorBody(message=message, type=error_type, param=param, code=code)).model_dump()


def error_response(status_code: int, message: str, *, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> JSONResponse:
    return JSONResponse(error_body(status_code, message, **kwargs), status_code=status_code, headers=headers)


def api_error_response(exc: APIError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, headers=exc.headers,
        error_type=exc.error_type, param=exc.param, code=exc.code,
    )


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    if exc.status_code >= 500:
        log.warning("request failed: %s %s", exc.status_code, exc.message)
    return api_error_response(exc)


def _validation_param(error: dict[str, Any]) -> str | None:
    # loc looks like ("body", "response_format") or ("query", "x"); drop the source.
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "header", "path")]
    return ".".join(loc) or None


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    param = _validation_param(first)
    message = "; ".join(
        f"{_validation_param(err) or 'request'}: {err.get('msg', 'invalid')}" for err in errors
    ) or "invalid request"
    return error_response(400, message, param=param, code="invalid_value")


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        detail = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} not allowed on {request.url.path}"
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None),
                          code={404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code))


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, "internal server error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
