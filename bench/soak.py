"""`python -m bench soak`: does the gateway keep memory per request? Plateau or leak, measured.

A gateway of its own (in front of its own Triton) gets thousands of transcription requests
on loopback, in phases: one warm-up phase, then `--phases` measured ones. After each phase
the gateway is idle for a moment and its RSS is read (median of five readings): what it
keeps between loads. The slope of idle RSS over the measured phases after the first, per
1,000 requests, with its 95 % interval, tells a plateau (allocator pools filled once, slope ~0)
from a leak (a constant slope): "grows" only when the whole interval is above `--leak-mib-per-1k`.
Unless it is wholly below, tracemalloc is started in the gateway and two more phases show how
much the Python heap kept and which source lines hold it.

Requests rotate through the corpus's shorter clips in wav, flac, mp3 and opus and the
json, verbose_json, text and srt response formats. Bounded in time: no phase starts after
`--max-seconds` of load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import preprocess, report
from bench.clients import MODEL_ID
from bench.corpus import build_corpus
from bench.proc_memory import mib, rss_bytes
from bench.servers import Gateway, gateway, triton
from bench.settings import SoakSettings
from bench.stats import Interval, slope_interval

log = logging.getLogger("bench.soak")

_MIME = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg"}
_RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt")
_SHORT_CLIPS = 8  # the corpus's shortest utterances (3-15 s): many requests per second
_IDLE_SETTLE_S = 1.0
_TRACED_PHASES = 2
_TOP_GROWERS = 15


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    mime: str


@dataclass(frozen=True)
class Phase:
    index: int  # 0: warm-up
    requests: int
    cumulative_requests: int  # measured requests up to and including this phase
    seconds: float
    idle_rss_mib: float
    traced: bool = False


def idle_rss(pid: int) -> int:
    """Median of five readings 0.2 s apart, after a short settle: what the process keeps."""
    time.sleep(_IDLE_SETTLE_S)
    readings = []
    for _ in range(5):
        readings.append(rss_bytes(pid))
        time.sleep(0.2)
    return int(statistics.median(readings))


def rss_slope_per_1k(phases: Sequence[Phase]) -> Interval | None:
    """MiB of idle RSS per 1,000 requests over the untraced phases after the first measured
    one (the warm-up and phase 1 fill the allocator's per-thread pools: a plateau rises there
    once, a leak keeps rising), with its 95 % interval: idle RSS wanders by tens of MiB from
    phase to phase with the allocator's arenas, so one slope of a few phases decides little."""
    judged = [p for p in phases if p.index > 1 and not p.traced]
    if len(judged) < 2:
        return None
    return slope_interval([p.cumulative_requests / 1000 for p in judged], [p.idle_rss_mib for p in judged])


def verdict(per_1k: Interval | None, threshold: float) -> str | None:
    """"grows" when the whole interval is above the threshold, "plateau" when it is below,
    "undecided" otherwise (more phases narrow it)."""
    if per_1k is None or per_1k.bounds is None:
        return None
    low, high = per_1k.bounds
    return "grows" if low > threshold else "plateau" if high < threshold else "undecided"


def heap_changes(first: Path, last: Path, limit: int = _TOP_GROWERS) -> tuple[float, list[dict[str, Any]]]:
    """Between two tracemalloc snapshots: the live Python-heap KiB added (net, every line) and
    the source lines whose live memory grew most. Each snapshot is loaded once."""
    before, after = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    by_line = after.compare_to(before, "lineno")
    growers = []
    for stat in by_line[:limit]:
        frame = stat.traceback[0]
        growers.append({
            "where": f"{frame.filename}:{frame.lineno}",
            "grew_kib": round(stat.size_diff / 1024, 1),
            "blocks_grew": stat.count_diff,
            "now_kib": round(stat.size / 1024, 1),
        })  # fmt: skip
    return sum(stat.size_diff for stat in by_line) / 1024, growers


def _uploads(settings: SoakSettings) -> list[Upload]:
    clips = sorted(build_corpus(settings.cache_dir / "audio"), key=lambda c: c.duration_s)[:_SHORT_CLIPS]
    encoded = preprocess.encode_corpus(clips, settings.cache_dir / "audio" / "formats")
    return [
        Upload(f"{clip.name}.{fmt}", encoded[fmt][i], _MIME[fmt])
        for i, clip in enumerate(clips)
        for fmt in _MIME
    ]


