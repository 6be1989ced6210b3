"""`python -m export trtllm`: the Qwen3 folders -> TensorRT-LLM checkpoints -> engines.

The two standard TensorRT-LLM steps, nothing custom:
1. checkpoint conversion for Qwen (`QWenForCausalLM.from_hugging_face` +
   `save_checkpoint`, what examples/models/core/qwen/convert_checkpoint.py
   runs), one GPU, no tensor parallelism;
2. `trtllm-build` with paged KV cache, packed (padding-free) input and the
   gemm / gpt-attention plugins in the model dtype.

Two engines, one per Qwen3 folder of `export build`:
- `trtllm_asr` from `llm_asr` (LoRA folded): ASR with the audio embeddings fed
  through the prompt table, `max_prompt_embedding_table_size` = max batch x
  500 audio embeddings, `max_input_len` = the ASR prompt with 500 embeddings;
- `trtllm_base` from `llm_base`: LLM mode (text chat), no prompt table.

The dtype defaults to the checkpoint's own (`--dtype auto`: its config.json
`torch_dtype`, bfloat16 for Canary-Qwen's Qwen3; bfloat16 when the checkpoint
is float32). TensorRT-LLM wants the prompt table in the engine's dtype, so the
repository fill reads the built engine's dtype back (`engine_dtype`, from the
engine folder's config.json) and gives it to the prompt builder and the llm
configs: one source, end to end. Needs NVIDIA's container (export.ngc) with a
CUDA GPU; elsewhere it stops at once with one line naming what is missing,
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from canary_qwen.manifest import Manifest
from export.gpu_requirements import (
    EXIT_MISSING,
    MissingRequirement,
    require_cuda_gpu,
    require_executable,
    require_module,
)

STEP = "trtllm"
ASR, BASE = "asr", "base"
ENGINE_DIRS = {ASR: "trtllm_asr", BASE: "trtllm_base"}
DTYPES = ("auto", "float16", "bfloat16")
# Engine dtype -> Triton data type of its prompt_embedding_table (the table must match the engine).
PROMPT_TABLE_TYPES = {"float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float32": "TYPE_FP32"}


def checkpoint_dtype(hf_dir: Path) -> str:
    """`auto`: the Hugging Face folder's torch_dtype when TensorRT-LLM builds it, else bfloat16."""
    config = json.loads((hf_dir / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype")
    return dtype if dtype in ("float16", "bfloat16") else "bfloat16"


def engine_dtype(engine_dir: Path) -> str:
    """The dtype a built engine folder declares: config.json `pretrained_config.dtype` (what
    `trtllm-build` writes, tensorrt_llm/builder.py Engine.save)."""
    path = engine_dir / "config.json"
    try:
        dtype = json.loads(path.read_text())["pretrained_config"]["dtype"]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: no pretrained_config.dtype ({exc})") from None
    if dtype not in PROMPT_TABLE_TYPES:
        raise ValueError(f"{path}: engine dtype {dtype!r}, expected one of {sorted(PROMPT_TABLE_TYPES)}")
    return str(dtype)


@dataclass(frozen=True)
class EngineLimits:
    max_batch: int = 64  # the gpu tier's llm max_batch_size
    max_new_tokens: int = 1024  # the repository's max_new_tokens_limit
    chat_max_input_len: int = 4096  # the repository's max_prompt_tokens (LLM mode)


@dataclass(frozen=True)
class EngineJob:
    name: str
    hf_dir: Path
    engine_dir: Path
    max_batch: int
    max_input_len: int
    max_seq_len: int
    prompt_table_size: int  # 0: no prompt table


def engine_jobs(
    manifest: Manifest, artifacts: Path, out: Path, limits: EngineLimits, models: Iterable[str]
) -> list[EngineJob]:
    """The engines to build and their sizes, from the manifest (pure)."""
    jobs = []
    for name in models:
        if name == ASR:
            # The ASR prompt: its text tokens plus one fake id per audio embedding.
            max_input_len = manifest.max_prompt_tokens
            table = limits.max_batch * manifest.max_audio_embeddings
            hf_dir = artifacts / manifest.files.llm_asr
        else:
            max_input_len, table = limits.chat_max_input_len, 0
            hf_dir = artifacts / manifest.files.llm_base
        jobs.append(
            EngineJob(
                name=name,
                hf_dir=hf_dir,
                engine_dir=out / ENGINE_DIRS[name],
                max_batch=limits.max_batch,
                max_input_len=max_input_len,
                max_seq_len=max_input_len + limits.max_new_tokens,
                prompt_table_size=table,
            )
        )
    return jobs


def build_command(job: EngineJob, checkpoint_dir: Path, dtype: str, executable: str = "trtllm-build") -> list[str]:
    """The `trtllm-build` command line of one engine (pure)."""
    command = [
        executable,
        f"--checkpoint_dir={checkpoint_dir}",
        f"--output_dir={job.engine_dir}",
        f"--max_batch_size={job.max_batch}",
        f"--max_input_len={job.max_input_len}",
        f"--max_seq_len={job.max_seq_len}",
        f"--gemm_plugin={dtype}",
        f"--gpt_attention_plugin={dtype}",
        "--paged_kv_cache=enable",
        "--remove_input_padding=enable",
        "--context_fmha=enable",
    ]
    if job.prompt_table_size:
        command.append(f"--max_prompt_embedding_table_size={job.prompt_table_size}")
    return command


# ---- TensorRT-LLM glue (runs only inside the NGC container) ---------------------------------


def convert_checkpoint(hf_dir: Path, checkpoint_dir: Path, dtype: str) -> None:
    """Hugging Face Qwen3 folder -> TensorRT-LLM checkpoint (single GPU)."""
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models import QWenForCausalLM

    model = QWenForCausalLM.from_hugging_face(str(hf_dir), dtype, mapping=Mapping(world_size=1, rank=0, tp_size=1, pp_size=1))
    model.save_checkpoint(str(checkpoint_dir), save_config=True)


def build_engine(job: EngineJob, dtype: str, executable: str, work_dir: Path) -> None:
    dtype = checkpoint_dtype(job.hf_dir) if dtype == "auto" else dtype
    with tempfile.TemporaryDirectory(prefix=f"{job.name}-checkpoint-", dir=work_dir) as checkpoint:
        print(f"export trtllm: converting {job.hf_dir} ({dtype})", flush=True)
        convert_checkpoint(job.hf_dir, Path(checkpoint), dtype)
        command = build_command(job, Path(checkpoint), dtype, executable)
        print("export trtllm: " + " ".join(command), flush=True)
        if job.engine_dir.exists():
            shutil.rmtree(job.engine_dir)
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command)
    built = engine_dtype(job.engine_dir)
    if built != dtype:
        raise ValueError(f"{job.engine_dir} declares dtype {built}, built as {dtype}")
    print(f"export trtllm: wrote {job.engine_dir} ({built})", flush=True)


# ---- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EngineLimits()
    parser.add_argument("--artifacts", type=Path, required=True, help="export build output (manifest, llm_asr/, llm_base/)")
    parser.add_argument("--out", type=Path, default=None, help="where trtllm_asr/ and trtllm_base/ go (default: --artifacts)")
    parser.add_argument("--models", nargs="+", choices=(ASR, BASE), default=[ASR, BASE])
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="engine dtype (auto: the checkpoint's); the repository fill reads it back")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--chat-max-input-len", type=int, default=defaults.chat_max_input_len,
                        help="longest text prompt of LLM mode, in tokens")


