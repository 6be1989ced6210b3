"""One benchmark run: build the inputs, start the services, measure every phase, report.

Phase order (all in one run, so every comparison shares the machine's state):
1. preprocessing CPU cost, in this process, before the servers load the cores;
2. Triton and the gateway start; a few untimed warm-up requests;
3. the long file through a gateway that has only warmed up (RSS growth over idle);
4. gateway at concurrency 1;
5. gateway and Triton-direct at high concurrency, alternated in ABBA rounds so slow
   drifts of the shared machine's load hit both paths alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import cpu_usage, machine, preprocess, profiling, report, triton_metrics
from bench.clients import GatewayClient, TritonEnsembleClient
from bench.corpus import Clip, build_corpus
from bench.load import LoadResult, Timed, merge, run_load
from bench.long_audio import LongRecording, build_long_recording
from bench.proc_memory import PeakRss, mib, rss_bytes
from bench.servers import Gateway, gateway, triton
from launcher.server import TritonServer
from bench.settings import BenchSettings
from bench.stats import rtfx

log = logging.getLogger("bench")

_SHUFFLE_SEED = 20250101

Measured = tuple[LoadResult, triton_metrics.Snapshot, dict[str, float]]


@dataclass
class PathRuns:
    """Runs of one request path and the Triton counter deltas they caused."""

    runs: list[LoadResult] = field(default_factory=list)
    metrics: triton_metrics.Snapshot = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    def add(self, measured: Measured) -> None:
        result, change, cpu = measured
        self.runs.append(result)
        for name, seconds in cpu.items():
            self.cpu_s[name] = round(self.cpu_s.get(name, 0.0) + seconds, 2)
        for model, values in change.items():
            total = self.metrics.setdefault(model, {})
            for name, value in values.items():
                total[name] = total.get(name, 0.0) + value

    @property
    def merged(self) -> LoadResult:
        return merge(self.runs)

    def batch_sizes(self) -> dict[str, float]:
        return triton_metrics.achieved_batch_sizes(self.metrics)


def jobs(clips: Sequence[Clip], passes: int) -> list[Timed[Clip]]:
    """The corpus `passes` times, in a fixed shuffled order (long clips not all at the end)."""
    items = [Timed(clip, clip.duration_s) for _ in range(passes) for clip in clips]
    random.Random(_SHUFFLE_SEED).shuffle(items)
    return items


async def _snapshot(client: httpx.AsyncClient, url: str) -> triton_metrics.Snapshot:
    response = await client.get(url)
    response.raise_for_status()
    return triton_metrics.parse(response.text)


@dataclass(frozen=True)
class Observers:
    """What is read around every phase: Triton's counters and each process's CPU time."""

    metrics: httpx.AsyncClient
    metrics_url: str
    processes: dict[str, int]


async def _measured(observers: Observers, work: Callable[[], Awaitable[LoadResult]]) -> Measured:
    before = await _snapshot(observers.metrics, observers.metrics_url)
    cpu_before = cpu_usage.cpu_seconds(observers.processes)
    result = await work()
    cpu_after = cpu_usage.cpu_seconds(observers.processes)
    after = await _snapshot(observers.metrics, observers.metrics_url)
    return result, triton_metrics.delta(before, after), cpu_usage.cpu_delta(cpu_before, cpu_after)


async def _long_audio(
    settings: BenchSettings, gw: Gateway, client: GatewayClient, recording: LongRecording
) -> dict[str, Any]:
    data = recording.path.read_bytes()
    await asyncio.sleep(1.0)  # let the warm-up's garbage settle before the idle reading
    with PeakRss(gw.pid, settings.rss_poll_s) as peak:
        started = time.perf_counter()
        text = await client.transcribe(recording.path.name, data, "audio/ogg")
        wall = time.perf_counter() - started
    return {
        "long_audio_peak_rss_growth_mb": mib(peak.growth_bytes),
        "long_audio_wall_s": round(wall, 1),
        "long_audio_rtfx": round(rtfx(recording.duration_s, wall), 3),
        "long_audio_detail": {
            "audio_s": recording.duration_s,
            "upload_bytes": len(data),
            "format": "ogg/opus 24 kb/s, 16 kHz mono",
            "gateway_idle_rss_mb": mib(peak.baseline_bytes),
            "gateway_peak_rss_mb": mib(peak.peak_bytes),
            "rss_method": peak.method,
            "transcript_chars": len(text),
        },
    }


async def _load_phases(
    settings: BenchSettings,
    clips: Sequence[Clip],
    recording: LongRecording | None,
    gw: Gateway,
    server: TritonServer,
) -> dict[str, Any]:
    n = settings.concurrency
    timeout = settings.request_timeout_s
    gateway_client = GatewayClient(gw.base_url, max(n, 4), timeout)
    triton_client = TritonEnsembleClient(server.grpc_url, settings.max_new_tokens, timeout)
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(timeout=30.0) as metrics:
            log.info("warm-up: %d requests on each path", settings.warmup_requests)
            warm = jobs(clips, 1)[: settings.warmup_requests]
            if warm:
                await run_load(warm, gateway_client.clip, min(4, len(warm)))
                await run_load(warm, triton_client.clip, min(4, len(warm)))

            if recording is not None:
                log.info("long audio: %.0f min through the gateway", recording.duration_s / 60)
                results.update(await _long_audio(settings, gw, gateway_client, recording))
                log.info("long audio done in %.1f s", results["long_audio_wall_s"])

            assert server.pid is not None
            observers = Observers(metrics, server.metrics_url, cpu_usage.service_processes(server.pid, gw.pid))
            log.info("gateway, concurrency 1: %d requests", len(clips) * settings.passes_c1)
            c1 = PathRuns()
            c1.add(await _measured(observers, lambda: run_load(jobs(clips, settings.passes_c1), gateway_client.clip, 1)))

            gateway_cn, triton_cn = PathRuns(), PathRuns()
            per_round = jobs(clips, settings.passes_concurrent)
            for round_index in range(settings.rounds):
                order = [("gateway", gateway_cn, gateway_client.clip), ("triton", triton_cn, triton_client.clip)]
                if round_index % 4 in (1, 2):  # ABBA BAAB: G T | T G | T G | G T
                    order.reverse()
                for name, runs, call in order:
                    log.info("%s, concurrency %d: %d requests (round %d)", name, n, len(per_round), round_index + 1)
                    runs.add(await _measured(observers, lambda call=call: run_load(per_round, call, n)))
            if settings.profile:
                results[f"profile_gateway_c{n}"] = await _profile(settings, observers, per_round, gateway_client)
    finally:
        await gateway_client.aclose()
        await triton_client.aclose()

    results.update(report.headline(n, c1.merged, gateway_cn.merged, triton_cn.merged))
    results[f"achieved_batch_size_c{n}"] = gateway_cn.batch_sizes()
    results[f"achieved_batch_size_triton_c{n}"] = triton_cn.batch_sizes()
    results["achieved_batch_size_c1"] = c1.batch_sizes()
    results[f"triton_mean_queue_ms_c{n}"] = triton_metrics.mean_ms_per_request(gateway_cn.metrics, triton_metrics.QUEUE_US)
    results[f"triton_mean_compute_ms_c{n}"] = triton_metrics.mean_ms_per_request(
        gateway_cn.metrics, triton_metrics.COMPUTE_INFER_US
    )
    results["phases"] = {
        name: {
            **report.phase_summary(runs.merged),
            "rtfx_per_run": [round(rtfx(r.audio_s, r.wall_s), 2) for r in runs.runs],
            "cpu_s": runs.cpu_s,
            "service_cpu_ms_per_request": report.service_cpu_ms_per_request(runs.cpu_s, runs.merged.requests),
        }
        for name, runs in (("gateway_c1", c1), (f"gateway_c{n}", gateway_cn), (f"triton_c{n}", triton_cn))
    }
    return results


async def _profile(
    settings: BenchSettings, observers: Observers, work: list[Timed[Clip]], client: GatewayClient
) -> dict[str, Any]:
    """One more (untimed) gateway pass with py-spy attached to every process."""
    py_spy = profiling.find_py_spy()
    if py_spy is None:
        return {"skipped": "py-spy is not installed (pip install -c constraints.txt py-spy)"}
    log.info("profile: py-spy on %d processes, %d requests through the gateway", len(observers.processes), len(work))
    profiles = profiling.Profiles(py_spy, observers.processes, settings.cache_dir / "profiles")
    with profiles:
        result = await run_load(work, client.clip, settings.concurrency)
    return {
        "note": "py-spy samples at 50 Hz; busy_s = sampled non-idle seconds; top = innermost functions, % of samples",
        "wall_s": round(result.wall_s, 2),
        "raw_profiles": str(profiles.out_dir),
        "processes": {name: summary for name, summary in profiles.summaries().items() if summary["busy_s"] > 0},
    }


def _model_facts(settings: BenchSettings) -> dict[str, Any]:
    manifest_path = settings.artifacts_dir / "manifest.json"
    if not manifest_path.exists():
        return {"repository": str(settings.repository_dir)}
    manifest = json.loads(manifest_path.read_text())
    return {
        "repository": str(settings.repository_dir),
        "dtype": manifest.get("dtype"),
        "encoder": manifest.get("encoder"),
        "llm": manifest.get("llm"),
        "vocab_size": manifest.get("vocab_size"),
    }


def run(settings: BenchSettings) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    work = settings.cache_dir
    facts = machine.describe(now)
    log.info("corpus: synthesizing with espeak-ng under %s", work)
    clips = build_corpus(work / "audio")
    recording = None
    if settings.long_audio_minutes > 0:
        recording = build_long_recording(clips, settings.long_audio_minutes, work / "audio")

    log.info("preprocessing: decode + resample + log-mel, %.0f s of audio", settings.preprocess_min_seconds)
    pre = preprocess.measure(clips, settings.artifacts_dir / "mel.safetensors", settings.preprocess_min_seconds)

    log.info("starting tritonserver on %s", settings.repository_dir)
    with triton(settings.repository_dir, work / "logs" / "tritonserver.log", settings.ready_timeout_s) as server:
        env = {
            "GATEWAY_TRITON__URL": server.grpc_url,
            "GATEWAY_TRITON__INFER_TIMEOUT_S": str(settings.request_timeout_s),
            "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": str(settings.max_new_tokens),
            "GATEWAY_LIMITS__REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
            "GATEWAY_LIMITS__MAX_CONCURRENT_REQUESTS": str(max(64, settings.concurrency * 2)),
        }
        log.info("starting the gateway")
        with gateway(env, work / "logs" / "gateway.log") as gw:
            log.info("gateway idle RSS %.1f MiB", mib(rss_bytes(gw.pid)))
            measured = asyncio.run(
                _load_phases(settings, clips, recording, gw, server)
            )

    n = settings.concurrency
    document: dict[str, Any] = {}
    document.update({k: measured[k] for k in measured if k not in ("phases", "long_audio_detail")})
    document.update(
        {
            "preprocess_rtfx_per_core": round(rtfx(pre.audio_s, pre.cpu_s), 1),
            "decode_resample_rtfx_per_core": round(rtfx(pre.audio_s, pre.decode_cpu_s), 1),
            "log_mel_rtfx_per_core": round(rtfx(pre.audio_s, pre.mel_cpu_s), 1),
        }
    )
    document.update(facts)
    document["setup"] = {
        "max_new_tokens": settings.max_new_tokens,
        "concurrency": n,
        "corpus": {
            "utterances": len(clips),
            "audio_s": round(sum(c.duration_s for c in clips), 2),
            "shortest_s": round(min(c.duration_s for c in clips), 2),
            "longest_s": round(max(c.duration_s for c in clips), 2),
            "voice": "espeak-ng en-us, 160 wpm, 16 kHz mono 16-bit wav",
        },
        "passes_c1": settings.passes_c1,
        "passes_per_round": settings.passes_concurrent,
        "rounds": settings.rounds,
        "preprocess_audio_s": round(pre.audio_s, 1),
        "model": _model_facts(settings),
    }
    document["phases"] = measured["phases"]
    if "long_audio_detail" in measured:
        document["long_audio_detail"] = measured["long_audio_detail"]
    document["targets"] = report.check_targets(document, n)
    document["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return document


def headline_keys(concurrency: int) -> list[str]:
    c = concurrency
    return [
        "rtfx_gateway_c1",
        f"rtfx_gateway_c{c}",
        f"rtfx_triton_c{c}",
        f"gateway_overhead_ratio_c{c}",
        f"latency_ms_p50_c{c}",
        f"latency_ms_p95_c{c}",
        f"latency_ms_p99_c{c}",
        f"batching_gain_c{c}",
        f"achieved_batch_size_c{c}",
        "preprocess_rtfx_per_core",
        "decode_resample_rtfx_per_core",
        "log_mel_rtfx_per_core",
        "long_audio_peak_rss_growth_mb",
        "long_audio_wall_s",
        "machine",
        "cpu_count",
        "accelerator",
        "date",
        "commit",
    ]


def save(document: dict[str, Any], settings: BenchSettings) -> tuple[Path, Path]:
    on_gpu = str(document.get("accelerator", "none")).startswith("cuda")
    now = dt.datetime.fromisoformat(str(document["date"]))
    return report.write(document, settings.results_dir, report.dated_name(now, on_gpu))