async def _phase(client: httpx.AsyncClient, work: list[tuple[Upload, str]], concurrency: int) -> None:
    queue = list(reversed(work))

    async def worker() -> None:
        while queue:
            upload, response_format = queue.pop()
            response = await client.post(
                "/v1/audio/transcriptions",
                files={"file": (upload.name, upload.data, upload.mime)},
                data={"model": MODEL_ID, "response_format": response_format},
            )
            if response.status_code != 200:
                raise RuntimeError(f"{upload.name} ({response_format}): {response.status_code} {response.text[:300]}")

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def _wait_for(path: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway wrote no {path.name}")
        await asyncio.sleep(0.2)


async def _soak(settings: SoakSettings, gw: Gateway, uploads: list[Upload], snapshots: Path) -> dict[str, Any]:
    mix = itertools.cycle(itertools.product(uploads, _RESPONSE_FORMATS))
    phases: list[Phase] = []
    growers: list[dict[str, Any]] | None = None
    started = time.monotonic()
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=600.0, limits=limits) as client:

        async def run_phase(index: int, count: int, traced: bool = False) -> None:
            phase_started = time.monotonic()
            await _phase(client, [next(mix) for _ in range(count)], settings.concurrency)
            seconds = time.monotonic() - phase_started
            rss = await asyncio.to_thread(idle_rss, gw.pid)
            cumulative = (phases[-1].cumulative_requests if phases else 0) + (count if index > 0 else 0)
            phases.append(Phase(index, count, cumulative, round(seconds, 1), mib(rss), traced))
            log.info("phase %d: %d requests in %.1f s, idle RSS %.1f MiB", index, count, seconds, mib(rss))

        await run_phase(0, max(settings.concurrency, settings.requests_per_phase // 2))
        for index in range(1, settings.phases + 1):
            if time.monotonic() - started > settings.max_seconds and index > 3:
                log.info("time bound reached after %d measured phases", index - 1)
                break
            await run_phase(index, settings.requests_per_phase)
        per_1k = rss_slope_per_1k(phases)
        heap_kib_per_1k: float | None = None
        judged = verdict(per_1k, settings.leak_mib_per_1k)
        if per_1k is not None and judged != "plateau":
            log.info("idle RSS slope %.2f MiB per 1,000 requests (%s): tracing the heap for %d phases",
                     per_1k.value, per_1k.bounds, _TRACED_PHASES)  # fmt: skip
            gw.process.send_signal(signal.SIGUSR2)  # bench.traced_gateway: start tracing
            await asyncio.sleep(0.5)
            for taken in range(_TRACED_PHASES + 1):
                if taken:
                    await run_phase(len(phases), settings.requests_per_phase, traced=True)
                gw.process.send_signal(signal.SIGUSR1)  # write a snapshot
                await _wait_for(snapshots / f"snapshot-{taken}.pickle")
            heap_kib, growers = heap_changes(snapshots / "snapshot-0.pickle", snapshots / f"snapshot-{_TRACED_PHASES}.pickle")
            heap_kib_per_1k = heap_kib / (_TRACED_PHASES * settings.requests_per_phase / 1000)
    measured = [p for p in phases if p.index > 0 and not p.traced]
    return {
        "phases": [asdict(p) for p in phases],
        "measured_requests": measured[-1].cumulative_requests if measured else 0,
        "rss_slope_mib_per_1k_requests": None if per_1k is None else per_1k.as_dict(3),
        "idle_rss_first_to_last_mib": None if not measured else round(measured[-1].idle_rss_mib - measured[0].idle_rss_mib, 1),
        "leak_threshold_mib_per_1k": settings.leak_mib_per_1k,
        "verdict": judged,
        # Traced phases only: what the Python heap kept per 1,000 requests (RSS also holds
        # native memory: onnxruntime, the allocator's arenas).
        "traced_heap_growth_kib_per_1k_requests": None if heap_kib_per_1k is None else round(heap_kib_per_1k, 1),
        "top_growers": growers,
        "load_s": round(time.monotonic() - started, 1),
    }


def run(settings: SoakSettings) -> dict[str, Any]:
    work = settings.cache_dir
    uploads = _uploads(settings)
    snapshots = work / "soak-snapshots"
    for old in snapshots.glob("snapshot-*.pickle"):
        old.unlink()
    with triton(settings.repository_dir, work / "logs" / "soak-tritonserver.log", settings.ready_timeout_s) as server:
        env = {
            "GATEWAY_TRITON__URL": server.grpc_url,
            "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": str(settings.max_new_tokens),
            "GATEWAY_LIMITS__MAX_CONCURRENT_REQUESTS": str(max(64, settings.concurrency * 2)),
            "GATEWAY_LOG_LEVEL": "warning",
        }
        module = ("-m", "bench.traced_gateway", str(snapshots))
        with gateway(env, work / "logs" / "soak-gateway.log", module=module) as gw:
            log.info("soak: gateway idle RSS %.1f MiB, %d uploads in the mix", mib(rss_bytes(gw.pid)), len(uploads))
            result = asyncio.run(_soak(settings, gw, uploads, snapshots))
    return {
        **result,
        "setup": {
            "concurrency": settings.concurrency,
            "requests_per_phase": settings.requests_per_phase,
            "max_new_tokens": settings.max_new_tokens,
            "mix": f"{_SHORT_CLIPS} shortest corpus clips x {sorted(_MIME)} x {list(_RESPONSE_FORMATS)}",
        },
    }  # machine, date, commit: report.write_section


def show(document: dict[str, Any], settings: SoakSettings) -> None:
    print("| phase | requests | measured so far | seconds | idle RSS MiB |\n|---|---|---|---|---|")
    for p in document["phases"]:
        label = "warm-up" if p["index"] == 0 else f"{p['index']}{' (traced)' if p['traced'] else ''}"
        print(f"| {label} | {p['requests']} | {p['cumulative_requests']} | {p['seconds']} | {p['idle_rss_mib']} |")
    per_1k = document["rss_slope_mib_per_1k_requests"] or {}
    print(
        f"\nidle RSS slope: {per_1k.get('value')} MiB per 1,000 requests, 95 % interval {per_1k.get('ci95')} "
        f"over {per_1k.get('rounds')} phases ({document['verdict']}; threshold {settings.leak_mib_per_1k:g})"
    )
    if document["traced_heap_growth_kib_per_1k_requests"] is not None:
        print(f"traced Python heap: {document['traced_heap_growth_kib_per_1k_requests']} KiB kept per 1,000 requests")
    for grower in document["top_growers"] or []:
        print(f"  {grower['grew_kib']:>10.1f} KiB  {grower['blocks_grew']:>7} blocks  {grower['where']}")


def main(argv: list[str]) -> int:
    return report.run_section("soak", SoakSettings(_cli_parse_args=argv), run, show)  # type: ignore[call-arg]
