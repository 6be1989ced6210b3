"""`python -m bench [COMMAND] [--help]`: the benchmarks.

Without a command: the full run (preprocessing, load sweep, long audio), table, JSON and
plot under bench/results/. Other commands are registered in `COMMANDS`: a name, a one-line
summary and a `main(argv) -> exit status`; add one line there for a new benchmark.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    summary: str
    main: Callable[[list[str]], int]


def _full_run(argv: list[str]) -> int:
    from bench.runner import main

    return main(argv)


def _preprocess(argv: list[str]) -> int:
    from bench.preprocess import main

    return main(argv)


def _soak(argv: list[str]) -> int:
    from bench.soak import main

    return main(argv)


def _realtime(argv: list[str]) -> int:
    from bench.realtime import main

    return main(argv)


def _gpu(argv: list[str]) -> int:
    from bench.gpu import main

    return main(argv)


def _gpu_payload(argv: list[str]) -> int:
    from bench.gpu_payload import main

    return main(argv)


def _wer(argv: list[str]) -> int:
    from bench.wer import main

    return main(argv)


def _cues(argv: list[str]) -> int:
    from bench.cues import main

    return main(argv)


# Imported lazily: each command pulls in only what it needs.
COMMANDS: dict[str, Command] = {
    "run": Command("the full benchmark (default)", _full_run),
    "preprocess": Command("only the preprocessing rounds (decode + resample + log-mel per format)", _preprocess),
    "soak": Command("gateway RSS over thousands of requests in phases: slope per 1,000 requests", _soak),
    "wer": Command("held-out WER through the gateway: voices, stream vs not, a long recording, segment edges", _wer),
    "cues": Command("SRT cue timing against known utterance boundaries: edge errors, limits, model calls", _cues),
    "realtime": Command("live-caption sessions over /v1/realtime: turn -> transcript p95 by session count, "
                        "a long session's gateway RSS", _realtime),
    "gpu": Command("real-size random model on one GPU in one call: RTFx, latency, batches, profile", _gpu),
    "gpu-payload": Command("wheels, tritonserver and corpus for `bench gpu` on a machine without PyPI", _gpu_payload),
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the phases
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]].main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print("usage: python -m bench [COMMAND] [options]\n\ncommands:")
        for name, command in COMMANDS.items():
            print(f"  {name:<10} {command.summary}")
        print("\n`python -m bench COMMAND --help` lists a command's options.\n")
    return COMMANDS["run"].main(args)


if __name__ == "__main__":
    sys.exit(main())
