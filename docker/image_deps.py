"""What the Triton image installs on top of NVIDIA's tritonserver trtllm image.

    python3 image_deps.py requirements pyproject.toml > requirements.txt
    python3 image_deps.py constraints constraints.txt > overlay.txt

requirements: our core dependencies plus the `serve` and `export` extras, minus what
the base image provides built for its own CUDA and TensorRT-LLM (torch; and
tritonserver, which the `nvidia-pytriton` wheel only carries for CPU development).

constraints: the base image's installed versions win (replacing its torch would
break TensorRT-LLM), and every other package keeps our pin from constraints.txt.

Standard library only: it runs in the base image before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from importlib import metadata

EXTRAS = ("serve", "export")
PROVIDED_BY_BASE_IMAGE = frozenset({"torch", "nvidia-pytriton"})

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# PEP 440 public version with an optional local part (2.8.0a0+5228986c39.nv25.6);
# anything else would make pip reject the whole constraints file.
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")


def normalize(name: str) -> str:
    """PEP 503 name normalization (Torch_Vision -> torch-vision)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    match = _NAME.match(requirement)
    return normalize(match.group(1)) if match else None


def requirements(pyproject: Mapping[str, object]) -> list[str]:
    """Core dependencies + EXTRAS, without what the base image provides, first occurrence wins."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    chosen = list(project["dependencies"])
    for extra in EXTRAS:
        chosen += project["optional-dependencies"][extra]
    result: list[str] = []
    seen: set[str] = set()
    for requirement in chosen:
        name = requirement_name(requirement)
        if name is None or name in PROVIDED_BY_BASE_IMAGE or name in seen:
            continue
        seen.add(name)
        result.append(requirement)
    return result


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
        name = requirement_name(line)
        if not line or line.startswith("-") or name is None:
            continue
        if name not in base:
            lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"requirements", "constraints"}:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "requirements":
        with open(argv[2], "rb") as handle:
            print("\n".join(requirements(tomllib.load(handle))))
    else:
        with open(argv[2], encoding="utf-8") as handle:
            print("\n".join(overlay(handle, installed_versions())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
