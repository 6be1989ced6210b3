"""`python -m bench realtime`: live captions over `/v1/realtime?intent=transcription`.

N concurrent sessions each stream corpus speech as 24 kHz pcm16 at real-time pace (100 ms
appends, sentences separated by pauses) with server_vad turn detection. Per utterance two
latencies are measured on the client:
- turn -> transcript: from `input_audio_buffer.speech_stopped` (the VAD has decided the turn
  ended) to its `...transcription.completed`: what the service adds;
- speech -> transcript: from the moment the last audio of the utterance was sent, which also
  holds the `silence_duration_ms` the VAD waits before it may decide.
Every count in `--sessions` is run; the largest one whose turn -> transcript p95 stays under
`--p95-limit-ms` (error-free) is "the most sessions held".

Memory: one more session streams for `--memory-minutes` (30 by default; the CI test runs a
few seconds of it) while the gateway's RSS is sampled; the slope over the second half and the
growth from the first to the last quarter tell flat from growing.

Results go into bench/results/latest.json under "realtime" (the rest of the document kept),
through `bench.report.write_section`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict
from scipy.signal import resample_poly
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench import report
from bench.corpus import SAMPLE_RATE, build_corpus
from bench.proc_memory import mib, rss_bytes
from bench.servers import gateway, triton
from bench.settings import CommandSettings
from bench.stats import percentile, slope

log = logging.getLogger("bench.realtime")

WIRE_RATE = 24000  # OpenAI's pcm16
COMPLETED = "conversation.item.input_audio_transcription.completed"
STOPPED = "input_audio_buffer.speech_stopped"
_END_PAD_MS = 100  # the gateway's pad after speech (VadOptions.speech_pad_s)
_DRAIN_TIMEOUT_S = 120.0
_LEAD_S = 0.5  # silence before the first clip


class RealtimeBenchSettings(CommandSettings):
    """`python -m bench realtime`: concurrent live-caption sessions and a long session's memory."""

    model_config = SettingsConfigDict(env_prefix="BENCH_REALTIME_", cli_prog_name="python -m bench realtime")

    sessions: list[int] = Field(default=[1, 2, 4, 8, 12, 16], description="Concurrent session counts, stepped up.")
    stream_s: PositiveFloat = Field(default=45.0, description="Audio each session streams per step, seconds.")
    chunk_ms: PositiveInt = Field(default=100, description="Audio per append, milliseconds.")
    silence_duration_ms: PositiveInt = Field(default=500, description="server_vad silence that ends a turn.")
    gap_s: PositiveFloat = Field(default=1.2, description="Pause between sentences in the stream.")
    p95_limit_ms: PositiveFloat = Field(default=1000.0, description="Turn -> transcript p95 a session count must keep.")
    memory_minutes: float = Field(default=30.0, ge=0, description="The long session's length; 0 skips it.")
    memory_sample_s: PositiveFloat = Field(default=10.0, description="Gateway RSS sampling period in the long session.")
    max_new_tokens: PositiveInt = Field(default=32, description="Generation budget per utterance.")
    ready_timeout_s: PositiveFloat = Field(default=900.0, description="How long to wait for Triton to load.")


# ----------------------------------------------------------------------------- one session


@dataclass(frozen=True)
class Stream:
    """A session's audio: 24 kHz pcm16 appends, and where each sentence's speech ends."""

    chunks: list[str]
    chunk_ms: int
    speech_ends_ms: list[int]

    @property
    def duration_s(self) -> float:
        return len(self.chunks) * self.chunk_ms / 1000


def build_stream(clips: Sequence[np.ndarray], seconds: float, gap_s: float, chunk_ms: int, offset: int = 0) -> Stream:
    """Clips (16 kHz float32) in turn from `offset`, `gap_s` apart, to about `seconds` of audio."""
    chosen: list[np.ndarray] = []
    total = int(_LEAD_S * SAMPLE_RATE)
    while total < seconds * SAMPLE_RATE:
        chosen.append(clips[(offset + len(chosen)) % len(clips)])
        total += chosen[-1].size + int(gap_s * SAMPLE_RATE)
    return stream_of(chosen, gap_s, chunk_ms)


