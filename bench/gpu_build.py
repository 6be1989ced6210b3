"""The GPU benchmark's model, built on the GPU machine itself: no NeMo, no internet, no TensorRT.

    checkpoint/        random bf16 checkpoint of a preset (export/direct_checkpoint.py)
    artifacts/         what `export build` writes, except that the encoder and adapter are their
                       plain-PyTorch weight files (canary_qwen/fastconformer.py) instead of ONNX
                       graphs: exporting those needs NeMo, which the GPU machine lacks
    model_repository/  the cpu-tier repository (`export repository`), its LLMs, encoder and adapter
                       in PyTorch on `device` (config parameters; the instances stay KIND_CPU)
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from canary_qwen.checkpoint import load_checkpoint
from canary_qwen.fastconformer import ADAPTER_FILE, ENCODER_FILE, save_torch_artifacts
from canary_qwen.manifest import MANIFEST_FILE, SERVED_MODEL_ID, ArtifactFiles, Manifest
from canary_qwen.prompt import asr_prompt_ids
from canary_qwen.serving.torch_runner import RUNTIME, TORCH_DEVICE, TORCH_DTYPE, TORCH_FILE, TORCH_RUNTIME
from export.build import load_tokenizer, make_manifest, write_mel
from export.direct_checkpoint import write_checkpoint
from export.llm_folders import write_llm_folder
from export.repository import fill_repository
from export.tiny import PRESETS

CHECKPOINT, ARTIFACTS, REPOSITORY = "checkpoint", "artifacts", "model_repository"
# The python models whose runtime switches to torch, and the config parameter naming their ONNX file.
TORCH_MODELS = {"encoder": ENCODER_FILE, "adapter": ADAPTER_FILE}
LLM_MODELS = ("llm", "llm_stream", "llm_base")  # the cpu tier's PyTorch LLMs (model_repository/llm)
_ONNX_FILE = re.compile(r'parameters\s*\{\s*key:\s*"onnx_file"\s*value\s*\{\s*string_value:\s*"([^"]+)"\s*\}\s*\}')


@dataclass(frozen=True)
class BuiltModel:
    checkpoint: Path
    artifacts: Path
    repository: Path
    seconds: dict[str, float]  # step -> wall seconds


def build_torch_artifacts(checkpoint_dir: Path, out: Path, model_id: str = SERVED_MODEL_ID) -> Manifest:
    """export/build.py's artifacts without NeMo: mel, torch encoder/adapter, both Qwen3 folders,
    then manifest.json (last: it marks a finished build), naming the torch files."""
    checkpoint = load_checkpoint(checkpoint_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    files = ArtifactFiles(encoder=ENCODER_FILE, adapter=ADAPTER_FILE)
    tokenizer = load_tokenizer(checkpoint.directory)
    write_mel(checkpoint, out / files.mel)
    save_torch_artifacts(checkpoint, out)
    for folder, fold in ((files.llm_asr, True), (files.llm_base, False)):
        write_llm_folder(checkpoint, out / folder, fold_lora=fold)
        tokenizer.save_pretrained(str(out / folder))
    manifest = make_manifest(checkpoint, asr_prompt_ids(tokenizer), model_id).model_copy(update={"files": files})
    manifest.save(out)
    return manifest


def _append_parameters(config_path: Path, params: dict[str, str]) -> None:
    lines = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    config = config_path.read_text()
    config_path.write_text(config.rstrip("\n") + "\n# bench/gpu_build.py: plain PyTorch on the device\n" + lines)


def use_torch_runtime(repository: Path, device: str, dtype: str) -> None:
    """Switch the filled encoder and adapter to the torch runtime on `device`: the artifact the fill
    linked under the config's onnx_file name gets its own name, and the runtime parameters join the
    config. The LLMs (KIND_CPU instances) get the same device: no reliance on Triton's GPU instances."""
    for model in LLM_MODELS:
        if (repository / model).is_dir():
            _append_parameters(repository / model / "config.pbtxt", {TORCH_DEVICE: device})
    for model, torch_file in TORCH_MODELS.items():
        config_path = repository / model / "config.pbtxt"
        config = config_path.read_text()
        match = _ONNX_FILE.search(config)
        if match is None:
            raise ValueError(f"{config_path}: no onnx_file parameter to replace")
        version = repository / model / "1"
        (version / match.group(1)).rename(version / torch_file)
        params = {RUNTIME: TORCH_RUNTIME, TORCH_FILE: torch_file, TORCH_DEVICE: device, TORCH_DTYPE: dtype}
        _append_parameters(config_path, params)


_MAX_BATCH = re.compile(r"^max_batch_size: \d+", re.MULTILINE)
_MAX_QUEUE = re.compile(r"max_queue_size: \d+")
_RUNNING = re.compile(r'(key: "max_running_requests" value \{ string_value: ")\d+(")')


def set_batch_limits(repository: Path, max_batch: int) -> None:
    """The cpu tier's batch limits (16: sized for a few CPU cores) raised to `max_batch` in every
    config: Triton's max_batch_size, the queues (4x), the LLM engine's running sequences."""
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = config_path.read_text()
        config = _MAX_BATCH.sub(f"max_batch_size: {max_batch}", config)
        config = _MAX_QUEUE.sub(f"max_queue_size: {4 * max_batch}", config)
        config = _RUNNING.sub(rf"\g<1>{max_batch}\g<2>", config)
        config_path.write_text(config)


def build_model(
    work_dir: Path,
    preset: str,
    *,
    seed: int = 0,
    device: str = "cuda",
    torch_dtype: str = "bfloat16",
    llm_dtype: str = "bfloat16",
    compute_threads: int = 0,
    max_batch: int = 64,
) -> BuiltModel:
    """Checkpoint, artifacts and repository under `work_dir` (each rebuilt from empty)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = BuiltModel(work_dir / CHECKPOINT, work_dir / ARTIFACTS, work_dir / REPOSITORY, {})
    for path in (paths.checkpoint, paths.artifacts):
        shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    write_checkpoint(paths.checkpoint, PRESETS[preset], seed=seed, device=device)
    paths.seconds["checkpoint"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    build_torch_artifacts(paths.checkpoint, paths.artifacts)
    paths.seconds["artifacts"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    fill_repository(
        paths.artifacts,
        "cpu",
        paths.repository,
        llm_device="cpu",  # KIND_CPU instances; use_torch_runtime gives them `device`
        compute_threads=compute_threads,
        llm_dtype=llm_dtype,
    )
    use_torch_runtime(paths.repository, device, torch_dtype)
    set_batch_limits(paths.repository, max_batch)
    paths.seconds["repository"] = round(time.perf_counter() - started, 2)
    return paths
