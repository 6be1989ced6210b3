"""The realtime WebSocket: authenticate, run one `Session`, transcribe its utterances in order.

Three tasks per connection: the reader (client events; resampling and VAD in a worker
thread, one append at a time), the emitter (utterance results in commit order; each
utterance's Triton call starts as soon as it is committed, so they batch with everything
else), and the writer (one bounded queue of server events). Limits end the session with an
`error` event and a close code: 1008 for the client's limits (idle, session length, buffered
audio, not reading), 1013 when the gateway has no session slot free, 1011 on a gateway bug.
Before a client limit other than not reading closes it, what was committed is still
transcribed and sent (bounded). A disconnect cancels everything, Triton calls included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import anyio
import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from canary_qwen.mel import SAMPLE_RATE  # the model's input rate
from gateway.audio import shared_vad, split_on_pauses
from gateway.auth import bearer_token, key_matches
from gateway.chunking import model_pieces
from gateway.errors import APIError, error_response
from gateway.metrics import GatewayMetrics
from gateway.model_facts import ModelFactsCheck
from gateway.realtime import protocol
from gateway.realtime.audio_input import decode_base64_pcm16
from gateway.realtime.protocol import ProtocolError, SessionConfig
from gateway.realtime.session import Event, Session, Utterance
from gateway.settings import Settings
from gateway.text_join import DeltaJoiner
from gateway.transcription import first_error
from gateway.triton_client import TritonClient

log = logging.getLogger(__name__)

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
SELECTED_SUBPROTOCOL = "realtime"
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL = 1011
_FLUSH_TIMEOUT_S = 2.0
_DRAIN_S = 30.0  # at the session's end, how long the results of committed audio may still take


class CloseSession(Exception):
    """End the session: send `error` (if any), then close with `code`. With `drain`, the
    results of audio already committed are sent first (up to `_DRAIN_S`)."""

    def __init__(self, code: int, reason: str, error: Event | None = None, drain: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error = error
        self.drain = drain


def _limit_error(message: str, code: str, drain: bool = True) -> CloseSession:
    """One of the client's limits; a client that still reads gets what it committed."""
    return CloseSession(CLOSE_POLICY, code, protocol.error_event(message, code=code), drain)


@dataclass
class _Job:
    utterance: Utterance
    results: asyncio.Queue[Event | None]
    task: asyncio.Task[None] | None = None


