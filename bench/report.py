"""Turn measured phases into the result document, check targets, print and write it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import machine
from bench.cpu_usage import CLIENT
from bench.load import LoadResult
from bench.settings import CommandSettings
from bench.stats import Interval, percentile, percentile_interval, rate_interval, rate_ratio_interval, rtfx


@dataclass(frozen=True)
class Target:
    key: str
    op: str  # "<=" or ">="
    value: float

    def verdict(self, measured: float | None, interval: Sequence[float] | None = None) -> str | None:
        """"met" only when the whole interval is on the right side, "missed" when all of it
        is on the wrong side, else "undecided"; a figure without interval is judged alone."""
        if measured is None:
            return None
        low, high = (measured, measured) if interval is None else (interval[0], interval[1])
        good = (lambda x: x <= self.value) if self.op == "<=" else (lambda x: x >= self.value)
        if good(low) and good(high):
            return "met"
        if not good(low) and not good(high):
            return "missed"
        return "undecided"

    def met(self, measured: float | None, interval: Sequence[float] | None = None) -> bool | None:
        verdict = self.verdict(measured, interval)
        return None if verdict is None else verdict == "met"

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def check(target: Target, measured: float | None) -> dict[str, Any]:
    """One target judged on a figure without interval, as a section's "targets" entry."""
    met = target.met(measured)
    verdict = None if met is None else "met" if met else "missed"
    return {"target": str(target), "measured": measured, "met": met, "verdict": verdict}


def targets(concurrency: int) -> list[Target]:
    c = concurrency
    return [
        Target(f"gateway_overhead_ratio_c{c}", "<=", 1.05),
        Target(f"batching_gain_c{c}", ">=", 2.0),
        Target("preprocess_rtfx_per_core", ">=", 2000.0),
        Target("long_audio_peak_rss_growth_mb", "<=", 300.0),
    ]


def phase_summary(result: LoadResult) -> dict[str, Any]:
    latencies_ms = [s * 1000 for s in result.latencies_s]
    summary: dict[str, Any] = {
        "concurrency": result.concurrency,
        "requests": result.requests,
        "audio_s": round(result.audio_s, 3),
        "wall_s": round(result.wall_s, 3),
        "rtfx": round(rtfx(result.audio_s, result.wall_s), 3),
        "latency_ms_p50": round(percentile(latencies_ms, 50), 1),
        "latency_ms_p95": round(percentile(latencies_ms, 95), 1),
        "latency_ms_p99": round(percentile(latencies_ms, 99), 1),
        "latency_ms_max": round(max(latencies_ms), 1),
    }
    if result.tokens:
        summary["tokens_per_request"] = round(result.tokens / result.requests, 2)
    return summary


def service_cpu_ms_per_request(cpu_s: Mapping[str, float], requests: int) -> float | None:
    """CPU milliseconds the services (not the load generator) spent per request."""
    if requests <= 0:
        return None
    return round(1000 * sum(v for k, v in cpu_s.items() if k != CLIENT) / requests, 1)


def client_cpu_ms_per_request(cpu_s: Mapping[str, float], requests: int) -> float | None:
    """CPU milliseconds the load generator spent per request (differs by arm: see bench/README.md)."""
    if requests <= 0:
        return None
    return round(1000 * cpu_s.get(CLIENT, 0.0) / requests, 1)


def _rtfx_rounds(runs: Sequence[LoadResult]) -> tuple[list[float], list[float]]:
    return [r.audio_s for r in runs], [r.wall_s for r in runs]


def _latency_rounds_ms(runs: Sequence[LoadResult]) -> list[list[float]]:
    return [[s * 1000 for s in r.latencies_s] for r in runs]


def level_figures(runs: Sequence[LoadResult]) -> dict[str, Any]:
    """RTFx and latency percentiles of one arm at one concurrency, each with its interval."""
    latencies = _latency_rounds_ms(runs)
    return {
        "rtfx": rate_interval(*_rtfx_rounds(runs)).as_dict(),
        **{f"latency_ms_p{q}": percentile_interval(latencies, q).as_dict(1) for q in (50, 95, 99)},
        "rtfx_per_round": [round(rtfx(r.audio_s, r.wall_s), 2) for r in runs],
        "requests": sum(r.requests for r in runs),
    }


