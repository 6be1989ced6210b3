"""Turn measured phases into the result document, check targets, print and write it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import LoadResult
from bench.stats import percentile, ratio, rtfx


@dataclass(frozen=True)
class Target:
    key: str
    op: str  # "<=" or ">="
    value: float

    def met(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


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
    return round(1000 * sum(v for k, v in cpu_s.items() if k != "bench client") / requests, 1)


def headline(
    concurrency: int,
    gateway_c1: LoadResult,
    gateway_cn: LoadResult,
    triton_cn: LoadResult,
) -> dict[str, float | None]:
    """The comparison keys, all from phases of the same run."""
    c = concurrency
    rtfx_c1 = rtfx(gateway_c1.audio_s, gateway_c1.wall_s)
    rtfx_gw = rtfx(gateway_cn.audio_s, gateway_cn.wall_s)
    rtfx_tr = rtfx(triton_cn.audio_s, triton_cn.wall_s)
    latencies_ms = [s * 1000 for s in gateway_cn.latencies_s]
    gain = ratio(rtfx_gw, rtfx_c1)
    overhead = ratio(rtfx_tr, rtfx_gw)
    return {
        "rtfx_gateway_c1": round(rtfx_c1, 3),
        f"rtfx_gateway_c{c}": round(rtfx_gw, 3),
        f"rtfx_triton_c{c}": round(rtfx_tr, 3),
        f"gateway_overhead_ratio_c{c}": None if overhead is None else round(overhead, 3),
        f"latency_ms_p50_c{c}": round(percentile(latencies_ms, 50), 1),
        f"latency_ms_p95_c{c}": round(percentile(latencies_ms, 95), 1),
        f"latency_ms_p99_c{c}": round(percentile(latencies_ms, 99), 1),
        f"batching_gain_c{c}": None if gain is None else round(gain, 3),
    }


def check_targets(document: Mapping[str, Any], concurrency: int) -> dict[str, dict[str, Any]]:
    return {
        t.key: {"target": str(t), "measured": document.get(t.key), "met": t.met(document.get(t.key))}
        for t in targets(concurrency)
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def table(document: Mapping[str, Any], rows: list[str]) -> str:
    """A markdown table of the given keys, with their targets where they have one."""
    checks = document.get("targets", {})
    lines = ["| metric | value | target |", "|---|---|---|"]
    for key in rows:
        check = checks.get(key)
        verdict = ""
        if check is not None:
            verdict = f"{check['target']} ({'met' if check['met'] else 'MISSED' if check['met'] is False else 'n/a'})"
        lines.append(f"| `{key}` | {_cell(document.get(key))} | {verdict} |")
    return "\n".join(lines)


def dated_name(now: dt.datetime, on_gpu: bool) -> str:
    return f"{'gpu' if on_gpu else 'cpu'}-{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"


def write(document: Mapping[str, Any], results_dir: Path, dated: str) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    latest = results_dir / "latest.json"
    copy = results_dir / dated
    for path in (latest, copy):
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text)
        partial.replace(path)
    return latest, copy
