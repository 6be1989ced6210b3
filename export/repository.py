"""Fill the Triton model repository templates (model_repository/) from an artifacts directory.

`python -m export repository --artifacts DIR --tier cpu|gpu --out DIR`

Every `config.pbtxt` (or `config.<tier>.pbtxt`) is a `string.Template`; `substitute` fails on any
missing key. Values come from the artifacts' manifest.json and the tier's defaults. Artifacts are
hard-linked (copied across file systems) into the models' version folders, so the filled
repository is self-contained. The fill happens in a scratch folder that replaces `out` at the end,
and `out/.complete` marks a finished fill.

Nothing here branches on a model's name: a template folder declares what it needs beyond its
config in an optional `template.json` (`TemplateNeeds`), and a python-backend config gets the
folder's `1/*.py`, which import shared code from the installed package (`canary_qwen.serving`).
Adding a model is one template folder plus one line in `model_specs`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import string
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from canary_qwen.manifest import Manifest
from export.trtllm import PROMPT_TABLE_TYPES, engine_dtype

TEMPLATES = Path(__file__).resolve().parent.parent / "model_repository"
TEMPLATE_NEEDS = "template.json"
COMPLETE_MARKER = ".complete"
Tier = Literal["cpu", "gpu"]
TIERS: tuple[Tier, ...] = ("cpu", "gpu")
LLM_DTYPES = ("auto", "float32", "bfloat16", "float16")

# gpu-tier artifacts, built on a GPU machine by `export trt` / `export trtllm` (docs/design.md).
ENCODER_PLAN = "encoder.plan"
ADAPTER_PLAN = "adapter.plan"
TRTLLM_ASR = "trtllm_asr"
TRTLLM_BASE = "trtllm_base"
# Only what a tokenizer needs to load, not the LLM weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass(frozen=True)
class TierDefaults:
    max_batch_size: int
    max_queue_delay_us: int
    llm_max_batch_size: int
    preprocessor_instances: int
    prompt_table_dtype: str | None  # None: the ASR engine's dtype (export.trtllm.engine_dtype)


TIER_DEFAULTS: dict[Tier, TierDefaults] = {
    "cpu": TierDefaults(16, 5000, 16, 1, "TYPE_FP32"),
    "gpu": TierDefaults(64, 1000, 64, 2, None),
}


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its template folder (default: its name) and what goes into its version folder."""

    name: str
    template: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    # destination (inside <name>/1/) -> artifact path (relative to the artifacts dir)
    artifacts: Mapping[str, str] = field(default_factory=dict)
    tokenizer_from: str | None = None  # an LLM folder whose tokenizer files go to 1/tokenizer/

    @property
    def template_dir(self) -> Path:
        return TEMPLATES / (self.template or self.name)


def model_specs(manifest: Manifest, tier: Tier, serve_root: Path) -> list[ModelSpec]:
    files = manifest.files
    cpu = tier == "cpu"

    def llm(name: str, decoupled: bool, folder: str, engine: str) -> ModelSpec:
        variables = {"model_name": name, "decoupled": str(decoupled).lower()}
        if cpu:
            return ModelSpec(name, "llm", {**variables, "llm_dir": folder}, {folder: folder})
        engine_dir = serve_root / name / "1" / "engine"
        return ModelSpec(name, "llm", {**variables, "engine_dir": str(engine_dir)}, {"engine": engine})

    # gpu tier: one ASR engine, in `llm_stream` (decoupled); `llm` hands its requests on to it.
    asr = llm("llm", False, files.llm_asr, TRTLLM_ASR) if cpu else (
        ModelSpec("llm", "llm_collect", {"model_name": "llm", "engine_model": "llm_stream"})
    )

    return [
        ModelSpec("preprocessor", artifacts={"mel.safetensors": files.mel, "manifest.json": "manifest.json"}),
        ModelSpec("encoder", artifacts={"encoder.onnx": files.encoder})
        if cpu
        else ModelSpec("encoder", "encoder_trt", artifacts={"model.plan": ENCODER_PLAN}),
        ModelSpec("adapter", artifacts={"adapter.onnx": files.adapter})
        if cpu
        else ModelSpec("adapter", "adapter_trt", artifacts={"model.plan": ADAPTER_PLAN}),
        ModelSpec("prompt_builder"),
        ModelSpec("chat_prompt_builder", tokenizer_from=files.llm_base),
        asr,
        llm("llm_stream", True, files.llm_asr, TRTLLM_ASR),
        llm("llm_base", True, files.llm_base, TRTLLM_BASE),
        ModelSpec("detokenizer", tokenizer_from=files.llm_asr),
        ModelSpec("canary_qwen"),
        ModelSpec("canary_qwen_stream"),
        ModelSpec("canary_qwen_chat"),
    ]


