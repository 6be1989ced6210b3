"""Transcription serving logic: validate the request, decode and cut the audio off
the event loop, send the pieces to Triton (bounded concurrency), join in order.

Routes stay thin: they call `TranscriptionService` and render its results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import anyio
import numpy as np
from starlette.datastructures import FormData

from canary_qwen.mel import SAMPLE_RATE  # the model's input rate (checked at start-up: gateway.model_facts)
from gateway.audio import AudioError, DecodedAudio, Piece, decode_audio, split_on_pauses
from gateway.audio.cue_cutting import (
    CueCutOptions,
    SpeechMap,
    heard,
    neighbour_bounds,
    plan_cues,
    speech_map,
    split_cue,
)
from gateway.chunking import Chunking, chunking_options, model_pieces
from gateway.errors import BadRequestError, audio_api_error
from gateway.metrics import GatewayMetrics
from gateway.model_facts import ModelFactsCheck
from gateway.protocol import ResponseFormat, ServerVadChunking, TranscriptionForm, TranscriptionSegment
from gateway.settings import CaptionSettings, Settings
from gateway.subtitles import CueLayout, fits
from gateway.text_join import DeltaJoiner, join_pieces
from gateway.triton_client import TritonClient

log = logging.getLogger(__name__)

_ENGLISH = {"en", "english"}
_STREAMABLE = {ResponseFormat.json, ResponseFormat.text}
# Formats whose output carries times: cut into caption-sized spans (gateway.audio.cue_cutting).
TIMED_FORMATS = frozenset({ResponseFormat.verbose_json, ResponseFormat.srt, ResponseFormat.vtt})
# OpenAI refuses audio under 0.1 s (400 audio_too_short); 1 ms of slack for resampling rounding.
MIN_AUDIO_S = 0.1
_MIN_AUDIO_SLACK_S = 0.001


@dataclass(frozen=True)
class PreparedAudio:
    duration_s: float
    pieces: list[Piece]
    # Timed formats: where the speech is, to cut a cue again when its text is too long.
    speech: SpeechMap | None = None
    cue_options: CueCutOptions | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float
    segments: list[TranscriptionSegment]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real failure of a task group (the others were cancelled because of it)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise BadRequestError(
            f"model '{requested}' is not served here; use '{served}'", param="model", code="model_not_found"
        )


def reject_repeated_fields(fields: FormData) -> None:
    """A single-valued field sent twice (two files, two models) is ambiguous: refuse it
    rather than let the form parser keep one silently. `fields` is the parsed multipart
    form (Starlette caches it, so reading it again costs nothing)."""
    for name in dict.fromkeys(fields.keys()):
        if name.endswith("[]"):
            continue
        if len(fields.getlist(name)) > 1:
            raise BadRequestError(
                f"'{name}' was sent more than once; send exactly one", param=name, code="duplicate_parameter"
            )


def validate_form(form: TranscriptionForm, served_model: str) -> None:
    """Reject every parameter value Canary-Qwen cannot honour (never ignore one silently)."""
    check_model(form.model, served_model)
    if form.language is not None and form.language.strip().lower() not in _ENGLISH:
        raise BadRequestError(
            f"language '{form.language}' is not supported: this model transcribes English only (use 'en')",
            param="language", code="unsupported_language",
        )
    if form.prompt:
        raise BadRequestError(
            "prompt is not supported: Canary-Qwen's transcription prompt is fixed", param="prompt",
            code="unsupported_parameter",
        )
    if form.temperature not in (None, 0.0):
        raise BadRequestError(
            "temperature must be 0: decoding is greedy", param="temperature", code="unsupported_value"
        )
    for granularity in form.timestamp_granularities:
        if granularity == "word":
            raise BadRequestError(
                "word timestamps are not supported: segments (one per audio piece) are",
                param="timestamp_granularities[]", code="unsupported_value",
            )
        if granularity != "segment":
            raise BadRequestError(
                f"unknown timestamp granularity '{granularity}'", param="timestamp_granularities[]",
                code="invalid_value",
            )
    if form.timestamp_granularities and form.response_format is not ResponseFormat.verbose_json:
        raise BadRequestError(
            "timestamp_granularities needs response_format=verbose_json",
            param="timestamp_granularities[]", code="invalid_value",
        )
    if form.include:
        raise BadRequestError(
            f"include {form.include} is not supported (no logprobs)", param="include[]", code="unsupported_value"
        )
    if form.stream and form.response_format not in _STREAMABLE:
        raise BadRequestError(
            f"stream=true works with response_format json or text, not {form.response_format.value}",
            param="stream", code="unsupported_value",
        )


def cue_cut_options(captions: CaptionSettings) -> CueCutOptions:
    return CueCutOptions(
        max_cue_s=captions.max_cue_s, pause_s=captions.pause_s, min_part_s=captions.min_part_s,
        model_pad_s=captions.model_pad_s,
    )


def check_min_duration(decoded: DecodedAudio, param: str) -> None:
    if decoded.duration_s < MIN_AUDIO_S - _MIN_AUDIO_SLACK_S:
        raise BadRequestError(
            f"Audio file is too short. Minimum audio length is {MIN_AUDIO_S:g} seconds.",
            param=param, code="audio_too_short",
        )


def segments_from(
    pieces: Sequence[Piece], texts: Sequence[str], token_ids: Sequence[list[int]]
) -> list[TranscriptionSegment]:
    """One segment per piece that produced text, with its true offsets in the file."""
    segments: list[TranscriptionSegment] = []
    for piece, text, tokens in zip(pieces, texts, token_ids, strict=True):
        if not text.strip():
            continue
        segments.append(
            TranscriptionSegment(
                id=len(segments),
                seek=int(round(piece.start_s * 100)),  # Whisper's seek unit: 10 ms frames
                start=round(piece.start_s, 3),
                end=round(piece.end_s, 3),
                text=text.strip(),
                tokens=tokens,
            )
        )
    return segments


def _map_and_plan(samples: np.ndarray, options: CueCutOptions) -> tuple[SpeechMap, list[Piece]]:
    speech = speech_map(samples, SAMPLE_RATE, options)
    return speech, plan_cues(speech, options)


class TranscriptionService:
    def __init__(
        self, settings: Settings, triton: TritonClient, metrics: GatewayMetrics, facts: ModelFactsCheck
    ) -> None:
        self._settings = settings
        self._triton = triton
        self._facts = facts
        self._metrics = metrics
        captions = settings.captions
        self.cue_layout = CueLayout(line_chars=captions.line_chars, lines=captions.lines)
        self._cue_options = cue_cut_options(captions)

    async def prepare(
        self,
        data: bytes | BinaryIO,
        *,
        param: str,
        route: str,
        timed: bool = False,
        chunking: ServerVadChunking | None = None,
    ) -> PreparedAudio:
        """Decode (duration capped while decoding) and cut at pauses, in a worker thread:
        into long pieces, or with `timed`, into caption-sized ones trimmed to their speech."""
        limits = self._settings.limits
        try:
            decoded: DecodedAudio = await anyio.to_thread.run_sync(
                lambda: decode_audio(data, max_seconds=limits.max_audio_seconds, target_rate=SAMPLE_RATE)
            )
        except AudioError as exc:
            raise audio_api_error(exc, param) from exc
        check_min_duration(decoded, param)
        pieces = model_pieces(await self._facts.piece_pause_s())
        options: Chunking = chunking_options(chunking, self._cue_options, pieces)
        speech: SpeechMap | None = None
        if timed:
            speech, pieces = await anyio.to_thread.run_sync(_map_and_plan, decoded.samples, options.cues)
        else:
            pieces = await anyio.to_thread.run_sync(
                lambda: split_on_pauses(decoded.samples, SAMPLE_RATE, limits.piece_seconds, options=options.pieces)
            )
        self._metrics.audio_seconds.labels(route=route).inc(decoded.duration_s)
        self._metrics.pieces.observe(len(pieces))
        log.info("audio %.2f s in %d %s", decoded.duration_s, len(pieces), "cue(s)" if timed else "piece(s)")
        return PreparedAudio(
            duration_s=decoded.duration_s, pieces=pieces, speech=speech, cue_options=options.cues if timed else None
        )

    async def transcribe(self, audio: PreparedAudio) -> Transcript:
        """All pieces concurrently (bounded), texts joined in order."""
        if audio.speech is not None and audio.cue_options is not None:
            return await self._transcribe_cues(audio, audio.speech, audio.cue_options)
        started = time.perf_counter()
        gate = asyncio.Semaphore(self._settings.limits.piece_concurrency)
        budget = self._settings.model.asr_budget

        async def one(samples: np.ndarray) -> tuple[str, list[int]]:
            async with gate:
                result = await self._triton.transcribe(samples, budget(samples.size))
                return result.text, result.token_ids

        # TaskGroup: the first failure (or our cancellation) cancels the other pieces.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(piece.samples)) for piece in audio.pieces]
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        results = [task.result() for task in tasks]
        texts = [text for text, _ in results]
        self._observe_rtf(started, audio.duration_s)
        return Transcript(
            text=join_pieces(texts),
            duration_s=audio.duration_s,
            segments=segments_from(audio.pieces, texts, [ids for _, ids in results]),
        )

    async def _transcribe_cues(self, audio: PreparedAudio, speech: SpeechMap, options: CueCutOptions) -> Transcript:
        """Every cue concurrently (bounded); a cue whose text does not fit its lines is cut
        again in the audio and both parts transcribed anew (gateway.audio.cue_cutting)."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(self._settings.limits.piece_concurrency)
        budget = self._settings.model.asr_budget

        async def cue(piece: Piece, bounds: tuple[int, int]) -> list[tuple[Piece, str, list[int]]]:
            samples = heard(speech, piece, bounds, options)
            async with gate:
                result = await self._triton.transcribe(samples, budget(samples.size))
            parts = None if fits(result.text, self.cue_layout) else split_cue(speech, piece, options)
            if parts is None:
                return [(piece, result.text, result.token_ids)]
            left, right = parts
            async with asyncio.TaskGroup() as group:
                halves = [
                    group.create_task(cue(left, (bounds[0], right.start))),
                    group.create_task(cue(right, (left.end, bounds[1]))),
                ]
            return [item for half in halves for item in half.result()]

        bounds = neighbour_bounds(audio.pieces, speech.audio.size)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(cue(piece, b)) for piece, b in zip(audio.pieces, bounds, strict=True)]
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        results = [item for task in tasks for item in task.result()]
        self._observe_rtf(started, audio.duration_s)
        texts = [text for _, text, _ in results]
        return Transcript(
            text=join_pieces(texts),
            duration_s=audio.duration_s,
            segments=segments_from([p for p, _, _ in results], texts, [ids for _, _, ids in results]),
        )

    async def stream(self, audio: PreparedAudio) -> AsyncIterator[str]:
        """Text deltas in order. Pieces run ahead concurrently (bounded); the current
        piece streams live, later ones are buffered until their turn."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(self._settings.limits.piece_concurrency)
        budget = self._settings.model.asr_budget
        queues: list[asyncio.Queue[str | Exception | None]] = [asyncio.Queue() for _ in audio.pieces]

        async def produce(samples: np.ndarray, queue: asyncio.Queue[str | Exception | None]) -> None:
            try:
                async with gate:
                    async for fragment in self._triton.transcribe_stream(samples, budget(samples.size)):
                        queue.put_nowait(fragment)
            except Exception as exc:  # handed to the consumer, raised in order
                queue.put_nowait(exc)
            else:
                queue.put_nowait(None)

        tasks = [asyncio.create_task(produce(p.samples, q)) for p, q in zip(audio.pieces, queues, strict=True)]
        joiner = DeltaJoiner()
        try:
            for queue in queues:
                joiner.start_piece()
                while (item := await queue.get()) is not None:
                    if isinstance(item, Exception):
                        raise item
                    delta = joiner.feed(item)
                    if delta:
                        yield delta
            self._observe_rtf(started, audio.duration_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _observe_rtf(self, started: float, duration_s: float) -> None:
        if duration_s > 0:
            self._metrics.real_time_factor.observe((time.perf_counter() - started) / duration_s)