class RealtimeService:
    """App-wide: settings, the Triton client, metrics and the number of open sessions."""

    def __init__(
        self, settings: Settings, triton: TritonClient, metrics: GatewayMetrics, facts: ModelFactsCheck
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.metrics = metrics
        self.facts = facts
        self.open_sessions = 0
        self._keys = [key.get_secret_value().encode("utf-8") for key in settings.auth.api_keys]

    # ------------------------------------------------------------------ handshake

    def _authorized(self, websocket: WebSocket) -> bool:
        if not self._keys:
            return True
        token = bearer_token(websocket.headers.get("authorization"))
        if token is None:  # browsers cannot set headers: OpenAI's subprotocol form
            for offered in websocket.scope.get("subprotocols", []):
                if offered.startswith(KEY_SUBPROTOCOL_PREFIX):
                    token = offered[len(KEY_SUBPROTOCOL_PREFIX):]
        return token is not None and key_matches(token, self._keys)

    async def _deny(self, websocket: WebSocket, status: int, message: str, code: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        try:
            await websocket.send_denial_response(error_response(status, message, code=code, headers=headers))
        except RuntimeError:  # server without the denial extension: a plain refusal (HTTP 403)
            await websocket.close(CLOSE_POLICY)

    async def serve(self, websocket: WebSocket) -> None:
        if not self._authorized(websocket):
            await self._deny(websocket, 401, "missing or invalid API key: send Authorization: Bearer <key> "
                             f"or the subprotocol {KEY_SUBPROTOCOL_PREFIX}<key>", "invalid_api_key")
            return
        intent = websocket.query_params.get("intent")
        if intent != "transcription":
            await self._deny(websocket, 400, "this gateway serves transcription sessions only: "
                             "connect to /v1/realtime?intent=transcription", "unsupported_intent")
            return
        served = self.settings.model.id
        model = websocket.query_params.get("model")
        if model is not None and model != served:
            await self._deny(websocket, 400, f"model '{model}' is not served here; use '{served}'",
                             "model_not_found")
            return
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=SELECTED_SUBPROTOCOL if SELECTED_SUBPROTOCOL in offered else None)
        if self.open_sessions >= self.settings.realtime.max_sessions:
            self.metrics.realtime_sessions.labels(outcome="refused").inc()
            self.metrics.realtime_errors.labels(code="session_limit_reached").inc()
            limit = self.settings.realtime.max_sessions
            await _send_and_close(websocket, protocol.error_event(
                f"too many realtime sessions (limit {limit}); retry later", code="session_limit_reached",
                error_type="rate_limit_error"), CLOSE_TRY_AGAIN_LATER, "session_limit_reached")
            return
        beta = websocket.headers.get("openai-beta", "").startswith("realtime=v1")
        self.open_sessions += 1
        self.metrics.realtime_sessions_open.inc()
        outcome = "client_closed"
        try:
            outcome = await _Connection(self, websocket, beta).run()
        finally:
            self.open_sessions -= 1
            self.metrics.realtime_sessions_open.dec()
            self.metrics.realtime_sessions.labels(outcome=outcome).inc()


async def _send_and_close(websocket: WebSocket, event: Event | None, code: int, reason: str,
                          queued: list[Event] | None = None) -> None:
    """Flush what is queued, then the error, then close (bounded: a client that does not read
    gets the close without them)."""
    events = [*(queued or []), *([event] if event is not None else [])]
    try:
        with anyio.fail_after(_FLUSH_TIMEOUT_S):
            for item in events:
                await websocket.send_text(json.dumps(item, ensure_ascii=False))
            await websocket.close(code, reason)
    except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client is gone or not reading: nothing more to tell it


class _Connection:
    """One session's tasks and queues."""

    def __init__(self, service: RealtimeService, websocket: WebSocket, beta: bool) -> None:
        self.service = service
        self.settings = service.settings
        self.limits = service.settings.realtime
        self.metrics = service.metrics
        self.websocket = websocket
        self.beta = beta
        config = SessionConfig(model=self.settings.model.id)
        self.session = Session(config, shared_vad(), SAMPLE_RATE, self.settings.limits.piece_seconds)
        self.outbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=self.limits.max_queued_events)
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending_samples = 0  # committed, not yet transcribed
        self.gate = asyncio.Semaphore(self.limits.utterance_concurrency)

    def send(self, event: Event) -> None:
        if event["type"] == "error":
            self.metrics.realtime_errors.labels(code=str(event["error"].get("code"))).inc()
        try:
            self.outbox.put_nowait(event)
        except asyncio.QueueFull:
            raise _limit_error(
                f"the client is not reading: {self.limits.max_queued_events} server events are waiting",
                "client_not_reading", drain=False) from None

    async def run(self) -> str:
        self.send(protocol.session_created(self.session.id, self.session.config, self.beta))
        jobs: list[_Job] = []
        ends_at = time.monotonic() + self.limits.max_session_s
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._writer())
                group.create_task(self._emitter())
                group.create_task(self._reader(jobs, ends_at))
        except BaseExceptionGroup as group_error:
            error = first_error(group_error)
            if isinstance(error, WebSocketDisconnect):
                return "client_closed"
            if isinstance(error, CloseSession):
                await self._close(error)
                return error.reason
            log.error("realtime session failed", exc_info=error)
            await self._close(CloseSession(CLOSE_INTERNAL, "internal_error", protocol.error_event(
                "internal server error", code="internal_error", error_type="server_error")))
            return "internal_error"
        finally:
            for job in jobs:
                if job.task is not None:
                    job.task.cancel()
            await asyncio.gather(*(job.task for job in jobs if job.task is not None), return_exceptions=True)
            for job in jobs:
                if job.task is not None and job.task.cancelled():
                    self.metrics.realtime_utterances.labels(outcome="cancelled").inc()
        return "client_closed"

    async def _close(self, close: CloseSession) -> None:
        if close.error is not None:
            self.metrics.realtime_errors.labels(code=str(close.error["error"].get("code"))).inc()
        queued: list[Event] = []
        while not self.outbox.empty():
            queued.append(self.outbox.get_nowait())
        await _send_and_close(self.websocket, close.error, close.code, close.reason, queued)

    # ------------------------------------------------------------------ writer

    async def _writer(self) -> None:
        while True:
            event = await self.outbox.get()
            await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    # ------------------------------------------------------------------ reader

    async def _reader(self, jobs: list[_Job], ends_at: float) -> None:
        try:
            await self._read_events(jobs, ends_at)
        except CloseSession as close:
            if close.drain:  # nothing more is read; what was committed is still sent
                with anyio.move_on_after(_DRAIN_S):
                    await self.jobs.join()
            raise

    async def _read_events(self, jobs: list[_Job], ends_at: float) -> None:
        while True:
            left = ends_at - time.monotonic()
            try:
                with anyio.fail_after(max(0.0, min(left, self.limits.idle_timeout_s))):
                    message = await self.websocket.receive()
            except TimeoutError:
                if left > self.limits.idle_timeout_s:
                    raise _limit_error(f"no client event for {self.limits.idle_timeout_s:g} s", "idle_timeout") from None
                raise _limit_error(
                    f"the session reached its maximum duration of {self.limits.max_session_s:g} s", "session_expired"
                ) from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                self.send(protocol.error_event(
                    "binary frames are not supported: send client events as JSON text", code="invalid_json"))
                continue
            if len(text) > self.limits.max_message_bytes:
                self.send(protocol.error_event(
                    f"the message is {len(text)} bytes, over the limit of {self.limits.max_message_bytes}; "
                    "send the audio in smaller appends", code="message_too_large"))
                continue
            try:
                await self._handle(text, jobs)
            except ProtocolError as exc:
                self.send(protocol.from_protocol_error(exc))

    async def _handle(self, text: str, jobs: list[_Job]) -> None:
        event = protocol.parse_client_event(text)
        kind = event["type"]
        event_id = protocol.event_id_of(event)
        now = time.monotonic()
        if kind in ("session.update", "transcription_session.update"):
            config = protocol.apply_update(self.session.config, event, self.settings.model.id)
            events, utterances = self.session.update(config, now)
            self._deliver(events, utterances, jobs)
            self.send(protocol.session_updated(kind, self.session.id, self.session.config))
        elif kind == "input_audio_buffer.append":
            pcm = decode_base64_pcm16(protocol.append_audio(event), event_id)
            self._check_buffered(pcm.size * SAMPLE_RATE / self.session.config.sample_rate)
            samples, probs = await anyio.to_thread.run_sync(self.session.analyse, pcm)
            events, utterances = self.session.ingest(samples, probs, time.monotonic())
            self._deliver(events, utterances, jobs)
        elif kind == "input_audio_buffer.commit":
            events, utterance = self.session.commit(now, event_id)
            self._deliver(events, [utterance], jobs)
        else:  # input_audio_buffer.clear
            self._deliver(self.session.clear(), [], jobs)

    def _check_buffered(self, incoming_samples: float) -> None:
        buffered_s = (self.session.uncommitted_samples + self.pending_samples + incoming_samples) / SAMPLE_RATE
        if buffered_s > self.limits.max_buffered_audio_s:
            raise _limit_error(
                f"{buffered_s:.1f} s of audio would be waiting for transcription, over the limit of "
                f"{self.limits.max_buffered_audio_s:g} s: send audio at real-time pace (or commit sooner)",
                "buffer_limit_exceeded")

    def _deliver(self, events: list[Event], utterances: list[Utterance], jobs: list[_Job]) -> None:
        for event in events:
            self.send(event)
        for utterance in utterances:
            job = _Job(utterance, asyncio.Queue())
            self.pending_samples += utterance.samples.size
            job.task = asyncio.create_task(self._transcribe(job))
            jobs.append(job)
            self.jobs.put_nowait(job)
        jobs[:] = [job for job in jobs if job.task is not None and not job.task.done()]

    # ------------------------------------------------------------------ transcription

    async def _transcribe(self, job: _Job) -> None:
        utterance = job.utterance
        try:
            async with self.gate:
                transcript = ""
                async for delta in self._texts(utterance):
                    transcript += delta
                    if self.limits.deltas:
                        job.results.put_nowait(protocol.transcription_delta(utterance.item_id, delta))
            job.results.put_nowait(protocol.transcription_completed(
                utterance.item_id, transcript, utterance.start_ms, utterance.end_ms))
            self.metrics.realtime_utterances.labels(outcome="completed").inc()
        except APIError as exc:
            log.warning("realtime utterance %s failed: %s", utterance.item_id, exc.message)
            job.results.put_nowait(protocol.transcription_failed(
                utterance.item_id, exc.message, exc.code, exc.error_type))
            self.metrics.realtime_utterances.labels(outcome="failed").inc()
        except Exception:  # a gateway bug: this item fails, in order; the session and its other items go on
            log.exception("realtime utterance %s failed", utterance.item_id)
            job.results.put_nowait(protocol.transcription_failed(
                utterance.item_id, "internal server error", "internal_error", "server_error"))
            self.metrics.realtime_utterances.labels(outcome="failed").inc()
        finally:
            self.pending_samples -= utterance.samples.size
            job.results.put_nowait(None)

    async def _texts(self, utterance: Utterance) -> AsyncIterator[str]:
        """Transcript deltas of one utterance; longer than a model piece, or with pauses the model
        wants to end a piece (its `piece_pause_s`): cut at pauses first."""
        pieces = [utterance.samples]
        pause_s = await self.service.facts.piece_pause_s()
        longest = int(self.settings.limits.piece_seconds * SAMPLE_RATE)
        too_long = utterance.samples.size > longest
        if pause_s is not None or too_long:
            options = model_pieces(pause_s)
            if utterance.vad_threshold is not None:  # speech where the turn heard it, not at the default
                options = replace(options, vad=options.vad.at_threshold(utterance.vad_threshold))
            cut = await anyio.to_thread.run_sync(
                lambda: split_on_pauses(utterance.samples, SAMPLE_RATE, self.settings.limits.piece_seconds,
                                        options=options))
            if cut:
                pieces = [piece.samples for piece in cut]
            elif too_long:  # no speech found to cut at: even pieces a model takes, none of the turn dropped
                pieces = np.array_split(utterance.samples, math.ceil(utterance.samples.size / longest))
        joiner = DeltaJoiner()
        for samples in pieces:
            joiner.start_piece()
            max_new = self.settings.model.asr_budget(samples.size)
            if self.limits.deltas:
                async for fragment in self.service.triton.transcribe_stream(samples, max_new):
                    if delta := joiner.feed(fragment):
                        yield delta
            else:
                result = await self.service.triton.transcribe(samples, max_new)
                if delta := joiner.feed(result.text):
                    yield delta

    async def _emitter(self) -> None:
        """Results in commit order: the oldest utterance streams live, later ones wait their turn."""
        while True:
            job = await self.jobs.get()
            while (event := await job.results.get()) is not None:
                if event["type"].endswith(".completed"):
                    self.metrics.realtime_transcript_latency.observe(time.monotonic() - job.utterance.ended_at)
                self.send(event)
            self.jobs.task_done()
