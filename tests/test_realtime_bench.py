"""`python -m bench realtime`, shortened: its phases against the session gateway, and its arithmetic.

The full run (N sessions stepped up, a 30-minute session for memory) is `make bench`-scale;
here two sessions stream a few seconds each and the memory phase runs for 15 s, which checks
that the phases measure what they claim. Whether memory stays flat over 30 minutes is the
benchmark's figure, not a timed test.
"""

from __future__ import annotations

import numpy as np

from bench.realtime import (
    RealtimeBenchSettings,
    SessionResult,
    build_stream,
    held_sessions,
    memory_phase,
    memory_summary,
    run_sessions,
)
from tests.fixtures.gateway import GATEWAY_API_KEY, GatewayProcess
from tests.fixtures.realtime import SpokenScript

AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}


def _clips(script: SpokenScript) -> list[np.ndarray]:
    return [script.samples_16k[int(s.start_s * 16000) : int(s.end_s * 16000)] for s in script.segments]


def test_stream_layout_marks_where_speech_ends(realtime_script: SpokenScript) -> None:
    clips = _clips(realtime_script)
    stream = build_stream(clips, 6.0, 1.0, 100)
    assert stream.duration_s >= 6.0
    lead, gap = 8000, 16000  # 0.5 s before the first clip, 1 s after each (16 kHz samples)
    assert stream.speech_ends_ms[0] == (lead + clips[0].size) * 1000 // 16000
    assert stream.speech_ends_ms[1] == (lead + clips[0].size + gap + clips[1].size) * 1000 // 16000


def test_held_sessions_is_the_largest_count_under_the_limit() -> None:
    steps = [{"sessions": 1, "turn_to_transcript_ms_p95": 300, "error_count": 0},
             {"sessions": 4, "turn_to_transcript_ms_p95": 900, "error_count": 0},
             {"sessions": 8, "turn_to_transcript_ms_p95": 1400, "error_count": 0},
             {"sessions": 12, "turn_to_transcript_ms_p95": 800, "error_count": 2}]
    assert held_sessions(steps, 1000) == 4
    assert held_sessions(steps[2:], 1000) is None


def test_memory_summary_tells_flat_from_growing() -> None:
    times = [float(t) for t in range(0, 600, 10)]
    flat = memory_summary([(t, 200 * 2**20 + (int(t) % 3) * 2**16) for t in times], SessionResult(), 600)
    growing = memory_summary([(t, 200 * 2**20 + int(t) * 2**17) for t in times], SessionResult(), 600)
    assert abs(flat["rss_growth_mb"]) < 1 and abs(flat["rss_slope_mb_per_10_min"]) < 1
    assert growing["rss_growth_mb"] > 40 and growing["rss_slope_mb_per_10_min"] == 75.0


async def test_sessions_and_memory_phases_against_the_gateway(
    gateway_process: GatewayProcess, realtime_script: SpokenScript
) -> None:
    url = gateway_process.base_url.replace("http://", "ws://", 1) + "/v1/realtime?intent=transcription"
    settings = RealtimeBenchSettings(stream_s=5.0, memory_minutes=0.25, memory_sample_s=2.0)
    clips = _clips(realtime_script)
    step = await run_sessions(url, AUTH, clips, 2, settings)
    assert step["sessions"] == 2 and step["error_count"] == 0, step
    assert step["utterances"] >= 4  # two sentences (at least) per session
    assert 0 < step["turn_to_transcript_ms_p50"] <= step["turn_to_transcript_ms_p95"]
    # Measured from the last speech sent, which includes the VAD's 500 ms of silence.
    assert step["speech_to_transcript_ms_p50"] > step["turn_to_transcript_ms_p50"]
    memory = await memory_phase(url, AUTH, clips, gateway_process.process.pid, 0.25, 2.0, settings)
    assert memory["error_count"] == 0 and memory["utterances"] >= 2
    assert memory["rss_samples"] >= 5 and memory["rss_first_mb"] > 0
