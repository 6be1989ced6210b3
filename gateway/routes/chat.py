"""POST /v1/chat/completions: text chat and audio question answering."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.chat import ChatPlan, ChatService, TokenTally, finish_reason, usage
from gateway.dependencies import ChatDep, SettingsDep
from gateway.disconnect import cancel_on_disconnect
from gateway.errors import INFERENCE_ERROR_RESPONSES
from gateway.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    dump,
    new_completion_id,
    unix_time,
)
from gateway.sse import event, sse_response
from gateway.streaming import prefetch

ROUTE = "/v1/chat/completions"
router = APIRouter(tags=["chat"])


async def _chunks(
    deltas: AsyncIterator[str], model: str, plan: ChatPlan, tally: TokenTally, chat: ChatService,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Role chunk, content chunks, final chunk with finish_reason, then with
    `include_usage` (as OpenAI does) a chunk with no choices and the usage; every other
    chunk then carries `"usage": null` ([DONE] added by sse_response)."""
    completion_id, created = new_completion_id(), unix_time()  # shared by every chunk

    def chunk(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> str:
        body = dump(ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, usage=usage))
        if not include_usage:
            del body["usage"]
        return event(body)

    yield chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
    async for text in deltas:
        yield chunk([ChunkChoice(delta=ChunkDelta(content=text))])
    yield chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=finish_reason(tally, plan))])
    if include_usage:
        yield chunk([], usage(await chat.prompt_tokens(plan), tally))


@router.post(ROUTE, responses={
    200: {"content": {"application/json": {}, "text/event-stream": {}}}, **INFERENCE_ERROR_RESPONSES,
}, summary="Chat, with audio input parts (OpenAI-compatible)")
async def create_chat_completion(
    request: Request, body: ChatCompletionRequest, chat: ChatDep, settings: SettingsDep
) -> Response:
    timeout = settings.limits.request_timeout_s
    plan = await cancel_on_disconnect(request, chat.plan(body), timeout)
    if body.stream:
        tally = TokenTally()
        deltas = await cancel_on_disconnect(request, prefetch(chat.stream(plan, tally)), timeout)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return sse_response(_chunks(deltas, body.model, plan, tally, chat, include_usage), done_marker=True)
    answer = await cancel_on_disconnect(request, chat.answer(plan), timeout)
    completion = ChatCompletion(
        model=body.model,
        choices=[ChatChoice(message=AssistantMessage(content=answer.text), finish_reason=answer.finish_reason)],
        usage=answer.usage,
    )
    return JSONResponse(dump(completion))
