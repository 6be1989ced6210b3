"""`python -m bench.traced_gateway SNAPSHOT_DIR`: `python -m gateway` that can trace its heap.

For the soak: SIGUSR2 starts tracemalloc (one frame), SIGUSR1 writes a snapshot (after a
full garbage collection) to SNAPSHOT_DIR/snapshot-N.pickle (N counts from 0). Until SIGUSR2 nothing is traced, so
the gateway runs at full speed and its RSS carries no tracing overhead.
"""

from __future__ import annotations

import gc
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

TRACE_FRAMES = 1  # top growers group by the allocating line: one frame, and tracing costs ~2x, not ~5x


def install(out_dir: Path) -> None:
    taken = 0

    def start(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        if not tracemalloc.is_tracing():
            return
        partial = out_dir / f".snapshot-{taken}.partial"
        # Unreachable cycles (a finished request's frames) wait for a full collection at
        # idle: collect them first, so the snapshot holds only what is really kept.
        gc.collect()
        tracemalloc.take_snapshot().dump(str(partial))
        partial.replace(out_dir / f"snapshot-{taken}.pickle")
        taken += 1

    signal.signal(signal.SIGUSR2, start)
    signal.signal(signal.SIGUSR1, dump)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.traced_gateway SNAPSHOT_DIR")
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    install(out_dir)
    del sys.argv[1:]
    from gateway.__main__ import main as gateway_main

    gateway_main()


if __name__ == "__main__":
    main()
