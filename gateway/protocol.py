"""Pydantic models of the OpenAI-compatible wire format (requests, responses, events)."""

from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field


def new_completion_id() -> str:
    """`chatcmpl-...`: one per completion; every chunk of a stream carries the same one."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def unix_time() -> int:
    """`created` fields: whole seconds since the epoch."""
    return int(time.time())


# ---------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=unix_time)
    owned_by: str = "nvidia"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------- transcription


class ResponseFormat(str, Enum):
    json = "json"
    text = "text"
    srt = "srt"
    vtt = "vtt"
    verbose_json = "verbose_json"


class TranscriptionForm(BaseModel):
    """multipart/form-data fields of POST /v1/audio/transcriptions.

    Unknown fields are rejected (400), so no parameter is ever silently ignored.
    The bracketed names are how the OpenAI SDKs send arrays.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    file: UploadFile
    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = ResponseFormat.json
    temperature: float | None = None
    timestamp_granularities: list[str] = Field(default_factory=list, alias="timestamp_granularities[]")
    include: list[str] = Field(default_factory=list, alias="include[]")
    # "auto", a JSON object as text, or the object's fields as the SDKs send them
    # (`chunking_strategy[type]=server_vad`, ...): read by gateway.chunking.
    chunking_strategy: str | None = None
    chunking_type: str | None = Field(default=None, alias="chunking_strategy[type]")
    chunking_threshold: str | None = Field(default=None, alias="chunking_strategy[threshold]")
    chunking_prefix_padding_ms: str | None = Field(default=None, alias="chunking_strategy[prefix_padding_ms]")
    chunking_silence_duration_ms: str | None = Field(default=None, alias="chunking_strategy[silence_duration_ms]")
    stream: bool = False


class ServerVadChunking(BaseModel):
    """OpenAI's `chunking_strategy` object; absent fields keep the gateway's own cutting."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="speech probability threshold")
    prefix_padding_ms: int | None = Field(
        default=None, ge=0, le=10_000, description="audio kept around detected speech at a chunk edge"
    )
    silence_duration_ms: int | None = Field(
        default=None, ge=0, le=10_000, description="a pause at least this long ends a chunk"
    )


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float = 0.0
    # Canary-Qwen gives no per-segment probabilities: neutral values keep SDK models valid.
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0


class TranscriptionResponse(BaseModel):
    text: str
    usage: DurationUsage | None = None


class TranscriptionVerboseResponse(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str = "english"
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    usage: DurationUsage | None = None


class TranscriptTextDelta(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextDone(BaseModel):
    # No `usage`: the ensembles report no token counts, and a made-up count would mislead.
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str


# ---------------------------------------------------------------- chat


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="base64 audio, no data: prefix")
    format: str = Field(default="wav", description="container hint (wav, mp3, flac, ...)")


class InputAudioPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="data:audio/<fmt>;base64,<data> (remote URLs are not fetched)")


class AudioURLPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["audio_url"]
    audio_url: AudioURL


ContentPart = Annotated[TextPart | InputAudioPart | AudioURLPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatTemplateKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enable_thinking: bool = Field(
        default=False,
        description="Let Qwen3 think; the <think>...</think> block is then kept in the answer. "
        "Off by default: thinking is disabled and any <think> block is removed.",
    )


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are rejected (400)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    seed: int | None = None
    user: str | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None  # required (nullable) in OpenAI's schema; this model never refuses


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None = "stop"
    logprobs: None = None


class CompletionUsage(BaseModel):
    """Tokens of the Qwen3 prompt (chat template, transcripts in place of audio) and of the answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    # Sent (null, then on a last chunk with no choices) only with stream_options.include_usage.
    usage: CompletionUsage | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialize for the wire (aliases as OpenAI spells them)."""
    return model.model_dump(mode="json", by_alias=True)
