"""POST /v1/audio/transcriptions (OpenAI Audio API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from gateway.dependencies import SettingsDep, TranscriberDep
from gateway.disconnect import cancel_on_disconnect
from gateway.errors import INFERENCE_ERROR_RESPONSES, PayloadTooLargeError
from gateway.protocol import (
    DurationUsage,
    ResponseFormat,
    ServerVadChunking,
    TranscriptionForm,
    TranscriptionResponse,
    TranscriptionVerboseResponse,
    TranscriptTextDelta,
    TranscriptTextDone,
    dump,
)
from gateway.sse import event, sse_response
from gateway.streaming import prefetch
from gateway.chunking import parse_chunking
from gateway.subtitles import CueLayout, cues_from_segments, to_srt, to_vtt
from gateway.transcription import (
    TIMED_FORMATS,
    PreparedAudio,
    Transcript,
    TranscriptionService,
    reject_repeated_fields,
    validate_form,
)

ROUTE = "/v1/audio/transcriptions"
router = APIRouter(tags=["audio"])

def render(transcript: Transcript, response_format: ResponseFormat, layout: CueLayout) -> Response:
    usage = DurationUsage(seconds=round(transcript.duration_s, 3))
    match response_format:
        case ResponseFormat.json:
            return JSONResponse(dump(TranscriptionResponse(text=transcript.text, usage=usage)))
        case ResponseFormat.verbose_json:
            body = TranscriptionVerboseResponse(
                duration=round(transcript.duration_s, 3), text=transcript.text,
                segments=transcript.segments, usage=usage,
            )
            return JSONResponse(dump(body))
        case ResponseFormat.text:
            return PlainTextResponse(transcript.text + "\n")
        case ResponseFormat.srt:
            return PlainTextResponse(to_srt(cues_from_segments(transcript.segments, layout)),
                                     media_type="application/x-subrip")
        case ResponseFormat.vtt:
            return PlainTextResponse(to_vtt(cues_from_segments(transcript.segments, layout)), media_type="text/vtt")


async def _events(first: AsyncIterator[str]) -> AsyncIterator[str]:
    """`transcript.text.delta` events, then one `transcript.text.done` with the whole text."""
    text: list[str] = []
    async for delta in first:
        text.append(delta)
        yield event(TranscriptTextDelta(delta=delta))
    yield event(TranscriptTextDone(text="".join(text)))


@router.post(
    ROUTE,
    responses={200: {"content": {"application/json": {}, "text/plain": {}, "text/vtt": {},
                                 "application/x-subrip": {}, "text/event-stream": {}}}, **INFERENCE_ERROR_RESPONSES},
    summary="Transcribe audio (OpenAI-compatible)",
)
async def create_transcription(
    request: Request,
    form: Annotated[TranscriptionForm, Form(media_type="multipart/form-data")],
    transcriber: TranscriberDep,
    settings: SettingsDep,
) -> Response:
    reject_repeated_fields(await request.form())
    validate_form(form, settings.model.id)
    chunking = parse_chunking(form)
    limit = settings.limits.max_upload_bytes
    if form.file.size is not None and form.file.size > limit:
        raise PayloadTooLargeError(f"file is larger than {limit} bytes", param="file")
    timeout = settings.limits.request_timeout_s

    if form.stream:
        audio = await cancel_on_disconnect(request, _prepare(transcriber, form, chunking), timeout)
        # The first delta is awaited here, so a failing Triton still gets a real HTTP status.
        deltas = await cancel_on_disconnect(request, prefetch(transcriber.stream(audio)), timeout)
        return sse_response(_events(deltas), done_marker=False)

    async def work() -> Transcript:
        return await transcriber.transcribe(await _prepare(transcriber, form, chunking))

    transcript = await cancel_on_disconnect(request, work(), timeout)
    return render(transcript, form.response_format, transcriber.cue_layout)


async def _prepare(
    transcriber: TranscriptionService, form: TranscriptionForm, chunking: ServerVadChunking | None
) -> PreparedAudio:
    return await transcriber.prepare(
        form.file.file, param="file", route=ROUTE, timed=form.response_format in TIMED_FORMATS, chunking=chunking
    )
