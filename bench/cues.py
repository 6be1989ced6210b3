"""`python -m bench cues`: caption timing of SRT cues against known utterance boundaries.

A recording is laid out from the corpus's shorter clips (each trimmed to its audible
extent) with pauses of known length between them, so where every utterance starts and
ends is known to the sample. It goes through its own Triton and gateway as
`response_format=srt` (and once as `json`, for the cost comparison). Reported:

- cue layout: duration percentiles and maximum, lines per cue, characters per line, and the
  share of cues within the limits (7 s, 2 x 42 characters);
- timing: for each utterance, how far the nearest cue start is from its start and the
  nearest cue end from its end (ms percentiles), how many cue edges fall inside a pause
  (should be none) and the share of edges at a known boundary;
- cost: Triton ASR calls per audio minute for srt against json;
- words: words per cue always; with `--score-words` (a trained model, whose text means
  something) also the word error rate of each utterance's cues joined against its text.

The section goes into bench/results/latest.json under "cues" (the rest of the file is kept).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import srt
from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from bench import report
from bench.clients import MODEL_ID
from bench.corpus import SAMPLE_RATE, Clip, audible, build_corpus
from bench.servers import gateway, triton
from bench.settings import CommandSettings
from bench.stats import percentile

log = logging.getLogger("bench.cues")

_PAUSES_S = (0.5, 0.8, 1.2, 2.0)
_SEED = 12


class CuesSettings(CommandSettings):
    """`python -m bench cues`: SRT cue timing against known utterance boundaries."""

    model_config = SettingsConfigDict(env_prefix="BENCH_CUES_", cli_prog_name="python -m bench cues")

    clips: PositiveInt = Field(default=8, description="The corpus's shortest clips used (3 s and up).")
    rounds: PositiveInt = Field(default=2, description="Times the clips are laid out (with different pauses).")
    max_new_tokens: PositiveInt = Field(
        default=8,
        description="Gateway token budget per piece. The untrained model's noise then fits two lines, so the "
        "timing measured is that of cues cut at pauses; use the default 256 with a trained model.",
    )
    tolerance_s: PositiveFloat = Field(default=0.2, description="A cue edge this close to a known boundary is at it.")
    max_cue_s: PositiveFloat = Field(default=7.0, description="Cue length limit checked (the gateway's default).")
    line_chars: PositiveInt = Field(default=42, description="Line length limit checked.")
    lines: PositiveInt = Field(default=2, description="Lines per cue limit checked.")
    score_words: bool = Field(
        default=False, description="Also score the words (WER per utterance): only meaningful with a trained model."
    )


@dataclass(frozen=True)
class Utterance:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Recording:
    wav: bytes
    duration_s: float
    utterances: tuple[Utterance, ...]


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    lines: tuple[str, ...]


def lay_out(clips: Sequence[Clip], rounds: int, seed: int = _SEED) -> tuple[np.ndarray, tuple[Utterance, ...]]:
    """Clips trimmed to their audible extent, separated by pauses of known length."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    utterances = []
    position = parts[0].size
    for _ in range(rounds):
        for clip in clips:
            speech = clip.samples[audible(clip.samples)]
            utterances.append(Utterance(position / SAMPLE_RATE, (position + speech.size) / SAMPLE_RATE, clip.text))
            pause = np.zeros(int(float(rng.choice(_PAUSES_S)) * SAMPLE_RATE), dtype=np.float32)
            parts += [speech, pause]
            position += speech.size + pause.size
    return np.concatenate(parts), tuple(utterances)


def parse_srt(body: str) -> list[Cue]:
    return [Cue(c.start.total_seconds(), c.end.total_seconds(), tuple(c.content.split("\n"))) for c in srt.parse(body)]


def in_pause(t: float, utterances: Sequence[Utterance], duration_s: float, tolerance_s: float) -> bool:
    """Whether `t` lies inside a pause (or the leading/trailing silence), tolerance off both sides."""
    edges = [0.0, *[x for u in utterances for x in (u.start_s, u.end_s)], duration_s]
    return any(a + tolerance_s < t < b - tolerance_s for a, b in zip(edges[::2], edges[1::2]))


def timing_figures(
    cues: Sequence[Cue], utterances: Sequence[Utterance], duration_s: float, settings: CuesSettings
) -> dict[str, Any]:
    """Cue layout and timing against the known boundaries (pure)."""
    durations = [c.end_s - c.start_s for c in cues]
    start_err = [1000 * min(abs(c.start_s - u.start_s) for c in cues) for u in utterances]
    end_err = [1000 * min(abs(c.end_s - u.end_s) for c in cues) for u in utterances]
    edges = [t for c in cues for t in (c.start_s, c.end_s)]
    boundaries = [t for u in utterances for t in (u.start_s, u.end_s)]
    within = [
        d <= settings.max_cue_s + 1e-3 and len(c.lines) <= settings.lines
        and all(len(line) <= settings.line_chars for line in c.lines)
        for c, d in zip(cues, durations, strict=True)
    ]  # fmt: skip

    def pct(values: Sequence[float], q: float) -> float:
        return round(percentile(values, q), 1)

    return {
        "utterances": len(utterances),
        "cues": len(cues),
        "cue_s_p50": round(percentile(durations, 50), 3),
        "cue_s_p95": round(percentile(durations, 95), 3),
        "cue_max_s": round(max(durations), 3),
        "lines_per_cue_max": max(len(c.lines) for c in cues),
        "line_chars_max": max(len(line) for c in cues for line in c.lines),
        "cues_within_limits": round(sum(within) / len(cues), 4),
        "start_error_ms_p50": pct(start_err, 50),
        "start_error_ms_p95": pct(start_err, 95),
        "start_error_ms_max": round(max(start_err), 1),
        "end_error_ms_p50": pct(end_err, 50),
        "end_error_ms_p95": pct(end_err, 95),
        "end_error_ms_max": round(max(end_err), 1),
        "cue_edge_error_ms_p95": max(pct(start_err, 95), pct(end_err, 95)),
        "cue_edges_inside_pauses": sum(in_pause(t, utterances, duration_s, settings.tolerance_s) for t in edges),
        "cue_edges_at_boundaries": round(
            sum(min(abs(t - b) for b in boundaries) <= settings.tolerance_s for t in edges) / len(edges), 4
        ),
    }


