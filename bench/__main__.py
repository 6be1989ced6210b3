"""`python -m bench [COMMAND] [--help]`: the benchmarks.

Without a command: the full run (preprocessing, load sweep, long audio), table, JSON and
plot under bench/results/. Other commands are registered in `COMMANDS`: a name, a one-line
summary and the module whose `main(argv) -> exit status` runs it; add one line there for a new
benchmark.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    summary: str
    module: str  # imported only when run: each command pulls in only what it needs

    def main(self, argv: list[str]) -> int:
        return int(importlib.import_module(self.module).main(argv))


COMMANDS: dict[str, Command] = {
    "run": Command("the full benchmark (default)", "bench.runner"),
    "preprocess": Command("only the preprocessing rounds (decode + resample + log-mel per format)", "bench.preprocess"),
    "soak": Command("gateway RSS over thousands of requests in phases: slope per 1,000 requests", "bench.soak"),
    "wer": Command("held-out WER through the gateway: voices, stream vs not, a long recording, segment edges",
                   "bench.wer"),
    "cues": Command("SRT cue timing against known utterance boundaries: edge errors, limits, model calls",
                    "bench.cues"),
    "realtime": Command("live-caption sessions over /v1/realtime: turn -> transcript p95 by session count, "
                        "a long session's gateway RSS", "bench.realtime"),
    "gpu": Command("real-size random model on one GPU in one call: RTFx, latency, batches, profile", "bench.gpu"),
    "gpu-payload": Command("wheels, tritonserver and corpus for `bench gpu` on a machine without PyPI",
                           "bench.gpu_payload"),
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