def _load_manifest(args: argparse.Namespace) -> Manifest:
    manifest_path = args.artifacts / "manifest.json"
    if not manifest_path.is_file():
        raise MissingRequirement(f"export {STEP}: {manifest_path} not found (run `python -m export build` first)")
    manifest = Manifest.load(manifest_path)
    for name in args.models:
        folder = args.artifacts / (manifest.files.llm_asr if name == ASR else manifest.files.llm_base)
        if not (folder / "config.json").is_file():
            raise MissingRequirement(f"export {STEP}: {folder}/config.json not found")
    return manifest


def run(args: argparse.Namespace) -> int:
    try:
        manifest = _load_manifest(args)
        for value, flag in ((args.max_batch, "--max-batch"), (args.max_new_tokens, "--max-new-tokens"),
                            (args.chat_max_input_len, "--chat-max-input-len")):
            if value < 1:
                raise MissingRequirement(f"export {STEP}: {flag} must be positive, got {value}")
        require_module(STEP, "tensorrt_llm")
        executable = require_executable(STEP, "trtllm-build")
        require_cuda_gpu(STEP)
    except MissingRequirement as exc:
        print(exc, file=sys.stderr)
        return EXIT_MISSING

    out: Path = args.out or args.artifacts
    out.mkdir(parents=True, exist_ok=True)
    limits = EngineLimits(args.max_batch, args.max_new_tokens, args.chat_max_input_len)
    try:
        for job in engine_jobs(manifest, args.artifacts, out, limits, args.models):
            build_engine(job, args.dtype, executable, out)
    except subprocess.CalledProcessError as exc:
        print(f"export {STEP}: trtllm-build failed with exit code {exc.returncode} (its log is above)", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"export {STEP}: {exc}", file=sys.stderr)
        return 1
    return 0
