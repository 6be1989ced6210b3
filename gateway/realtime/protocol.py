"""OpenAI realtime wire format for transcription sessions: client events in, server events out.

Two dialects share one session model: the GA one (`session.update` with
`{"type": "transcription", "audio": {"input": {...}}}`) and the beta one
(`transcription_session.update` with `input_audio_format`, `input_audio_transcription`,
`turn_detection`). Updates are partial: only fields present change. Every malformed
event raises `ProtocolError`, which the connection turns into an `error` event.

Field names and defaults follow OpenAI's realtime API reference and the `openai`
SDK's types (openai/types/realtime/*.py and openai/types/beta/realtime/*.py).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The rate OpenAI's pcm16 means; 16 kHz (the model's own rate) is accepted as well.
OPENAI_PCM_RATE = 24000
SUPPORTED_RATES = (16000, 24000)
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less than 100 ms of audio
_ENGLISH = {"en", "english"}

CLIENT_EVENT_TYPES = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class ProtocolError(Exception):
    """A client event the session cannot honour: becomes an `error` event, the session stays open."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.error_type = error_type


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


# ----------------------------------------------------------------------------- session model


@dataclass(frozen=True)
class ServerVad:
    """OpenAI's server_vad turn detection (its defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    sample_rate: int = OPENAI_PCM_RATE
    turn_detection: ServerVad | None = field(default_factory=ServerVad)
    model: str = ""
    language: str | None = None


# ----------------------------------------------------------------------------- update payloads


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Format(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[16000, 24000] = OPENAI_PCM_RATE


class _TurnDetection(_Strict):
    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(default=None, ge=32, le=10_000)
    # Conversation-only knobs the SDK's types carry; meaningless without responses.
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = Field(default=None, ge=0)  # prompts a model response after silence


class _Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class _GaInput(_Strict):
    format: _Format | None = None
    transcription: _Transcription | None = None
    turn_detection: _TurnDetection | None = None
    noise_reduction: None = None


class _GaAudio(_Strict):
    input: _GaInput | None = None


class _GaSession(_Strict):
    type: Literal["transcription"]
    audio: _GaAudio | None = None
    include: list[str] | None = None


class _BetaSession(_Strict):
    input_audio_format: Literal["pcm16"] | _Format | None = None
    input_audio_transcription: _Transcription | None = None
    turn_detection: _TurnDetection | None = None
    input_audio_noise_reduction: None = None
    include: list[str] | None = None
    modalities: list[Literal["text"]] | None = None


def _validation_error(exc: ValidationError, prefix: str, event_id: str | None) -> ProtocolError:
    first = exc.errors()[0]
    # Union members show up in the location ("literal['pcm16']", "_Format"): not parameters.
    loc = ".".join(str(part) for part in first.get("loc", ())
                   if not str(part).startswith("_") and "[" not in str(part))
    param = f"{prefix}.{loc}" if loc else prefix
    message = f"Invalid '{param}': {first.get('msg', 'invalid value')}"
    if first.get("type") == "extra_forbidden":
        return ProtocolError(f"Unknown parameter: '{param}'.", code="unknown_parameter", param=param, event_id=event_id)
    if first.get("type") == "literal_error" and loc.endswith("turn_detection.type"):
        message = f"Invalid '{param}': only 'server_vad' (or turn_detection null for manual commits) is supported"
    if first.get("type") == "literal_error" and loc.endswith(("format.type", "input_audio_format")):
        message = f"Invalid '{param}': only pcm16 audio ('audio/pcm' at 24000 or 16000 Hz) is supported"
    return ProtocolError(message, code="invalid_value", param=param, event_id=event_id)


def _apply_transcription(config: SessionConfig, value: _Transcription | None, param: str,
                         served_model: str, event_id: str | None) -> SessionConfig:
    if value is None:
        return config
    if value.model is not None and value.model != served_model:
        raise ProtocolError(f"model '{value.model}' is not served here; use '{served_model}'",
                            code="model_not_found", param=f"{param}.model", event_id=event_id)
    if value.language is not None and value.language.strip().lower() not in _ENGLISH:
        raise ProtocolError(
            f"language '{value.language}' is not supported: this model transcribes English only (use 'en')",
            code="unsupported_language", param=f"{param}.language", event_id=event_id)
    if value.prompt:
        raise ProtocolError("prompt is not supported: Canary-Qwen's transcription prompt is fixed",
                            code="unsupported_parameter", param=f"{param}.prompt", event_id=event_id)
    changes: dict[str, Any] = {}
    if "model" in value.model_fields_set and value.model is not None:
        changes["model"] = value.model
    if "language" in value.model_fields_set:
        changes["language"] = value.language
    return replace(config, **changes)


def _apply_turn_detection(config: SessionConfig, holder: BaseModel, value: _TurnDetection | None) -> SessionConfig:
    if "turn_detection" not in holder.model_fields_set:
        return config
    if value is None:
        return replace(config, turn_detection=None)
    base = config.turn_detection or ServerVad()
    return replace(config, turn_detection=ServerVad(
        threshold=base.threshold if value.threshold is None else value.threshold,
        prefix_padding_ms=base.prefix_padding_ms if value.prefix_padding_ms is None else value.prefix_padding_ms,
        silence_duration_ms=base.silence_duration_ms if value.silence_duration_ms is None
        else value.silence_duration_ms,
    ))


def _check_include(include: list[str] | None, param: str, event_id: str | None) -> None:
    if include:
        raise ProtocolError(f"include {include} is not supported (no logprobs)", code="unsupported_value",
                            param=param, event_id=event_id)


def apply_update(config: SessionConfig, event: dict[str, Any], served_model: str) -> SessionConfig:
    """The session after a `session.update` / `transcription_session.update` event."""
    event_id = _event_id(event)
    session = event.get("session")
    if not isinstance(session, dict):
        raise ProtocolError("Missing required parameter: 'session'.", code="missing_required_parameter",
                            param="session", event_id=event_id)
    if event["type"] == "session.update":
        if session.get("type") != "transcription":
            raise ProtocolError(
                "Invalid 'session.type': this endpoint serves transcription sessions only "
                "(session.type 'transcription')", param="session.type", event_id=event_id)
        try:
            ga = _GaSession.model_validate(session)
        except ValidationError as exc:
            raise _validation_error(exc, "session", event_id) from None
        _check_include(ga.include, "session.include", event_id)
        audio_input = ga.audio.input if ga.audio is not None else None
        if audio_input is None:
            return config
        if audio_input.format is not None:
            config = replace(config, sample_rate=audio_input.format.rate)
        config = _apply_transcription(config, audio_input.transcription, "session.audio.input.transcription",
                                      served_model, event_id)
        return _apply_turn_detection(config, audio_input, audio_input.turn_detection)
    try:
        beta = _BetaSession.model_validate(session)
    except ValidationError as exc:
        raise _validation_error(exc, "session", event_id) from None
    _check_include(beta.include, "session.include", event_id)
    if beta.input_audio_format == "pcm16":
        config = replace(config, sample_rate=OPENAI_PCM_RATE)
    elif isinstance(beta.input_audio_format, _Format):
        config = replace(config, sample_rate=beta.input_audio_format.rate)
    config = _apply_transcription(config, beta.input_audio_transcription, "session.input_audio_transcription",
                                  served_model, event_id)
    return _apply_turn_detection(config, beta, beta.turn_detection)


# ----------------------------------------------------------------------------- client events


def _event_id(event: dict[str, Any]) -> str | None:
    value = event.get("event_id")
    return value if isinstance(value, str) else None


def parse_client_event(text: str) -> dict[str, Any]:
    """The JSON object of one client message, with a known `type` (else `ProtocolError`)."""
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"The message is not valid JSON: {exc.msg} at position {exc.pos}.",
                            code="invalid_json") from None
    if not isinstance(event, dict):
        raise ProtocolError("A client event must be a JSON object with a 'type'.", code="invalid_json")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("Missing required parameter: 'type'.", code="missing_required_parameter",
                            param="type", event_id=_event_id(event))
    if kind not in CLIENT_EVENT_TYPES:
        supported = ", ".join(f"'{name}'" for name in CLIENT_EVENT_TYPES)
        raise ProtocolError(
            f"Invalid value: '{kind[:100]}'. Supported values in a transcription session are: {supported}.",
            code="invalid_value", param="type", event_id=_event_id(event))
    return event


def append_audio(event: dict[str, Any]) -> str:
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ProtocolError("Missing required parameter: 'audio' (base64-encoded pcm16).",
                            code="missing_required_parameter", param="audio", event_id=_event_id(event))
    return audio


def event_id_of(event: dict[str, Any]) -> str | None:
    return _event_id(event)


# ----------------------------------------------------------------------------- server events


def _server(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def _turn_detection_body(config: SessionConfig) -> dict[str, Any] | None:
    vad = config.turn_detection
    if vad is None:
        return None
    return {"type": "server_vad", "threshold": vad.threshold, "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms}


def _transcription_body(config: SessionConfig) -> dict[str, Any]:
    return {"model": config.model, "language": config.language, "prompt": ""}


def session_body(session_id: str, config: SessionConfig, beta: bool) -> dict[str, Any]:
    """The session object in the client's dialect."""
    if beta:
        audio_format: Any = "pcm16" if config.sample_rate == OPENAI_PCM_RATE else {
            "type": "audio/pcm", "rate": config.sample_rate}
        return {
            "id": session_id, "object": "realtime.transcription_session", "modalities": ["text"],
            "input_audio_format": audio_format, "input_audio_transcription": _transcription_body(config),
            "turn_detection": _turn_detection_body(config), "input_audio_noise_reduction": None, "include": [],
        }
    return {
        "type": "transcription", "id": session_id, "object": "realtime.transcription_session",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": config.sample_rate},
            "transcription": _transcription_body(config),
            "turn_detection": _turn_detection_body(config),
            "noise_reduction": None,
        }},
        "include": [],
    }


