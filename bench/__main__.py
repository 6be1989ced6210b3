"""`python -m bench [--help]`: run the benchmarks, print the table, write bench/results/."""

from __future__ import annotations

import logging
import sys

from bench.report import table
from bench.runner import headline_keys, run, save
from bench.settings import BenchSettings


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the phases
    settings = BenchSettings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    if not settings.repository_dir.is_dir():
        print(f"no model repository at {settings.repository_dir}: run `make model` first", file=sys.stderr)
        return 2
    document = run(settings)
    latest, copy = save(document, settings)
    print(table(document, headline_keys(settings.concurrency)))
    print(f"\nwritten: {latest} and {copy}")
    missed = [key for key, check in document["targets"].items() if check["met"] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
