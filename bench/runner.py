"""One benchmark run: build the inputs, start the services, measure every phase, report.

Phase order (all in one run, so every comparison shares the machine's state):
1. preprocessing CPU cost per format, in this process, before the servers load the cores;
2. Triton and the gateway start (on the services' CPUs); a few untimed warm-up requests;
3. the long file through a gateway that has only warmed up (RSS growth over idle);
4. the sweep: both arms at every concurrency, in rounds (bench.sweep: ABBA BAAB arm order,
   level order flipped every round), the load generator pinned to its own CPU;
5. one untimed gateway pass under py-spy.
Then the table (with 95 % bootstrap intervals over rounds), the JSON, the plot and the
README's table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import affinity, cpu_usage, machine, plot, preprocess, profiling, readme, report, triton_metrics
from bench.clients import GatewayClient, TritonEnsembleClient
from bench.corpus import Clip, build_corpus
from bench.load import LoadResult, Timed, merge, run_load
from bench.long_audio import LongRecording, build_long_recording
from bench.proc_memory import PeakRss, mib, rss_bytes
from bench.servers import Gateway, gateway, triton
from bench.settings import BenchSettings
from bench.stats import rtfx
from bench.sweep import ARMS, Sweep, passes_for, run_sweep
from gateway.settings import ModelSettings
from launcher.server import TritonServer

log = logging.getLogger("bench")

_SHUFFLE_SEED = 20250101

Measured = tuple[LoadResult, triton_metrics.Snapshot, dict[str, float]]


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
    """What is read around every run: Triton's counters and each process's CPU time."""

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
    levels = settings.sweep_levels
    timeout = settings.request_timeout_s
    gateway_client = GatewayClient(gw.base_url, max(max(levels), 4), timeout)
    triton_client = TritonEnsembleClient(server.grpc_url, ModelSettings(asr_max_new_tokens=settings.max_new_tokens), timeout)
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
            sweep = await run_sweep(
                levels,
                settings.rounds,
                lambda level: jobs(clips, passes_for(level, len(clips))),
                {"gateway": gateway_client.clip, "triton": triton_client.clip},
                lambda work: _measured(observers, work),
            )
            if settings.profile:
                n = settings.concurrency
                work = jobs(clips, passes_for(n, len(clips)))
                results[f"profile_gateway_c{n}"] = await _profile(settings, observers, work, gateway_client)
    finally:
        await gateway_client.aclose()
        await triton_client.aclose()
    results.update(_sweep_results(settings.concurrency, levels, sweep))
    return results


def _sweep_results(n: int, levels: Sequence[int], sweep: Sweep) -> dict[str, Any]:
    keys, intervals = report.headline(n, sweep[("gateway", 1)].runs, sweep[("gateway", n)].runs, sweep[("triton", n)].runs)
    gateway_cn, triton_cn = sweep[("gateway", n)], sweep[("triton", n)]
    out: dict[str, Any] = dict(keys)
    out["intervals"] = intervals
    out[f"achieved_batch_size_c{n}"] = triton_metrics.achieved_batch_sizes(gateway_cn.metrics)
    out[f"achieved_batch_size_triton_c{n}"] = triton_metrics.achieved_batch_sizes(triton_cn.metrics)
    out["achieved_batch_size_c1"] = triton_metrics.achieved_batch_sizes(sweep[("gateway", 1)].metrics)
    out[f"triton_mean_queue_ms_c{n}"] = triton_metrics.mean_ms_per_request(gateway_cn.metrics, triton_metrics.QUEUE_US)
    out[f"triton_mean_compute_ms_c{n}"] = triton_metrics.mean_ms_per_request(
        gateway_cn.metrics, triton_metrics.COMPUTE_INFER_US
    )
    out["sweep"] = {
        arm: {
            str(level): {
                **report.level_figures(sweep[(arm, level)].runs),
                "tokens_per_request": report.phase_summary(merge(sweep[(arm, level)].runs)).get("tokens_per_request"),
                "cpu_s": sweep[(arm, level)].cpu_s,
                "service_cpu_ms_per_request": report.service_cpu_ms_per_request(
                    sweep[(arm, level)].cpu_s, merge(sweep[(arm, level)].runs).requests
                ),
                "client_cpu_ms_per_request": report.client_cpu_ms_per_request(
                    sweep[(arm, level)].cpu_s, merge(sweep[(arm, level)].runs).requests
                ),
                "achieved_batch_size": triton_metrics.achieved_batch_sizes(sweep[(arm, level)].metrics),
            }
            for level in levels
        }
        for arm in ARMS
    }
    return out


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


def _preprocessing(settings: BenchSettings, clips: Sequence[Clip]) -> dict[str, Any]:
    encoded = preprocess.encode_corpus(clips, settings.cache_dir / "audio" / "formats")
    rounds = preprocess.measure(encoded, settings.artifacts_dir / "mel.safetensors", settings.preprocess_rounds)
    out: dict[str, Any] = {"preprocess": {fmt: r.figures() for fmt, r in rounds.items()}}
    intervals: dict[str, list[float] | None] = {}
    for fmt, figures in out["preprocess"].items():
        suffix = "" if fmt == preprocess.HEADLINE_FORMAT else f"_{fmt.replace('-', '_')}"
        for stage in ("preprocess", "decode_resample", "log_mel"):
            if suffix and stage == "log_mel":
                continue  # the same samples' log-mel: one figure is enough
            key = f"{stage}_rtfx_per_core{suffix}"
            out[key] = figures[stage]["value"]
            intervals[key] = figures[stage]["ci95"]
    out["intervals"] = intervals
    return out


def run(settings: BenchSettings) -> dict[str, Any]:
    now = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    work = settings.cache_dir
    facts = machine.describe(now)
    cpus = affinity.plan(affinity.usable_cpus())
    log.info("corpus: synthesizing with espeak-ng under %s", work)
    clips = build_corpus(work / "audio")
    recording = None
    if settings.long_audio_minutes > 0:
        recording = build_long_recording(clips, settings.long_audio_minutes, work / "audio")

    log.info("preprocessing: decode + resample + log-mel, %d rounds per format", settings.preprocess_rounds)
    if settings.pin_cpus:
        affinity.pin_self(cpus.client)  # one core, as the figure is per core
    pre = _preprocessing(settings, clips)
    if settings.pin_cpus:
        affinity.pin_self(cpus.services)  # inherited by tritonserver, its models and the gateway

    log.info("starting tritonserver on %s", settings.repository_dir)
    with triton(settings.repository_dir, work / "logs" / "tritonserver.log", settings.ready_timeout_s) as server:
        env = {
            "GATEWAY_TRITON__URL": server.grpc_url,
            "GATEWAY_TRITON__INFER_TIMEOUT_S": str(settings.request_timeout_s),
            "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": str(settings.max_new_tokens),
            "GATEWAY_LIMITS__REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
            "GATEWAY_LIMITS__MAX_CONCURRENT_REQUESTS": str(max(64, max(settings.sweep_levels) * 2)),
        }
        log.info("starting the gateway")
        with gateway(env, work / "logs" / "gateway.log") as gw:
            if settings.pin_cpus:
                affinity.pin_self(cpus.client)  # before any client thread exists
            log.info("gateway idle RSS %.1f MiB; CPUs %s", mib(rss_bytes(gw.pid)), cpus.describe())
            measured = asyncio.run(_load_phases(settings, clips, recording, gw, server))

    n = settings.concurrency
    document: dict[str, Any] = {}
    document.update({k: measured[k] for k in measured if k not in ("sweep", "long_audio_detail", "intervals")})
    document.update({k: v for k, v in pre.items() if k not in ("preprocess", "intervals")})
    document["intervals"] = {**measured["intervals"], **pre["intervals"]}
    document.update(facts)
    document["setup"] = {
        "max_new_tokens": settings.max_new_tokens,
        "concurrency": n,
        "levels": settings.sweep_levels,
        "rounds": settings.rounds,
        "arm_order": "ABBA BAAB per level (G T | T G | T G | G T), level order flipped every round",
        "interval": "95 % percentile bootstrap over rounds (4000 resamples), paired rounds for ratios",
        "cpus": cpus.describe() if settings.pin_cpus else "not pinned",
        "corpus": {
            "utterances": len(clips),
            "audio_s": round(sum(c.duration_s for c in clips), 2),
            "shortest_s": round(min(c.duration_s for c in clips), 2),
            "longest_s": round(max(c.duration_s for c in clips), 2),
            "voice": "espeak-ng en-us, 160 wpm, 16 kHz mono 16-bit wav",
        },
        "preprocess_rounds": settings.preprocess_rounds,
        "model": _model_facts(settings),
    }
    document["preprocess"] = pre["preprocess"]
    document["sweep"] = measured["sweep"]
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
        *(f"preprocess_rtfx_per_core_{fmt.replace('-', '_')}" for fmt in preprocess.FORMATS[1:]),
        "long_audio_peak_rss_growth_mb",
        "long_audio_wall_s",
        "machine",
        "cpu_count",
        "accelerator",
        "date",
        "commit",
    ]


def main(argv: list[str]) -> int:
    """`python -m bench [run]`: the full run, table, JSON, plot and the README's table."""
    settings = BenchSettings(_cli_parse_args=argv)  # type: ignore[call-arg]
    if problem := settings.missing_repository():
        print(problem, file=sys.stderr)
        return 2
    document = run(settings)
    latest, copy = save(document, settings)
    keys = headline_keys(settings.concurrency)
    print(report.table(document, keys))
    figure = plot.write(document, settings.results_dir, copy.with_suffix(".png").name)
    print(f"\nwritten: {latest}, {copy} and {figure}")
    if settings.update_readme and readme.update(readme.README, report.table(document, keys), readme.caption(document)):
        print(f"updated the benchmark table in {readme.README}")
    missed = [key for key, check in document["targets"].items() if check["met"] is not True]
    if missed:
        print(f"targets not met (interval not wholly on the right side): {', '.join(missed)}")
    return 0


def save(document: dict[str, Any], settings: BenchSettings) -> tuple[Path, Path]:
    on_gpu = str(document.get("accelerator", "none")).startswith("cuda")
    now = dt.datetime.fromisoformat(str(document["date"]))
    return report.write_run(document, settings.results_dir, report.dated_name(now, on_gpu))