def headline(
    concurrency: int,
    gateway_c1: Sequence[LoadResult],
    gateway_cn: Sequence[LoadResult],
    triton_cn: Sequence[LoadResult],
) -> tuple[dict[str, float | None], dict[str, list[float] | None]]:
    """The comparison keys and their 95 % intervals, from rounds of the same sweep.

    Ratios pair round i of one arm with round i of the other (they ran side by side).
    """
    c = concurrency
    keys: dict[str, float | None] = {}
    intervals: dict[str, list[float] | None] = {}

    def put(key: str, interval: Interval, digits: int = 3) -> None:
        keys[key] = round(interval.value, digits)
        bounds = interval.bounds
        intervals[key] = None if bounds is None else [round(b, digits) for b in bounds]

    put("rtfx_gateway_c1", rate_interval(*_rtfx_rounds(gateway_c1)))
    put(f"rtfx_gateway_c{c}", rate_interval(*_rtfx_rounds(gateway_cn)))
    put(f"rtfx_triton_c{c}", rate_interval(*_rtfx_rounds(triton_cn)))
    # Overhead = RTFx(Triton) / RTFx(gateway) at c; gain = RTFx(gateway at c) / RTFx(gateway at 1).
    put(f"gateway_overhead_ratio_c{c}", rate_ratio_interval(_rtfx_rounds(triton_cn), _rtfx_rounds(gateway_cn)))
    put(f"batching_gain_c{c}", rate_ratio_interval(_rtfx_rounds(gateway_cn), _rtfx_rounds(gateway_c1)))
    latencies = _latency_rounds_ms(gateway_cn)
    for q in (50, 95, 99):
        put(f"latency_ms_p{q}_c{c}", percentile_interval(latencies, q), 1)
    return keys, intervals


def check_targets(document: Mapping[str, Any], concurrency: int) -> dict[str, dict[str, Any]]:
    intervals = document.get("intervals", {})
    checks = {}
    for t in targets(concurrency):
        measured, interval = document.get(t.key), intervals.get(t.key)
        verdict = t.verdict(measured, interval)
        if t.key in intervals and interval is None and verdict is not None:
            verdict = "undecided"  # a figure from too few rounds to have an interval
        checks[t.key] = {
            "target": str(t),
            "measured": measured,
            "ci95": interval,
            "verdict": verdict,
            "met": None if verdict is None else verdict == "met",
        }
    return checks


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def table(document: Mapping[str, Any], rows: list[str]) -> str:
    """A markdown table of the given keys, with 95 % intervals and targets where they have one."""
    checks = document.get("targets", {})
    intervals = document.get("intervals", {})
    lines = ["| metric | value | 95 % interval | target |", "|---|---|---|---|"]
    for key in rows:
        check = checks.get(key)
        verdict = ""
        if check is not None:
            state = check.get("verdict") or "n/a"
            verdict = f"{check['target']} ({state.upper() if state == 'missed' else state})"
        interval = intervals.get(key)
        shown = "" if interval is None else f"{_cell(interval[0])} - {_cell(interval[1])}"
        lines.append(f"| `{key}` | {_cell(document.get(key))} | {shown} | {verdict} |")
    return "\n".join(lines)


def dated_name(now: dt.datetime, on_gpu: bool) -> str:
    return f"{'gpu' if on_gpu else 'cpu'}-{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    partial.replace(path)


def write(document: Mapping[str, Any], results_dir: Path, dated: str) -> tuple[Path, Path]:
    latest, copy = results_dir / "latest.json", results_dir / dated
    for path in (latest, copy):
        _write_json(path, document)
    return latest, copy


# Where and when a section was measured: sections of one latest.json may come from different runs.
SECTION_FACTS = ("machine", "cpu_count", "date", "commit")
Settings = TypeVar("Settings", bound=CommandSettings)


def write_section(name: str, section: Mapping[str, Any], results_dir: Path, now: dt.datetime) -> tuple[Path, Path]:
    """`section` into latest.json under `name`, the rest of the document kept (a new one starts with
    the machine's facts), stamped with SECTION_FACTS; plus a dated `{name}-*.json` copy."""
    facts = machine.describe(now)
    latest = results_dir / "latest.json"
    document: dict[str, Any] = json.loads(latest.read_text()) if latest.exists() else facts
    document[name] = {**section, **{key: facts[key] for key in SECTION_FACTS}}
    return write(document, results_dir, f"{name}-{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json")


def write_run(document: Mapping[str, Any], results_dir: Path, dated: str) -> tuple[Path, Path]:
    """A full run's `document` as latest.json, keeping the sections other commands wrote there
    (`write_section`: realtime, cues, wer, soak) that the run does not measure itself; the dated
    copy holds the run alone."""
    latest = results_dir / "latest.json"
    previous: dict[str, Any] = json.loads(latest.read_text()) if latest.exists() else {}
    sections = {
        name: value
        for name, value in previous.items()
        if name not in document and isinstance(value, dict) and all(key in value for key in SECTION_FACTS)
    }
    _write_json(latest, {**document, **sections})
    _write_json(results_dir / dated, document)
    return latest, results_dir / dated


def run_section(
    name: str,
    settings: Settings,
    run: Callable[[Settings], dict[str, Any]],
    show: Callable[[dict[str, Any], Settings], None],
) -> int:
    """A command's `main`: `run` it, write its section (`write_section`), `show` it; the exit status
    (2, after saying why, when there is no model repository to serve)."""
    if problem := settings.missing_repository():
        print(problem)
        return 2
    now = dt.datetime.now(dt.timezone.utc)
    section = run(settings)
    latest, copy = write_section(name, section, settings.results_dir, now)
    show(section, settings)
    print(f"\nwritten: {latest} (section \"{name}\") and {copy}")
    return 0
