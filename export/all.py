"""`python -m export all --out DIR`: the embedded model end to end.

    DIR/checkpoint/        the trained demo checkpoint in the hub layout (export/demo.py) when one
                           is shipped under export/demo/, else (or with `--random`) the seeded
                           random tiny one (`export tiny`)
    DIR/artifacts/         its export (`export build`)
    DIR/model_repository/  the filled cpu-tier Triton repository, then `.complete`
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from export.build import build_artifacts
from export.demo import DEMO_PIECE_PAUSE_S, DEMO_RECORD, DemoWeightsError, build_demo
from export.tiny import build_tiny

COMPLETE_MARKER = ".complete"
CHECKPOINT = "checkpoint"
ARTIFACTS = "artifacts"
REPOSITORY = "model_repository"


def build_all(out: Path, seed: int = 0, random: bool = False) -> Path:
    """Build everything under `out`; returns the repository directory (marked complete)."""
    out.mkdir(parents=True, exist_ok=True)
    repository = out / REPOSITORY
    (repository / COMPLETE_MARKER).unlink(missing_ok=True)
    # These three are build outputs owned by this command: start each from empty.
    for name in (CHECKPOINT, ARTIFACTS, REPOSITORY):
        shutil.rmtree(out / name, ignore_errors=True)
    steps_started = time.monotonic()
    # No trained demo model has been shipped yet (export/demo/ holds none): until one is,
    # the embedded model is the seeded random one.
    piece_pause_s: float | None = None  # the random model: the real one's cutting
    if random or not DEMO_RECORD.exists():
        build_tiny(out / CHECKPOINT, seed=seed)
    else:
        build_demo(out / CHECKPOINT)
        piece_pause_s = DEMO_PIECE_PAUSE_S
    print(f"[export all] checkpoint: {time.monotonic() - steps_started:.1f}s", file=sys.stderr)
    build_artifacts(out / CHECKPOINT, out / ARTIFACTS, piece_pause_s=piece_pause_s)
    print(f"[export all] artifacts: {time.monotonic() - steps_started:.1f}s", file=sys.stderr)
    fill = _fill_repository()
    fill(out / ARTIFACTS, "cpu", repository)
    print(f"[export all] repository: {time.monotonic() - steps_started:.1f}s", file=sys.stderr)
    (repository / COMPLETE_MARKER).touch()
    return repository


class MissingStep(RuntimeError):
    pass


def _fill_repository() -> Callable[..., object]:
    try:
        from export.repository import fill_repository
    except ImportError as exc:
        raise MissingStep(
            "export all: cannot fill the model repository: export.repository.fill_repository "
            f"is not available ({exc}); checkpoint and artifacts were built"
        ) from exc
    return fill_repository


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for checkpoint/, artifacts/, model_repository/")
    parser.add_argument(
        "--random", action="store_true", help="the random tiny checkpoint instead of the trained demo model"
    )
    parser.add_argument("--seed", type=int, default=0, help="random tiny checkpoint seed (default 0, with --random)")


def run(args: argparse.Namespace) -> int:
    try:
        repository = build_all(args.out, args.seed, random=args.random)
    except (MissingStep, DemoWeightsError) as exc:
        print(exc, file=sys.stderr)
        return 3
    print(f"model repository ready at {repository}")
    return 0
