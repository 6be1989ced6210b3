"""Constraints for installing our packages on top of NVIDIA's Triton image.

The base image ships torch, tensorrt, tensorrt_llm, transformers... built for each
other; our constraints.txt pins the CPU development stack. Inside the image the
base image's installed versions must win (replacing torch would break
TensorRT-LLM), and every other package keeps our pin.

Usage: python3 pin_overlay.py constraints.txt > overlay.txt
Standard library only: it runs in the base image before anything is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# PEP 440 public version with an optional local part (2.8.0a0+5228986c39.nv25.6);
# anything else would make pip reject the whole constraints file.
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")


def normalize(name: str) -> str:
    """PEP 503 name normalization (Torch_Vision -> torch-vision)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """Every distribution importable by this interpreter, by normalized name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and _VERSION.match(dist.version):
            found.setdefault(normalize(name), dist.version)
    return found


def overlay(constraint_lines: Iterable[str], base: Mapping[str, str]) -> list[str]:
    """Base pins for what the image has, then our pins for everything else."""
    lines = [f"{name}=={version}" for name, version in sorted(base.items())]
    for raw in constraint_lines:
        line = raw.split("#", 1)[0].strip()
        match = _NAME.match(line)
        if not line or line.startswith("-") or match is None:
            continue
        if normalize(match.group(1)) not in base:
            lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        print("\n".join(overlay(handle, installed_versions())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
