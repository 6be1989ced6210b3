"""Run a non-streamed request's work so that a client disconnect cancels it
(and with it the Triton calls), and so that it obeys the request deadline.

Streamed responses need none of this: Starlette cancels the body generator when
the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from gateway.errors import APIError, UpstreamTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientClosedRequest(APIError):
    """The client went away; nobody reads this response (nginx's 499)."""

    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_closed_request"


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read by now, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T], timeout_s: float) -> T:
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({work_task, watcher}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if work_task in done:
            return work_task.result()
        if watcher in done:
            log.info("client disconnected: work cancelled")
            raise ClientClosedRequest("client closed the request")
        raise UpstreamTimeoutError(f"request did not finish within {timeout_s:g} s", code="request_timeout")
    finally:
        for task in (work_task, watcher):
            task.cancel()
        await asyncio.gather(work_task, watcher, return_exceptions=True)
