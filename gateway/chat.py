"""Chat serving logic: audio parts are transcribed (ASR mode), then the whole
conversation, transcripts in place of the audio, is answered by Qwen3 in LLM mode
(LoRA off) through the `canary_qwen_chat` ensemble.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from gateway.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaError
from gateway.protocol import (
    AudioURLPart,
    ChatCompletionRequest,
    ChatMessage,
    CompletionUsage,
    InputAudioPart,
    TextPart,
)
from gateway.settings import Settings
from gateway.thinking import ThinkingFilter, strip_thinking
from gateway.transcription import TranscriptionService, check_model, first_error
from gateway.triton_client import TokenTally, TritonClient

log = logging.getLogger(__name__)

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: Literal["stop", "length"]
    usage: CompletionUsage


@dataclass(frozen=True)
class ChatPlan:
    """A validated request, ready for Triton."""

    messages: list[dict[str, str]]
    max_new_tokens: int
    enable_thinking: bool


def validate_request(request: ChatCompletionRequest, settings: Settings) -> tuple[int, bool]:
    """(max_new_tokens, enable_thinking), or 400 for values the model cannot honour."""
    check_model(request.model, settings.model.id)
    if request.n not in (None, 1):
        raise BadRequestError("n must be 1", param="n", code="unsupported_value")
    if request.temperature not in (None, 0.0):
        raise BadRequestError("temperature must be 0: decoding is greedy", param="temperature",
                              code="unsupported_value")
    if request.top_p not in (None, 1.0):
        raise BadRequestError("top_p must be 1: decoding is greedy", param="top_p", code="unsupported_value")
    if request.stream_options is not None and not request.stream:
        raise BadRequestError("stream_options needs stream=true", param="stream_options", code="invalid_value")
    limit = settings.model.chat_max_new_tokens
    asked = request.max_completion_tokens or request.max_tokens
    if asked is not None and asked > limit:
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise BadRequestError(f"{param} must be at most {limit}", param=param, code="invalid_value")
    thinking = request.chat_template_kwargs.enable_thinking if request.chat_template_kwargs else False
    return asked or limit, thinking


def audio_bytes(part: InputAudioPart | AudioURLPart, max_bytes: int, param: str) -> bytes:
    """Base64 audio of a content part (size checked before decoding)."""
    if isinstance(part, InputAudioPart):
        encoded = part.input_audio.data
    else:
        url = part.audio_url.url
        header, sep, encoded = url.partition(",")
        if not (url.startswith("data:") and sep and header.endswith(";base64")):
            raise UnsupportedMediaError(
                "audio_url must be a base64 data URL (data:audio/<format>;base64,...); remote URLs are not fetched",
                param=param, code="invalid_audio_url",
            )
    if len(encoded) * 3 // 4 > max_bytes:
        raise PayloadTooLargeError(f"audio is larger than {max_bytes} bytes", param=param)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError("audio data is not valid base64", param=param, code="invalid_base64") from exc


def compose_user_text(texts: list[str], transcripts: list[str]) -> str:
    question = "\n\n".join(text for text in texts if text)
    transcript = "\n\n".join(text for text in transcripts if text)
    return f"{question}\n\n{transcript}" if question and transcript else question or transcript


class ChatService:
    def __init__(self, settings: Settings, triton: TritonClient, transcriber: TranscriptionService) -> None:
        self._settings = settings
        self._triton = triton
        self._transcriber = transcriber

    async def plan(self, request: ChatCompletionRequest) -> ChatPlan:
        max_new, thinking = validate_request(request, self._settings)
        messages = [
            {"role": _ROLES[message.role], "content": await self._message_text(message, index)}
            for index, message in enumerate(request.messages)
        ]
        if messages[-1]["role"] != "user":
            raise BadRequestError("the last message must come from the user", param="messages",
                                  code="invalid_value")
        return ChatPlan(messages=messages, max_new_tokens=max_new, enable_thinking=thinking)

    async def _message_text(self, message: ChatMessage, index: int) -> str:
        """The message as plain text. With audio: the text parts (the question), a blank
        line, then the transcripts, as the reference's LLM mode asks (canary_qwen.prompt.qa_messages)."""
        if isinstance(message.content, str):
            return message.content
        texts: list[str] = []
        transcripts: list[str] = []
        for part_index, part in enumerate(message.content):
            param = f"messages.{index}.content.{part_index}"
            if isinstance(part, TextPart):
                texts.append(part.text)
                continue
            if message.role != "user":
                raise BadRequestError("audio is accepted in user messages only", param=param, code="invalid_value")
            data = audio_bytes(part, self._settings.limits.max_upload_bytes, param)
            audio = await self._transcriber.prepare(data, param=param, route="/v1/chat/completions")
            transcript = await self._transcriber.transcribe(audio)
            log.info("audio part %s transcribed: %d chars", param, len(transcript.text))
            transcripts.append(transcript.text)
        return compose_user_text(texts, transcripts)

    async def answer(self, plan: ChatPlan) -> Answer:
        tally = TokenTally()

        async def generate() -> str:
            return "".join([piece async for piece in self._generate(plan, tally)])

        try:  # the prompt is counted while the answer is generated
            async with asyncio.TaskGroup() as group:
                prompt_tokens = group.create_task(self.prompt_tokens(plan))
                text = group.create_task(generate())
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        return Answer(
            text=text.result() if plan.enable_thinking else strip_thinking(text.result()),
            finish_reason=finish_reason(tally, plan),
            usage=usage(prompt_tokens.result(), tally),
        )

    async def prompt_tokens(self, plan: ChatPlan) -> int:
        return await self._triton.chat_prompt_tokens(plan.messages, plan.max_new_tokens, plan.enable_thinking)

    async def stream(self, plan: ChatPlan, tally: TokenTally) -> AsyncIterator[str]:
        """Visible answer text as it arrives (think blocks filtered unless asked);
        `tally` counts the generated tokens (for the finish reason)."""
        if plan.enable_thinking:
            async for piece in self._generate(plan, tally):
                yield piece
            return
        filt = ThinkingFilter()
        async for piece in self._generate(plan, tally):
            visible = filt.feed(piece)
            if visible:
                yield visible
        tail = filt.flush()
        if tail:
            yield tail

    def _generate(self, plan: ChatPlan, tally: TokenTally) -> AsyncIterator[str]:
        return self._triton.chat(plan.messages, plan.max_new_tokens, plan.enable_thinking, tally)


def usage(prompt_tokens: int, tally: TokenTally) -> CompletionUsage:
    """OpenAI's usage: the generated tokens count without the end token, as OpenAI's do."""
    return CompletionUsage(
        prompt_tokens=prompt_tokens, completion_tokens=tally.count, total_tokens=prompt_tokens + tally.count
    )


def finish_reason(tally: TokenTally, plan: ChatPlan) -> Literal["stop", "length"]:
    """`length` when the token budget ran out (the end token is not counted)."""
    return "length" if tally.count >= plan.max_new_tokens else "stop"