def _prompt_json(manifest: Manifest) -> str:
    ids = manifest.special_ids
    data = {
        "asr_prompt_ids": manifest.asr_prompt_ids,
        "audio_placeholder_id": ids.audio_placeholder,
        "vocab_size": manifest.vocab_size,
        "end_id": ids.end,
        "pad_id": ids.pad,
    }
    return json.dumps(data, indent=2) + "\n"


# Files a template may ask for in its template.json `files`, written into 1/ from the manifest.
GENERATED_FILES: dict[str, Callable[[Manifest], str]] = {"prompt.json": _prompt_json}


@dataclass(frozen=True)
class TemplateNeeds:
    """A template folder's template.json: what its model needs beyond config and code (all optional).

    `files`: names from GENERATED_FILES, written into 1/. `snippets`: template variable -> a pbtxt
    file (relative to model_repository/), itself rendered with the model's values and pasted in.
    `variables`: template values of this folder's own.
    """

    files: tuple[str, ...] = ()
    snippets: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, template_dir: Path) -> TemplateNeeds:
        path = template_dir / TEMPLATE_NEEDS
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        unknown = set(data) - {"files", "snippets", "variables"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        needs = cls(tuple(data.get("files", ())), dict(data.get("snippets", {})), dict(data.get("variables", {})))
        missing = [name for name in needs.files if name not in GENERATED_FILES]
        if missing:
            raise ValueError(f"{path}: no generator for {missing} (export/repository.py GENERATED_FILES)")
        return needs


_PYTHON_BACKEND = re.compile(r'^\s*backend:\s*"python"', re.MULTILINE)


def template_values(
    manifest: Manifest,
    tier: Tier,
    llm_device: str = "cpu",
    compute_threads: int = 1,
    llm_dtype: str = "auto",
    asr_engine_dtype: str | None = None,
) -> dict[str, str]:
    """Values shared by every template of a tier (`llm_device` gpu: the cpu tier's PyTorch LLM on CUDA;
    `asr_engine_dtype`: the gpu tier's built ASR engine's dtype, which its prompt table must have)."""
    defaults = TIER_DEFAULTS[tier]
    table_dtype = defaults.prompt_table_dtype
    if table_dtype is None:
        if asr_engine_dtype is None:
            raise ValueError(f"the {tier} tier's prompt table takes the ASR engine's dtype: pass asr_engine_dtype")
        table_dtype = PROMPT_TABLE_TYPES[asr_engine_dtype]
    values: dict[str, object] = {
        "max_batch_size": defaults.max_batch_size,
        "max_queue_delay_us": defaults.max_queue_delay_us,
        "max_queue_size": 4 * defaults.max_batch_size,
        "llm_max_batch_size": defaults.llm_max_batch_size,
        "preprocessor_instances": defaults.preprocessor_instances,
        "prompt_table_dtype": table_dtype,
        "llm_instance_kind": "KIND_GPU" if llm_device == "gpu" else "KIND_CPU",
        "n_mels": manifest.mel.features,
        "d_enc": manifest.d_enc,
        "d_llm": manifest.d_llm,
        "sample_rate": manifest.sample_rate,
        "max_audio_seconds": f"{manifest.max_audio_seconds:g}",
        "piece_pause_s": "" if manifest.piece_pause_s is None else f"{manifest.piece_pause_s:g}",
        # Both tiers pad a request's mels to its longest; the gpu encoder pads batches to its buckets.
        "mel_bucket_frames": 0,
        # Threads per python model's torch / onnxruntime (0: their default, every core).
        "compute_threads": compute_threads,
        "llm_dtype": llm_dtype,
        # The reference decodes with 128 new tokens; the gateway asks for up to 512.
        "max_new_tokens_limit": 1024,
        "max_prompt_tokens": 4096,
        # Two engines share the GPU: each takes this fraction of the memory free when it loads.
        "kv_cache_free_gpu_mem_fraction": 0.4,
        "gpu_device_ids": "0",
    }
    return {key: str(value) for key, value in values.items()}


def render(template_text: str, values: Mapping[str, str]) -> str:
    """string.Template.substitute: a placeholder without a value is an error, never left behind."""
    try:
        return string.Template(template_text).substitute(values)
    except KeyError as missing:
        raise KeyError(f"template needs a value for {missing}") from None


def config_template(folder: Path, tier: Tier) -> Path:
    tiered = folder / f"config.{tier}.pbtxt"
    return tiered if tiered.is_file() else folder / "config.pbtxt"


def _link_or_copy(source: Path, dest: Path) -> None:
    if not source.exists():
        raise FileNotFoundError(f"missing artifact {source}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for item in sorted(source.rglob("*")):
            if item.is_file():
                _link_or_copy(item, dest / item.relative_to(source))
        return
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, dest)


def _copy_code(template_dir: Path, version_dir: Path) -> None:
    for source in sorted((template_dir / "1").glob("*.py")):
        shutil.copy2(source, version_dir / source.name)


def _check_gpu_artifacts(artifacts_dir: Path) -> None:
    needed = (ENCODER_PLAN, ADAPTER_PLAN, TRTLLM_ASR, TRTLLM_BASE)
    missing = [name for name in needed if not (artifacts_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"the gpu tier needs {', '.join(missing)} in {artifacts_dir}: build them on a GPU machine with "
            "`python -m export trt` and `python -m export trtllm`"
        )


def fill_repository(
    artifacts_dir: Path,
    tier: str,
    out_dir: Path,
    *,
    serve_root: Path | None = None,
    llm_device: str = "cpu",
    compute_threads: int = 1,
    llm_dtype: str = "auto",
) -> None:
    """Write a complete Triton model repository for `tier` into `out_dir` (replacing it).

    `serve_root` is where the repository will sit when served (absolute paths in the gpu tier's
    TensorRT-LLM configs); it defaults to `out_dir`. `llm_device="gpu"` puts the cpu tier's
    PyTorch LLMs on a GPU instance (a GPU machine without TensorRT-LLM). `compute_threads` caps
    each cpu-tier model's torch / onnxruntime threads (0: all cores each; several models sharing
    few cores run much faster with 1 than with spinning thread pools fighting each other).
    `llm_dtype` is the cpu tier's PyTorch dtype: auto (checkpoint dtype on CUDA, float32 on CPU),
    float32, bfloat16 or float16.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    if llm_device not in ("cpu", "gpu"):
        raise ValueError(f"llm_device must be cpu or gpu, got {llm_device!r}")
    if llm_dtype not in LLM_DTYPES:
        raise ValueError(f"llm_dtype must be one of {LLM_DTYPES}, got {llm_dtype!r}")
    artifacts_dir = Path(artifacts_dir).resolve()
    out_dir = Path(out_dir).resolve()
    manifest = Manifest.load(artifacts_dir)
    built_dtype = None
    if tier == "gpu":
        _check_gpu_artifacts(artifacts_dir)
        built_dtype = engine_dtype(artifacts_dir / TRTLLM_ASR)
    root = Path(serve_root).resolve() if serve_root else out_dir
    values = template_values(manifest, tier, llm_device, compute_threads, llm_dtype, built_dtype)  # type: ignore[arg-type]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for spec in model_specs(manifest, tier, root):  # type: ignore[arg-type]
            _fill_model(spec, tier, manifest, artifacts_dir, scratch, values)  # type: ignore[arg-type]
        (scratch / COMPLETE_MARKER).write_text(f"tier={tier}\nartifacts={artifacts_dir}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        scratch.rename(out_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _fill_model(
    spec: ModelSpec, tier: Tier, manifest: Manifest, artifacts_dir: Path, root: Path, values: Mapping[str, str]
) -> None:
    model_dir = root / spec.name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    needs = TemplateNeeds.load(spec.template_dir)
    model_values = {**values, **needs.variables, **spec.variables}
    for key, snippet in needs.snippets.items():
        model_values[key] = render((TEMPLATES / snippet).read_text(), model_values)
    config = render(config_template(spec.template_dir, tier).read_text(), model_values)
    (model_dir / "config.pbtxt").write_text(config)
    if _PYTHON_BACKEND.search(config):
        _copy_code(spec.template_dir, version_dir)
    for dest, source in spec.artifacts.items():
        _link_or_copy(artifacts_dir / source, version_dir / dest)
    if spec.tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            source = artifacts_dir / spec.tokenizer_from / name
            if source.is_file():
                _link_or_copy(source, version_dir / "tokenizer" / name)
    for name in needs.files:
        (version_dir / name).write_text(GENERATED_FILES[name](manifest))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, required=True, help="`export build` output directory")
    parser.add_argument(
        "--tier", choices=TIERS, default="cpu", help="cpu: python + onnxruntime + PyTorch; gpu: TensorRT + TensorRT-LLM"
    )
    parser.add_argument("--out", type=Path, required=True, help="model repository directory to (re)write")
    parser.add_argument(
        "--llm-device", choices=("cpu", "gpu"), default="cpu", help="cpu tier: run the PyTorch LLMs on a GPU instance"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="cpu tier: torch / onnxruntime threads per model (0: all cores)"
    )
    parser.add_argument("--llm-dtype", choices=LLM_DTYPES, default="auto", help="cpu tier: PyTorch dtype of the LLMs")
    parser.add_argument(
        "--serve-root",
        type=Path,
        default=None,
        help="where the repository is mounted when served (gpu tier engine paths; default: --out)",
    )


def run(args: argparse.Namespace) -> int:
    fill_repository(
        args.artifacts,
        args.tier,
        args.out,
        serve_root=args.serve_root,
        llm_device=args.llm_device,
        compute_threads=args.threads,
        llm_dtype=args.llm_dtype,
    )
    print(f"{args.tier}-tier model repository written to {args.out}")
    return 0