def stream_of(clips: Sequence[np.ndarray], gap_s: float, chunk_ms: int) -> Stream:
    """Each clip once, in order: silence first, `gap_s` after each, as 24 kHz pcm16 appends."""
    pieces: list[np.ndarray] = [np.zeros(int(_LEAD_S * SAMPLE_RATE), dtype=np.float32)]
    ends: list[int] = []
    total = pieces[0].size
    for clip in clips:
        pieces += [clip, np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)]
        total += clip.size
        ends.append(total * 1000 // SAMPLE_RATE)
        total += pieces[-1].size
    # A polyphase filter, as a client's resampler would: linear interpolation dulls the top octave.
    ratio = math.gcd(WIRE_RATE, SAMPLE_RATE)
    wire = resample_poly(np.concatenate(pieces), WIRE_RATE // ratio, SAMPLE_RATE // ratio)
    pcm = (np.clip(wire, -1, 1) * 32767).astype("<i2")
    step = WIRE_RATE * chunk_ms // 1000
    chunks = [base64.b64encode(pcm[i : i + step].tobytes()).decode("ascii") for i in range(0, pcm.size, step)]
    return Stream(chunks, chunk_ms, ends)


@dataclass
class SessionResult:
    turn_ms: list[float] = field(default_factory=list)  # speech_stopped -> completed
    speech_ms: list[float] = field(default_factory=list)  # last speech audio sent -> completed
    utterances: int = 0
    transcripts: list[str] = field(default_factory=list)  # in commit order (the gateway keeps it)
    errors: list[str] = field(default_factory=list)


async def stream_session(url: str, headers: dict[str, str], stream: Stream, silence_ms: int,
                         start_delay_s: float = 0.0) -> SessionResult:
    """Stream at real-time pace, read events concurrently, wait for every commit's transcript."""
    await asyncio.sleep(start_delay_s)
    result = SessionResult()
    sent_at: list[float] = []
    stopped_at: dict[str, float] = {}
    committed: set[str] = set()
    done = asyncio.Event()
    sending = True

    async def read(ws: ClientConnection) -> None:
        async for message in ws:
            event = json.loads(message)
            now = time.monotonic()
            kind = event["type"]
            if kind == STOPPED:
                stopped_at[event["item_id"]] = now
            elif kind == "input_audio_buffer.committed":
                committed.add(event["item_id"])
            elif kind == COMPLETED:
                result.utterances += 1
                result.transcripts.append(event["transcript"])
                if event["item_id"] in stopped_at:
                    result.turn_ms.append((now - stopped_at[event["item_id"]]) * 1000)
                speech_end_ms = event["audio_end_ms"] - _END_PAD_MS
                chunk = min(len(sent_at) - 1, max(0, speech_end_ms // stream.chunk_ms))
                result.speech_ms.append((now - sent_at[chunk]) * 1000)
            elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
                result.errors.append(event["error"].get("code") or event["error"].get("message", "error"))
            if not sending and result.utterances + len(result.errors) >= len(committed):
                done.set()

    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": WIRE_RATE},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}}
    # No keepalive pings: the appends every 100 ms are the liveness (a starved gateway could miss
    # a ping deadline and the client would drop a session the service still holds).
    async with connect(url, additional_headers=headers, max_size=None, ping_interval=None) as ws:
        json.loads(await ws.recv())  # session.created
        await ws.send(json.dumps(update))
        json.loads(await ws.recv())  # session.updated
        reader = asyncio.create_task(read(ws))
        started = time.monotonic()
        try:
            for index, chunk in enumerate(stream.chunks):
                delay = started + index * stream.chunk_ms / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at.append(time.monotonic())
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            sending = False
            if result.utterances + len(result.errors) >= len(committed):
                done.set()
            await asyncio.wait_for(done.wait(), _DRAIN_TIMEOUT_S)
        except TimeoutError:
            result.errors.append("timed out waiting for transcripts")
        except ConnectionClosed as closed:  # counted, not fatal: the figures say what happened
            result.errors.append(f"connection closed: {closed}")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return result


# ----------------------------------------------------------------------------- phases


def summarize(sessions: int, results: Sequence[SessionResult], audio_s: float) -> dict[str, Any]:
    turn = [v for r in results for v in r.turn_ms]
    speech = [v for r in results for v in r.speech_ms]
    errors = [e for r in results for e in r.errors]
    summary: dict[str, Any] = {"sessions": sessions, "audio_s_per_session": round(audio_s, 1),
                               "utterances": sum(r.utterances for r in results), "errors": errors[:10],
                               "error_count": len(errors)}
    if turn:
        summary |= {"turn_to_transcript_ms_p50": round(percentile(turn, 50), 1),
                    "turn_to_transcript_ms_p95": round(percentile(turn, 95), 1)}
    if speech:
        summary |= {"speech_to_transcript_ms_p50": round(percentile(speech, 50), 1),
                    "speech_to_transcript_ms_p95": round(percentile(speech, 95), 1)}
    return summary


async def run_sessions(url: str, headers: dict[str, str], clips: Sequence[np.ndarray], count: int,
                       settings: RealtimeBenchSettings) -> dict[str, Any]:
    streams = [build_stream(clips, settings.stream_s, settings.gap_s, settings.chunk_ms, offset=i)
               for i in range(count)]
    # Staggered starts, so turns do not all end in the same instant.
    stagger = settings.gap_s / max(count, 1)
    results = await asyncio.gather(*(
        stream_session(url, headers, stream, settings.silence_duration_ms, i * stagger)
        for i, stream in enumerate(streams)))
    return summarize(count, results, streams[0].duration_s)


def held_sessions(steps: Sequence[dict[str, Any]], limit_ms: float) -> int | None:
    """The largest session count whose turn -> transcript p95 kept under the limit, error-free."""
    held = [s["sessions"] for s in steps if s.get("turn_to_transcript_ms_p95", float("inf")) <= limit_ms
            and s["error_count"] == 0]
    return max(held) if held else None


async def memory_phase(url: str, headers: dict[str, str], clips: Sequence[np.ndarray], pid: int, minutes: float,
                       sample_s: float, settings: RealtimeBenchSettings) -> dict[str, Any]:
    """One session streaming `minutes` of audio at real-time pace while the gateway's RSS is read."""
    stream = build_stream(clips, minutes * 60, settings.gap_s, settings.chunk_ms)
    samples: list[tuple[float, int]] = []
    started = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, rss_bytes(pid)))
            await asyncio.sleep(sample_s)

    sampler = asyncio.create_task(sample())
    try:
        result = await stream_session(url, headers, stream, settings.silence_duration_ms)
    finally:
        sampler.cancel()
    samples.append((time.monotonic() - started, rss_bytes(pid)))
    return memory_summary(samples, result, stream.duration_s)


def memory_summary(samples: Sequence[tuple[float, int]], result: SessionResult, audio_s: float) -> dict[str, Any]:
    """Flat or growing: slope over the second half, growth from the first quarter to the last."""
    times = [t for t, _ in samples]
    rss = [value / 2**20 for _, value in samples]
    quarter = max(1, len(rss) // 4)
    second_half = len(rss) // 2
    summary: dict[str, Any] = {
        "audio_s": round(audio_s, 1), "utterances": result.utterances, "error_count": len(result.errors),
        "rss_samples": len(rss), "rss_first_mb": round(rss[0], 1), "rss_last_mb": round(rss[-1], 1),
        "rss_growth_mb": round(statistics.median(rss[-quarter:]) - statistics.median(rss[:quarter]), 1),
    }
    if len(rss) - second_half >= 2 and times[-1] > times[second_half]:
        summary["rss_slope_mb_per_10_min"] = round(slope(times[second_half:], rss[second_half:]) * 600, 2)
    return summary


TARGETS = [
    report.Target("realtime_turn_to_transcript_ms_p95_1_session", "<=", 500.0),
    report.Target("realtime_turn_to_transcript_ms_p95_8_sessions", "<=", 1000.0),
    report.Target("realtime_memory_growth_mb", "<=", 25.0),
]


def headline(steps: Sequence[dict[str, Any]], memory: dict[str, Any] | None, limit_ms: float) -> dict[str, Any]:
    by_count = {s["sessions"]: s for s in steps}
    figures: dict[str, Any] = {
        "realtime_turn_to_transcript_ms_p95_1_session": by_count.get(1, {}).get("turn_to_transcript_ms_p95"),
        "realtime_turn_to_transcript_ms_p95_8_sessions": by_count.get(8, {}).get("turn_to_transcript_ms_p95"),
        "realtime_sessions_held_p95_under_1s": held_sessions(steps, limit_ms),
    }
    if memory is not None:
        figures["realtime_memory_growth_mb"] = memory["rss_growth_mb"]
    return figures


async def _phases(settings: RealtimeBenchSettings, base_url: str, pid: int, clips: list[np.ndarray]) -> dict[str, Any]:
    url = base_url.replace("http://", "ws://", 1) + "/v1/realtime?intent=transcription"
    steps: list[dict[str, Any]] = []
    for count in settings.sessions:
        log.info("realtime: %d session(s), %.0f s of speech each", count, settings.stream_s)
        step = await run_sessions(url, {}, clips, count, settings)
        log.info("realtime: %s", step)
        steps.append(step)
    memory = None
    if settings.memory_minutes > 0:
        log.info("realtime: one session for %.1f min, gateway RSS every %.0f s", settings.memory_minutes,
                 settings.memory_sample_s)
        memory = await memory_phase(url, {}, clips, pid, settings.memory_minutes, settings.memory_sample_s, settings)
    return {"steps": steps, "memory": memory}


def run(settings: RealtimeBenchSettings) -> dict[str, Any]:
    work = settings.cache_dir
    clips = [clip.samples for clip in build_corpus(work / "audio")[:8]]  # 3-15 s sentences: caption-sized turns
    triton_log = work / "logs" / "realtime-tritonserver.log"
    with triton(settings.repository_dir, triton_log, settings.ready_timeout_s) as server:
        env = {
            "GATEWAY_TRITON__URL": server.grpc_url,
            "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": str(settings.max_new_tokens),
            "GATEWAY_REALTIME__MAX_SESSIONS": str(max(settings.sessions) + 2),
            "GATEWAY_REALTIME__MAX_SESSION_S": str(max(3600.0, settings.memory_minutes * 60 + 600)),
        }
        with gateway(env, work / "logs" / "realtime-gateway.log") as gw:
            measured = asyncio.run(_phases(settings, gw.base_url, gw.pid, clips))
    figures = headline(measured["steps"], measured["memory"], settings.p95_limit_ms)
    return {
        **figures,
        "steps": measured["steps"],
        "memory": measured["memory"],
        "setup": {"chunk_ms": settings.chunk_ms, "silence_duration_ms": settings.silence_duration_ms,
                  "gap_s": settings.gap_s, "stream_s": settings.stream_s, "max_new_tokens": settings.max_new_tokens,
                  "memory_minutes": settings.memory_minutes, "p95_limit_ms": settings.p95_limit_ms,
                  "wire": "24 kHz pcm16, server_vad"},
        "targets": {t.key: report.check(t, figures.get(t.key)) for t in TARGETS},
    }  # machine, date, commit: report.write_section


def show(document: dict[str, Any], settings: RealtimeBenchSettings) -> None:
    keys = [t.key for t in TARGETS] + ["realtime_sessions_held_p95_under_1s"]
    print(report.table(document, keys))
    print("\n| sessions | utterances | turn->text p50 | p95 | speech->text p50 | p95 | errors |")
    print("|---|---|---|---|---|---|---|")
    for s in document["steps"]:
        print(f"| {s['sessions']} | {s['utterances']} | {s.get('turn_to_transcript_ms_p50')} | "
              f"{s.get('turn_to_transcript_ms_p95')} | {s.get('speech_to_transcript_ms_p50')} | "
              f"{s.get('speech_to_transcript_ms_p95')} | {s['error_count']} |")


def main(argv: list[str]) -> int:
    settings = RealtimeBenchSettings(_cli_parse_args=argv)  # type: ignore[call-arg]
    return report.run_section("realtime", settings, run, show)
