"""Server-sent events: framing, and a response that ends cleanly on errors."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from gateway.errors import APIError, error_body

log = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: BaseModel | dict[str, Any]) -> str:
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json()
    else:
        body = json.dumps(payload, ensure_ascii=False)
    return f"data: {body}\n\n"


async def _guarded(events: AsyncIterator[str], done_marker: bool) -> AsyncIterator[str]:
    """Turn a failure after the headers went out into one error event, then end."""
    try:
        async for chunk in events:
            yield chunk
    except APIError as exc:
        log.warning("stream failed: %s %s", exc.status_code, exc.message)
        yield event(error_body(exc.status_code, exc.message, error_type=exc.error_type, code=exc.code))
    except Exception:
        log.exception("stream failed")
        yield event(error_body(500, "internal server error", code="internal_error"))
    if done_marker:
        yield DONE


def sse_response(events: AsyncIterator[str], *, done_marker: bool) -> StreamingResponse:
    return StreamingResponse(
        _guarded(events, done_marker),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
