"""Keep the README's benchmark table the latest run's: the block between two markers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- bench:latest:begin (written by `make bench`; edit bench/readme.py, not this block) -->"
END = "<!-- bench:latest:end -->"


def caption(document: Mapping[str, Any]) -> str:
    setup = document.get("setup", {})
    dirty = " (with uncommitted changes)" if document.get("commit_dirty") else ""
    return (
        f"Latest run: {document.get('date')}, commit `{str(document.get('commit', ''))[:7]}`{dirty}, "
        f"{document.get('machine')}, {document.get('cpu_count')} CPUs, accelerator {document.get('accelerator')}; "
        f"{setup.get('rounds')} rounds per arm and concurrency {setup.get('levels')}, "
        f"{setup.get('preprocess_rounds')} preprocessing rounds per format; intervals: 95 % bootstrap over "
        f"rounds; a target is met only when its whole interval is on the right side. "
        f"Plot: [bench/results/latest.png](bench/results/latest.png)."
    )


def splice(text: str, block: str) -> str | None:
    """`text` with the marked block replaced by `block`; None when the markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[: start + len(BEGIN)] + "\n" + block.strip() + "\n" + text[end:]


def update(path: Path, table: str, caption_text: str) -> bool:
    """Write the caption and table into `path`'s marked block; False when it has none."""
    text = path.read_text()
    spliced = splice(text, f"{caption_text}\n\n{table}\n\n![RTFx and latency against concurrency](bench/results/latest.png)")
    if spliced is None:
        return False
    if spliced != text:
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(spliced)
        partial.replace(path)
    return True