def session_created(session_id: str, config: SessionConfig, beta: bool) -> dict[str, Any]:
    return _server("session.created", session=session_body(session_id, config, beta))


def session_updated(kind: str, session_id: str, config: SessionConfig) -> dict[str, Any]:
    beta = kind == "transcription_session.update"
    name = "transcription_session.updated" if beta else "session.updated"
    return _server(name, session=session_body(session_id, config, beta))


def speech_started(item_id: str, audio_start_ms: int) -> dict[str, Any]:
    return _server("input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms)


def speech_stopped(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return _server("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms)


def committed(item_id: str, previous_item_id: str | None) -> dict[str, Any]:
    return _server("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def cleared() -> dict[str, Any]:
    return _server("input_audio_buffer.cleared")


def transcription_delta(item_id: str, delta: str) -> dict[str, Any]:
    return _server("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                   delta=delta)


def transcription_completed(item_id: str, transcript: str, audio_start_ms: int, audio_end_ms: int) -> dict[str, Any]:
    """OpenAI's completed event, plus where the utterance lies in the session's audio (ms)."""
    return _server(
        "conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
        transcript=transcript,
        usage={"type": "duration", "seconds": round((audio_end_ms - audio_start_ms) / 1000, 3)},
        audio_start_ms=audio_start_ms, audio_end_ms=audio_end_ms,
    )


def transcription_failed(item_id: str, message: str, code: str | None, error_type: str) -> dict[str, Any]:
    return _server("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                   error={"type": error_type, "code": code, "message": message, "param": None})


def error_event(message: str, *, code: str | None, param: str | None = None, event_id: str | None = None,
                error_type: str = "invalid_request_error") -> dict[str, Any]:
    return _server("error", error={"type": error_type, "code": code, "message": message, "param": param,
                                   "event_id": event_id})


def from_protocol_error(exc: ProtocolError) -> dict[str, Any]:
    return error_event(exc.message, code=exc.code, param=exc.param, event_id=exc.event_id,
                       error_type=exc.error_type)
