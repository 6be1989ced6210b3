"""Gateway settings: one pydantic-settings class, read from the environment.

Every field is set with the prefix ``GATEWAY_`` and nested groups joined by ``__``,
e.g. ``GATEWAY_TRITON__URL=triton:8001`` or ``GATEWAY_AUTH__API_KEYS='["k1","k2"]'``.
The server's own host and port are top level: ``GATEWAY_HOST``, ``GATEWAY_PORT``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from canary_qwen.manifest import SERVED_MODEL_ID
from canary_qwen.mel import SAMPLE_RATE
from gateway.triton_address import DNS_SCHEME, split_host_port


class TritonSettings(BaseModel):
    """Where and how the gateway reaches Triton Inference Server."""

    url: str = Field(
        default="127.0.0.1:8001",
        description="Triton gRPC address: host:port (one server), or dns:///host:port to spread calls "
        "round-robin over every address the name resolves to, resolved again every resolve_interval_s "
        "(a Kubernetes headless Service).",
    )
    addresses: list[str] = Field(
        default_factory=list,
        description='Static list of Triton replicas as a JSON list of host:port, e.g. '
        '\'["10.0.0.5:8001","10.0.0.6:8001"]\' (hosts without DNS discovery); when set, url is not used.',
    )
    resolve_interval_s: PositiveFloat = Field(
        default=10.0, description="How often a dns:/// url is resolved again (replicas added and removed), seconds."
    )
    health_interval_s: PositiveFloat = Field(
        default=2.0,
        description="How often every replica's readiness is checked, seconds; a replica taken out after a "
        "failed call gets traffic again once a check sees it ready.",
    )
    protocol: Literal["grpc"] = Field(
        default="grpc",
        description="Client protocol. Only gRPC is supported: the streaming ensembles are decoupled, "
        "which Triton serves over gRPC streams only.",
    )
    connect_timeout_s: PositiveFloat = Field(
        default=2.0, description="Timeout of health/readiness calls to Triton, seconds."
    )
    infer_timeout_s: PositiveFloat = Field(
        default=120.0,
        description="Deadline of one Triton inference call (one audio piece or one chat answer), "
        "seconds. Exceeding it answers 504.",
    )
    ready_cache_s: float = Field(
        default=1.0,
        ge=0,
        description="How long /health/ready reuses its last Triton readiness answer, seconds.",
    )
    asr_model: str = Field(default="canary_qwen", description="Ensemble for whole transcriptions.")
    asr_stream_model: str = Field(
        default="canary_qwen_stream", description="Decoupled ensemble for streamed transcriptions."
    )
    chat_model: str = Field(default="canary_qwen_chat", description="Decoupled ensemble for chat (LLM mode).")
    chat_prompt_model: str = Field(
        default="chat_prompt_builder",
        description="The chat ensemble's first step, asked for the prompt's token count (chat `usage`).",
    )

    @field_validator("url")
    @classmethod
    def _valid_target(cls, url: str) -> str:
        split_host_port(url.removeprefix(DNS_SCHEME))
        return url

    @field_validator("addresses")
    @classmethod
    def _valid_addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            split_host_port(address)
        return addresses


class ModelSettings(BaseModel):
    """What the gateway serves and how much it generates."""

    id: str = Field(
        default=SERVED_MODEL_ID,
        description="Model id listed by /v1/models and accepted in the `model` request field.",
    )
    asr_max_new_tokens: PositiveInt = Field(
        default=256,
        description="Most tokens any transcribed piece may generate (40 s of speech is well under 200 tokens); "
        "a shorter piece gets less (`asr_tokens_per_second`).",
    )
    asr_tokens_per_second: PositiveFloat = Field(
        default=12.0,
        description="A piece's budget is also at most this many tokens per second of its audio, plus "
        "`asr_base_new_tokens`: twice the fastest English speech (about 6 tokens a second), so a model "
        "that loops on a short clip stops there instead of at `asr_max_new_tokens`.",
    )
    asr_base_new_tokens: PositiveInt = Field(
        default=16, description="Tokens every piece may use whatever its length (see `asr_tokens_per_second`)."
    )
    chat_max_new_tokens: PositiveInt = Field(
        default=512,
        description="Default and upper bound of chat answer length (request `max_completion_tokens`/`max_tokens`).",
    )

    def asr_budget(self, n_samples: int) -> int:
        """MAX_NEW_TOKENS of a piece of `n_samples` samples at the model's rate."""
        seconds = n_samples / SAMPLE_RATE
        return min(self.asr_max_new_tokens, self.asr_base_new_tokens + math.ceil(self.asr_tokens_per_second * seconds))