def word_figures(cues: Sequence[Cue], utterances: Sequence[Utterance], score: bool) -> dict[str, Any]:
    """Words per cue; with `score`, each utterance's cues (by midpoint) joined and scored against its text."""
    figures: dict[str, Any] = {"words_per_cue_mean": round(float(np.mean([len(" ".join(c.lines).split()) for c in cues])), 2)}
    if not score:
        figures["wer"] = None  # the untrained model's text is noise
        return figures
    import jiwer

    hypotheses = []
    for u in utterances:
        held = [c for c in cues if u.start_s <= (c.start_s + c.end_s) / 2 <= u.end_s]
        hypotheses.append(" ".join(" ".join(c.lines) for c in held))
    figures["wer"] = round(float(jiwer.wer([u.text.lower() for u in utterances], [h.lower() for h in hypotheses])), 4)
    return figures


def targets(settings: CuesSettings) -> list[report.Target]:
    return [
        report.Target("cue_max_s", "<=", settings.max_cue_s),
        report.Target("cue_edge_error_ms_p95", "<=", 1000 * settings.tolerance_s),
        report.Target("cue_edges_inside_pauses", "<=", 0),
        report.Target("cues_within_limits", ">=", 1.0),
    ]


async def _asr_calls(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('gateway_triton_request_duration_seconds_count{model="canary_qwen"}'):
            return float(line.split()[-1])
    return 0.0


async def _measure(base_url: str, recording: Recording) -> tuple[str, dict[str, float]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=1800.0) as client:

        async def post(response_format: str) -> tuple[str, float]:
            before = await _asr_calls(client)
            response = await client.post(
                "/v1/audio/transcriptions",
                files={"file": ("cues.wav", recording.wav, "audio/wav")},
                data={"model": MODEL_ID, "response_format": response_format},
            )
            if response.status_code != 200:
                raise RuntimeError(f"{response_format}: {response.status_code} {response.text[:300]}")
            return response.text, await _asr_calls(client) - before

        _, json_calls = await post("json")
        body, srt_calls = await post("srt")
    minutes = recording.duration_s / 60
    return body, {
        "asr_calls_per_audio_minute_json": round(json_calls / minutes, 2),
        "asr_calls_per_audio_minute_srt": round(srt_calls / minutes, 2),
    }


def _recording(settings: CuesSettings) -> Recording:
    import io

    import soundfile

    clips = sorted(build_corpus(settings.cache_dir / "audio"), key=lambda c: c.duration_s)[: settings.clips]
    audio, utterances = lay_out(clips, settings.rounds)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return Recording(buffer.getvalue(), audio.size / SAMPLE_RATE, utterances)


def run(settings: CuesSettings) -> dict[str, Any]:
    recording = _recording(settings)
    log.info("cues: %.0f s recording, %d utterances", recording.duration_s, len(recording.utterances))
    work = settings.cache_dir
    with triton(settings.repository_dir, work / "logs" / "cues-tritonserver.log", settings.ready_timeout_s) as server:
        env = {"GATEWAY_TRITON__URL": server.grpc_url, "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": str(settings.max_new_tokens),
               "GATEWAY_LOG_LEVEL": "warning"}  # fmt: skip
        with gateway(env, work / "logs" / "cues-gateway.log") as gw:
            body, cost = asyncio.run(_measure(gw.base_url, recording))
    cues = parse_srt(body)
    section: dict[str, Any] = {
        **timing_figures(cues, recording.utterances, recording.duration_s, settings),
        **cost,
        **word_figures(cues, recording.utterances, settings.score_words),
        "setup": {
            "audio_s": round(recording.duration_s, 1),
            "clips": settings.clips, "rounds": settings.rounds, "pauses_s": list(_PAUSES_S),
            "max_new_tokens": settings.max_new_tokens, "tolerance_s": settings.tolerance_s,
        },  # fmt: skip
    }
    section["targets"] = {t.key: report.check(t, section.get(t.key)) for t in targets(settings)}
    return section


def show(section: dict[str, Any], settings: CuesSettings) -> None:
    print(report.table(section, [k for k in section if k not in ("setup", "targets")]))


def main(argv: list[str]) -> int:
    return report.run_section("cues", CuesSettings(_cli_parse_args=argv), run, show)  # type: ignore[call-arg]
