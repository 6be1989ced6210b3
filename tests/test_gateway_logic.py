"""Unit tests of the gateway's pure logic (no servers)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import srt
import webvtt
from fastapi import UploadFile
from pydantic import SecretStr

from gateway.audio import Piece
from gateway.auth import bearer_token, key_matches
from gateway.errors import BadRequestError, UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from gateway.protocol import ResponseFormat, TranscriptionForm, TranscriptionSegment
from gateway.readiness import ReadinessProbe
from gateway.settings import Settings
from gateway.subtitles import to_srt, to_vtt
from gateway.text_join import DeltaJoiner, join_pieces
from gateway.thinking import ThinkingFilter, strip_thinking
from gateway.transcription import segments_from, validate_form
from gateway.triton_client import to_api_error

MODEL = "canary-qwen-2.5b"


def _form(**fields: object) -> TranscriptionForm:
    upload = UploadFile(io.BytesIO(b"x"), filename="a.wav")
    return TranscriptionForm.model_validate({"file": upload, "model": MODEL, **fields})


# ------------------------------------------------------------------ text joining


def test_join_pieces_spaces_and_drops_empty() -> None:
    assert join_pieces([" Hello there. ", "", "  ", "General Kenobi."]) == "Hello there. General Kenobi."
    assert join_pieces([]) == ""


@pytest.mark.parametrize(
    "pieces",
    [
        [[" Hello", " world", " "], ["", " Second", " piece."]],
        [["  "], [" a", "b ", " c"], [], ["d"]],
        [[" x ", " ", "y"], [" z  "]],
    ],
)
def test_delta_joiner_matches_join_pieces(pieces: list[list[str]]) -> None:
    joiner = DeltaJoiner()
    deltas: list[str] = []
    for fragments in pieces:
        joiner.start_piece()
        deltas += [joiner.feed(f) for f in fragments]
    assert "".join(deltas) == join_pieces("".join(f) for f in pieces)


# ------------------------------------------------------------------ thinking


def test_strip_thinking_removes_blocks() -> None:
    assert strip_thinking("<think>\nhmm\n</think>\n\nThe answer.") == "The answer."
    assert strip_thinking("No thoughts.") == "No thoughts."
    assert strip_thinking("<think>never closed") == ""


@pytest.mark.parametrize("cut", range(1, 30))
def test_thinking_filter_matches_strip_whatever_the_fragmenting(cut: int) -> None:
    text = "<think>\nplan: <b>x</b>\n</think>\n\nVisible <think>hidden</think>answer <thin"
    fragments = [text[i : i + cut] for i in range(0, len(text), cut)]
    filt = ThinkingFilter()
    out = "".join(filt.feed(f) for f in fragments) + filt.flush()
    assert out == strip_thinking(text)


# ------------------------------------------------------------------ subtitles


def _segments() -> list[TranscriptionSegment]:
    return [
        TranscriptionSegment(id=0, seek=0, start=0.25, end=3.5, text="First line.", tokens=[]),
        TranscriptionSegment(id=1, seek=0, start=3661.004, end=3670.0, text="Second\n\nline.", tokens=[]),
    ]


def test_srt_parses_with_srt_package() -> None:
    subs = list(srt.parse(to_srt(_segments())))
    assert [s.content for s in subs] == ["First line.", "Second line."]
    assert subs[0].start.total_seconds() == pytest.approx(0.25)
    assert subs[1].start.total_seconds() == pytest.approx(3661.004)
    assert subs[1].end.total_seconds() == pytest.approx(3670.0)


def test_vtt_parses_with_webvtt() -> None:
    captions = webvtt.from_buffer(io.StringIO(to_vtt(_segments())))
    assert [c.text for c in captions] == ["First line.", "Second line."]
    assert captions[1].start == "01:01:01.004"


# ------------------------------------------------------------------ request validation


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "whisper-1"}, "model"),
        ({"language": "de"}, "language"),
        ({"prompt": "Names: Kenobi"}, "prompt"),
        ({"temperature": 0.7}, "temperature"),
        ({"timestamp_granularities[]": ["word"], "response_format": "verbose_json"}, "timestamp_granularities[]"),
        ({"timestamp_granularities[]": ["segment"], "response_format": "json"}, "timestamp_granularities[]"),
        ({"include[]": ["logprobs"]}, "include[]"),
        ({"chunking_strategy": "manual"}, "chunking_strategy"),
        ({"stream": True, "response_format": "srt"}, "stream"),
    ],
)
def test_unhonourable_values_are_rejected(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        validate_form(_form(**fields), MODEL)
    assert info.value.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"language": "en", "temperature": 0.0, "chunking_strategy": "auto"},
        {"timestamp_granularities[]": ["segment"], "response_format": "verbose_json"},
        {"stream": True, "response_format": "text"},
    ],
)
def test_honourable_values_pass(fields: dict[str, object]) -> None:
    validate_form(_form(**fields), MODEL)


def test_segments_keep_true_offsets_and_skip_empty_pieces() -> None:
    pieces = [
        Piece(start_s=1.5, end_s=30.0, samples=np.zeros(1, np.float32), start=24000, end=480000),
        Piece(start_s=31.0, end_s=40.0, samples=np.zeros(1, np.float32), start=496000, end=640000),
        Piece(start_s=45.25, end_s=80.0, samples=np.zeros(1, np.float32), start=724000, end=1280000),
    ]
    segments = segments_from(pieces, [" one ", "  ", "three"], [[7], [], [8, 9]])
    assert [(s.id, s.start, s.end, s.text, s.tokens) for s in segments] == [
        (0, 1.5, 30.0, "one", [7]), (1, 45.25, 80.0, "three", [8, 9])]


# ------------------------------------------------------------------ auth, settings, readiness


def test_bearer_parsing_and_key_match() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
    keys = [b"k1", b"k2"]
    assert key_matches("k2", keys)
    assert not key_matches("k3", keys)
    assert not key_matches("", keys)


@pytest.fixture(autouse=True)
def _clean_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    monkeypatch.setenv("GATEWAY_TRITON__URL", "triton:8001")
    monkeypatch.setenv("GATEWAY_AUTH__API_KEYS", '["secret-1"]')
    monkeypatch.setenv("GATEWAY_LIMITS__MAX_UPLOAD_BYTES", "1000")
    settings = Settings()
    assert settings.port == 9999 and settings.host == "127.0.0.1"
    assert settings.triton.url == "triton:8001"
    assert settings.limits.max_upload_bytes == 1000
    assert settings.auth.api_keys == [SecretStr("secret-1")]
    assert "secret-1" not in repr(settings)


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.port == 8080
    assert settings.triton.url == "127.0.0.1:8001"
    assert settings.model.id == MODEL
    assert settings.limits.max_upload_bytes == 25 * 1024 * 1024
    assert settings.limits.max_audio_seconds == 7200
    assert settings.limits.piece_seconds == 40
    assert settings.cors.allow_origins == []


def test_readiness_is_cached_then_rechecked() -> None:
    now = [0.0]
    answers = [(True, "ready"), (False, "Triton unreachable")]
    calls: list[tuple[str, ...]] = []

    async def check(models: tuple[str, ...]) -> tuple[bool, str]:
        calls.append(tuple(models))
        return answers[len(calls) - 1]

    async def scenario() -> None:
        probe = ReadinessProbe(check, ["a", "b"], cache_s=1.0, clock=lambda: now[0])
        assert (await probe.get()).ready
        now[0] = 0.5
        assert (await probe.get()).ready  # cached
        now[0] = 1.5
        state = await probe.get()
        assert not state.ready and "unreachable" in state.reason

    asyncio.run(scenario())
    assert calls == [("a", "b"), ("a", "b")]


def test_response_format_values_match_openai() -> None:
    assert {f.value for f in ResponseFormat} == {"json", "text", "srt", "vtt", "verbose_json"}


@pytest.mark.parametrize(
    "message, status, expected, code",
    [
        # A streamed error: no status, the python model's tag decides.
        ("in ensemble 'canary_qwen_chat', [context_length_exceeded] the prompt is 5013 tokens; the maximum is 4096",
         None, BadRequestError, "context_length_exceeded"),
        ("in ensemble 'canary_qwen', [invalid_argument] AUDIO is empty", None, BadRequestError, "invalid_argument"),
        ("AUDIO is empty", "StatusCode.INVALID_ARGUMENT", BadRequestError, "invalid_argument"),
        ("scripted model failure", "StatusCode.INTERNAL", UpstreamError, "upstream_error"),
        ("scripted model failure", None, UpstreamError, "upstream_error"),
        ("in ensemble 'canary_qwen', index [3] out of range", None, UpstreamError, "upstream_error"),  # no tag
        ("connection refused", "StatusCode.UNAVAILABLE", UpstreamUnavailableError, None),
        ("deadline", "StatusCode.DEADLINE_EXCEEDED", UpstreamTimeoutError, None),
    ],
)
def test_triton_failures_map_to_client_or_server_errors(
    message: str, status: str | None, expected: type, code: str | None
) -> None:
    from tritonclient.utils import InferenceServerException

    error = to_api_error(InferenceServerException(msg=message, status=status), "canary_qwen")
    assert type(error) is expected
    if code is not None:
        assert error.code == code
    if expected is BadRequestError:
        assert "[" not in error.message and error.message.endswith(message.split("] ")[-1])


def test_single_valued_fields_sent_twice_are_refused() -> None:
    from starlette.datastructures import FormData

    from gateway.transcription import reject_repeated_fields

    reject_repeated_fields(FormData([("model", "m"), ("timestamp_granularities[]", "segment"),
                                     ("timestamp_granularities[]", "word")]))  # arrays may repeat
    with pytest.raises(BadRequestError) as caught:
        reject_repeated_fields(FormData([("model", "m"), ("model", "n")]))
    assert caught.value.param == "model" and caught.value.code == "duplicate_parameter"
