"""The sweep as a picture: RTFx and latency against concurrency, both arms, 95 % intervals."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

_LABELS = {"gateway": "gateway (HTTP, OpenAI API)", "triton": "Triton direct (gRPC ensemble)"}
_COLOURS = {"gateway": "tab:blue", "triton": "tab:orange"}


def _series(levels: Mapping[str, Any], key: str) -> tuple[list[int], list[float], list[list[float]]]:
    xs = sorted(int(level) for level in levels)
    values = [float(levels[str(x)][key]["value"]) for x in xs]
    bounds = [levels[str(x)][key]["ci95"] or [v, v] for x, v in zip(xs, values)]  # none from < 3 rounds
    low = [max(0.0, v - float(b[0])) for b, v in zip(bounds, values)]
    high = [max(0.0, float(b[1]) - v) for b, v in zip(bounds, values)]
    return xs, values, [low, high]


def write(document: Mapping[str, Any], out_dir: Path, dated: str) -> Path:
    """Write `latest.png` and a dated copy; return the latest."""
    sweep = document["sweep"]
    fig, (ax_rtfx, ax_latency) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for arm, levels in sweep.items():
        xs, values, errors = _series(levels, "rtfx")
        ax_rtfx.errorbar(xs, values, yerr=errors, marker="o", capsize=4, color=_COLOURS.get(arm), label=_LABELS.get(arm, arm))
        for q, style in (("50", "-"), ("95", "--")):
            xs, values, errors = _series(levels, f"latency_ms_p{q}")
            ax_latency.errorbar(
                xs, [v / 1000 for v in values], yerr=[[e / 1000 for e in side] for side in errors],
                marker="o", capsize=4, linestyle=style, color=_COLOURS.get(arm), label=f"{arm} p{q}",
            )  # fmt: skip
    for ax in (ax_rtfx, ax_latency):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(int(level) for level in next(iter(sweep.values()))))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("requests in flight (concurrency)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_rtfx.set_ylabel("RTFx (audio s / wall s)")
    ax_rtfx.set_title("Throughput")
    ax_latency.set_ylabel("request latency (s)")
    ax_latency.set_title("Latency (p50 solid, p95 dashed)")
    commit = str(document.get("commit", ""))[:7]
    fig.suptitle(
        f"{document.get('date', '')}, commit {commit}, {document.get('cpu_count')} CPUs; "
        f"error bars: 95 % bootstrap intervals over {document.get('setup', {}).get('rounds')} rounds",
        fontsize=9,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = out_dir / "latest.png"
    for path in (out_dir / dated, latest):
        partial = path.with_name(f".{path.name}.partial.png")
        fig.savefig(partial, dpi=110)
        partial.replace(path)
    plt.close(fig)
    return latest