class LimitSettings(BaseModel):
    """Resource limits; every one of them answers a clear 4xx when exceeded."""

    max_upload_bytes: PositiveInt = Field(
        default=25 * 1024 * 1024,
        description="Largest audio upload in bytes (multipart file, or decoded base64 audio in chat). "
        "Larger requests get 413 before their body is stored.",
    )
    max_audio_seconds: PositiveFloat = Field(
        default=7200.0,
        description="Longest decoded audio in seconds; checked while decoding (decode bombs get 413).",
    )
    piece_seconds: float = Field(
        default=40.0, ge=1.0,  # gateway.audio.cutting.MIN_PIECE_S
        description="Longest audio piece sent to the model; longer audio is cut at pauses.",
    )
    piece_concurrency: PositiveInt = Field(
        default=4, description="Pieces of one request in flight to Triton at once."
    )
    max_concurrent_requests: PositiveInt = Field(
        default=64,
        description="Inference requests (/v1/audio, /v1/chat) handled at once; more get 429 with Retry-After.",
    )
    retry_after_s: PositiveInt = Field(default=1, description="Retry-After value sent with 429, seconds.")
    request_timeout_s: PositiveFloat = Field(
        default=600.0,
        description="Whole-request deadline for non-streamed inference requests, seconds; exceeding it answers 504.",
    )


class AuthSettings(BaseModel):
    """API keys. Empty list = no authentication."""

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description='Accepted bearer keys as a JSON list, e.g. GATEWAY_AUTH__API_KEYS=\'["k1"]\'. Never logged.',
    )
    protect_health: bool = Field(
        default=False, description="Require a key on /health/* too (probes then need the header)."
    )
    protect_metrics: bool = Field(default=False, description="Require a key on /metrics too.")


class CorsSettings(BaseModel):
    """Cross-origin access for browser clients; off unless origins are listed."""

    allow_origins: list[str] = Field(
        default_factory=list, description='Allowed origins as a JSON list, e.g. \'["https://app.example"]\'.'
    )


class RealtimeSettings(BaseModel):
    """`/v1/realtime?intent=transcription` sessions; every limit ends in an `error` event."""

    max_sessions: PositiveInt = Field(
        default=32, description="Realtime sessions open at once; more get an error event and close 1013."
    )
    max_session_s: PositiveFloat = Field(
        default=3600.0, description="Longest session in seconds (OpenAI's is 60 minutes); then error and close 1008."
    )
    idle_timeout_s: PositiveFloat = Field(
        default=120.0, description="A session with no client message for this long is closed (1008)."
    )
    max_message_bytes: PositiveInt = Field(
        default=1024 * 1024,
        description="Largest client event (a base64 audio append of ~16 s at 24 kHz fits); larger ones get "
        "an error event and are ignored. Frames over 16 MiB are refused by the server itself (close 1009).",
    )
    max_buffered_audio_s: PositiveFloat = Field(
        default=60.0,
        description="Audio received but not yet transcribed (uncommitted buffer plus utterances waiting for "
        "Triton), seconds. A client sending faster than Triton keeps up gets an error and close 1008.",
    )
    max_queued_events: PositiveInt = Field(
        default=1024,
        description="Server events waiting for a client that does not read; past it the session closes 1008.",
    )
    deltas: bool = Field(
        default=True,
        description="Stream each utterance through the decoupled ensemble and send transcription deltas "
        "(false: the whole-transcription ensemble, completed events only).",
    )
    utterance_concurrency: PositiveInt = Field(
        default=4, description="Utterances of one session in flight to Triton at once (results stay in order)."
    )
    ping_interval_s: PositiveFloat = Field(
        default=20.0, description="WebSocket keepalive: the server pings each open socket this often."
    )
    ping_timeout_s: PositiveFloat = Field(
        default=60.0,
        description="A socket whose pong is this late is closed (1011). Generous, so a client on a busy host "
        "(its event loop late to answer) keeps its session; the idle timeout still ends silent ones.",
    )


class CaptionSettings(BaseModel):
    """Timed transcripts (`srt`, `vtt`, `verbose_json`): cue-sized audio spans, each transcribed alone."""

    max_cue_s: float = Field(
        default=7.0, ge=1.0,  # gateway.audio.cutting.MIN_PIECE_S
        description="Longest subtitle cue / verbose_json segment, seconds.",
    )
    line_chars: PositiveInt = Field(default=42, description="Longest subtitle line, characters.")
    lines: PositiveInt = Field(default=2, description="Lines per subtitle cue.")
    pause_s: float = Field(
        default=0.3, ge=0,
        description="A pause between detected (padded) speech at least this long always ends a cue, seconds "
        "(0.3: about 0.5 s of silence).",
    )
    min_part_s: PositiveFloat = Field(
        default=1.0,
        description="A cue whose text does not fit its lines is cut again at a pause (and re-transcribed) "
        "into parts no shorter than this, seconds.",
    )
    # The audio layer's CueCutOptions holds the same defaults (importing it here would load the
    # VAD and decoders with the settings); test_gateway_logic checks they agree.
    model_pad_s: float = Field(
        default=0.3, ge=0,
        description="The model hears up to this much of the pause around each cue's speech (never a "
        "neighbouring cue's), seconds; the cue's times stay its speech's.",
    )


class Settings(BaseSettings):
    """All gateway settings (env prefix GATEWAY_, nested delimiter __)."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="Listen address (0.0.0.0 in containers).")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the gateway and uvicorn."
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM: stop accepting, then wait this long for in-flight requests before exiting.",
    )
    triton: TritonSettings = Field(default_factory=TritonSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    captions: CaptionSettings = Field(default_factory=CaptionSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
