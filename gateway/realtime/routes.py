"""`/v1/realtime` (WebSocket) and the captions page that uses it."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, WebSocket
from fastapi.responses import FileResponse, RedirectResponse

from gateway.realtime.connection import RealtimeService

ROUTE = "/v1/realtime"
PAGE_ROUTE = "/demo"
_PAGE = Path(__file__).resolve().parents[1] / "static" / "captions.html"

router = APIRouter()


@router.websocket(ROUTE)
async def realtime(websocket: WebSocket) -> None:
    service: RealtimeService = websocket.app.state.realtime
    await service.serve(websocket)


@router.get(PAGE_ROUTE, include_in_schema=False)
async def captions_page() -> FileResponse:
    return FileResponse(_PAGE, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse(PAGE_ROUTE)
