"""`python -m export {tiny,build,repository,trt,trtllm,train,all} ...`: each subcommand lives in its own module
exposing `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "tiny": ("export.tiny", "build the embedded tiny checkpoint in the hub layout"),
    "build": ("export.build", "checkpoint -> artifacts (manifest, mel, encoder/adapter ONNX, Qwen3 folders)"),
    "repository": ("export.repository", "artifacts -> filled Triton model repository (cpu or gpu tier)"),
    "trt": ("export.trt", "encoder/adapter ONNX -> TensorRT plans (needs TensorRT and a GPU)"),
    "trtllm": ("export.trtllm", "Qwen3 folders -> TensorRT-LLM engines (needs TensorRT-LLM and a GPU)"),
    "train": ("export.train.command", "train the demo model on synthetic speech and ship its weights"),
    "all": ("export.all", "tiny -> build -> cpu-tier repository under one directory"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module: they pull in NeMo, TensorRT, etc.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                print(f"export {name}: {module_name} is not available in this checkout", file=sys.stderr)
                return 2
            module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    assert module is not None
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
