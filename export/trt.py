"""`python -m export trt`: encoder.onnx / adapter.onnx -> encoder.plan / adapter.plan (TensorRT).

Standard TensorRT Python API: Builder, a strongly typed network (every layer's
precision comes from the ONNX graph), OnnxParser, one optimization profile per
length bucket, `build_serialized_network`. Each plan is then checked against
onnxruntime on the same ONNX file, in every profile. `--precision fp16` first
writes an fp16 copy of each graph with norms and softmax kept in fp32
(export.onnx_fp16) and builds from that; inputs and outputs stay FP32
(PLAN_IO_DTYPES, checked on the built engine).

Length buckets (`--bucket-seconds`, default 10 20 40 s = 1000 / 2000 / 4000 mel
frames, 125 / 250 / 500 encoder frames): each profile has a fixed length and a
batch range, so a batch is padded only to the shortest bucket that holds its
longest item (the gpu tier's runner does that, reading the buckets from the
plan's profiles: canary_qwen/serving/plan_buckets.py). A 5 s clip costs the
encoder a 10 s bucket, not 40 s. Fixed lengths per profile are also what TensorRT
needs for the dynamic-length slices in the conformer's subsampling (they built
with a fixed length, docs/design.md).

Needs NVIDIA's container (export.ngc) on a machine with a CUDA GPU; elsewhere it
stops at once with one line naming what is missing and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from canary_qwen.manifest import Manifest
from export.gpu_requirements import (
    EXIT_MISSING,
    MissingRequirement,
    require_cuda_gpu,
    require_module,
)

STEP = "trt"
ENCODER, ADAPTER = "encoder", "adapter"
PLAN_FILES = {ENCODER: "encoder.plan", ADAPTER: "adapter.plan"}
# Data types of each plan's inputs and outputs (what the gpu-tier configs declare; fp16 graphs
# keep FP32 at their edges, export.onnx_fp16). Checked on every built engine.
PLAN_IO_DTYPES = {
    ENCODER: {"MEL": "TYPE_FP32", "MEL_LENGTH": "TYPE_INT32", "ENCODED": "TYPE_FP32", "ENCODED_LENGTH": "TYPE_INT32"},
    ADAPTER: {
        "ENCODED": "TYPE_FP32",
        "ENCODED_LENGTH": "TYPE_INT32",
        "AUDIO_EMBEDS": "TYPE_FP32",
        "AUDIO_EMBEDS_LENGTH": "TYPE_INT32",
    },
}
DEFAULT_BUCKET_SECONDS = (10.0, 20.0, 40.0)
# Default tolerance of the parity check: max |trt - onnxruntime| / max |onnxruntime|.
# fp32 graphs build with TF32 matmuls (TensorRT's default), hence not 1e-6.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2}


class TrtBuildError(RuntimeError):
    """The build or its parity check failed; the message is for the user."""


@dataclass(frozen=True)
class ShapeRange:
    """One input's shapes for a TensorRT optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Dims:
    """Batch range and length buckets shared by both plans (buckets in mel frames, ascending)."""

    min_batch: int
    opt_batch: int
    max_batch: int
    bucket_frames: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        frames = self.bucket_frames
        if not frames or frames[0] < 1 or any(a >= b for a, b in zip(frames, frames[1:])):
            raise ValueError(f"need increasing positive bucket lengths, got {list(frames)}")


@dataclass(frozen=True)
class PlanJob:
    name: str
    onnx: Path
    plan: Path
    profiles: tuple[Mapping[str, ShapeRange], ...]  # one per length bucket, in bucket order


def encoder_frames(mel_frames: int, subsampling_factor: int) -> int:
    """FastConformer dw_striding: each stride-2 conv (kernel 3, pad 1) maps L -> (L - 1) // 2 + 1."""
    frames = mel_frames
    factor = subsampling_factor
    while factor > 1:
        frames = (frames - 1) // 2 + 1
        factor //= 2
    return frames


def bucket_frames(manifest: Manifest, seconds: Iterable[float]) -> tuple[int, ...]:
    """Mel frames of each bucket: the given lengths below the manifest's longest audio, then that."""
    hop_seconds = manifest.max_audio_seconds / manifest.max_mel_frames
    frames = {round(s / hop_seconds) for s in seconds if 0 < s < manifest.max_audio_seconds}
    return tuple(sorted(f for f in frames if 0 < f < manifest.max_mel_frames)) + (manifest.max_mel_frames,)


def profiles(manifest: Manifest, dims: Dims) -> dict[str, list[dict[str, ShapeRange]]]:
    """Optimization profiles of each graph, one per bucket, by input name (docs/design.md tensor names).

    Each profile fixes the length at its bucket and lets the batch range over min..max.
    """
    batch = (dims.min_batch, dims.opt_batch, dims.max_batch)
    out: dict[str, list[dict[str, ShapeRange]]] = {ENCODER: [], ADAPTER: []}
    for mel in dims.bucket_frames:
        enc = encoder_frames(mel, manifest.encoder.subsampling_factor)
        lengths = ShapeRange(*((b,) for b in batch))
        mels = ShapeRange(*((b, manifest.mel.features, mel) for b in batch))
        encoded = ShapeRange(*((b, enc, manifest.d_enc) for b in batch))
        out[ENCODER].append({"MEL": mels, "MEL_LENGTH": lengths})
        out[ADAPTER].append({"ENCODED": encoded, "ENCODED_LENGTH": lengths})
    return out


def plan_jobs(
    manifest: Manifest, artifacts: Path, out: Path, dims: Dims, models: Iterable[str], precision: str
) -> list[PlanJob]:
    """What to build: each model's ONNX source (the fp16 copy for fp16) and plan path."""
    sources = {ENCODER: manifest.files.encoder, ADAPTER: manifest.files.adapter}
    shapes = profiles(manifest, dims)
    jobs = []
    for name in models:
        onnx = artifacts / sources[name]
        if precision == "fp16":
            onnx = out / f"{Path(sources[name]).stem}.fp16.onnx"
        jobs.append(PlanJob(name, onnx, out / PLAN_FILES[name], tuple(shapes[name])))
    return jobs


def parity_cases(profiles: Sequence[Mapping[str, ShapeRange]]) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
    """(profile index, input shapes) to compare at: in every bucket batch 1 and 2 (mixed lengths), and opt."""
    cases: list[tuple[int, dict[str, tuple[int, ...]]]] = []
    for index, profile in enumerate(profiles):
        for batch_pick in ("min", "two", "opt"):
            case = {}
            for name, shape_range in profile.items():
                shape = list(shape_range.max)
                shape[0] = min(2, shape_range.max[0]) if batch_pick == "two" else getattr(shape_range, batch_pick)[0]
                case[name] = tuple(shape)
            if (index, case) not in cases:
                cases.append((index, case))
    return cases


def parity_inputs(case: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random data plus lengths: the first item full length, the others shorter."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    data_name = next(name for name, shape in case.items() if len(shape) == 3)
    batch, frames_axis = case[data_name][0], (2 if data_name == "MEL" else 1)
    frames = case[data_name][frames_axis]
    for name, shape in case.items():
        if name == data_name:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            lengths = [frames] + [max(1, frames * (k + 1) // (batch + 1)) for k in range(batch - 1)]
            inputs[name] = np.array(lengths, dtype=np.int32)
    return inputs


def relative_error(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> float:
    """max |candidate - reference| / max |reference| over the valid frames of each item.

    Outputs come in (data, length) pairs; the lengths must match exactly and
    frames past an item's length are padding, not compared.
    """
    length_names = [name for name in reference if name.endswith("_LENGTH")]
    worst = 0.0
    for length_name in length_names:
        data_name = length_name.removesuffix("_LENGTH")
        ref_len, got_len = reference[length_name], candidate[length_name]
        if not np.array_equal(ref_len, got_len):
            raise TrtBuildError(f"{length_name} differs: onnxruntime {ref_len.tolist()} vs TensorRT {got_len.tolist()}")
        ref, got = reference[data_name], candidate[data_name]
        scale = max(float(np.abs(ref).max()), 1e-12)
        for item, n in enumerate(ref_len.tolist()):
            diff = np.abs(got[item, :n].astype(np.float64) - ref[item, :n])
            if not np.isfinite(diff).all():
                return float("inf")
            worst = max(worst, float(diff.max(initial=0.0)) / scale)
    return worst


# ---- TensorRT glue (runs only inside the NGC container) -------------------------------------


def build_plan(job: PlanJob, workspace_gib: int, tf32: bool) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 10 needs the flag; TensorRT 11 is always strongly typed and drops it.
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(job.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtBuildError(f"TensorRT could not parse {job.onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    for shapes in job.profiles:  # profile k = bucket k: the runner picks profiles by their index
        profile = builder.create_optimization_profile()
        for name, shape_range in shapes.items():
            profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtBuildError(f"TensorRT failed to build {job.plan.name} (see the log above)")
    job.plan.write_bytes(bytes(serialized))
    check_io_dtypes(job)


_TRT_TO_CONFIG = {
    "FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
}  # fmt: skip


def check_io_dtypes(job: PlanJob) -> None:
    """The built engine's input/output dtypes must be PLAN_IO_DTYPES (the configs' dtypes)."""
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(job.plan.read_bytes())
    found = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype = engine.get_tensor_dtype(name)
        found[name] = _TRT_TO_CONFIG.get(dtype.name, dtype.name)
    if found != PLAN_IO_DTYPES[job.name]:
        expected = PLAN_IO_DTYPES[job.name]
        raise TrtBuildError(f"{job.plan.name}: inputs/outputs {found}, the gpu-tier configs expect {expected}")


def run_plan(plan: Path, inputs: Mapping[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
    """One inference of a serialized engine in one of its profiles (device buffers through torch)."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    context.set_optimization_profile_async(profile, stream.cuda_stream)
    buffers: dict[str, torch.Tensor] = {}
    for name, array in inputs.items():
        context.set_input_shape(name, array.shape)
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_tensor_address(name, buffers[name].data_ptr())
    outputs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise TrtBuildError(f"{plan.name}: output {name} has a data-dependent shape {shape}")
        dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
        buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
        outputs.append(name)
    if not context.execute_async_v3(stream.cuda_stream):
        raise TrtBuildError(f"{plan.name}: TensorRT execution failed")
    stream.synchronize()
    return {name: buffers[name].cpu().numpy() for name in outputs}


def run_onnx(onnx: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def check_parity(job: PlanJob, reference_onnx: Path, tolerance: float) -> float:
    worst = 0.0
    for profile, case in parity_cases(job.profiles):
        inputs = parity_inputs(case)
        error = relative_error(run_onnx(reference_onnx, inputs), run_plan(job.plan, inputs, profile))
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
        print(
            f"export trt: {job.plan.name} profile {profile} vs onnxruntime at {shapes}: relative error {error:.2e}",
            flush=True,
        )
        worst = max(worst, error)
    if not worst <= tolerance:
        raise TrtBuildError(
            f"{job.plan.name} differs from onnxruntime by {worst:.2e} (tolerance {tolerance:.0e}); "
            "keep this graph in fp32 or raise --tolerance knowingly"
        )
    return worst


# ---- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, required=True, help="export build output (manifest.json, *.onnx)")
    parser.add_argument("--out", type=Path, default=None, help="where the plans go (default: --artifacts)")
    parser.add_argument("--models", nargs="+", choices=(ENCODER, ADAPTER), default=[ENCODER, ADAPTER])
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: convert the ONNX first, norms/softmax kept fp32 (export.onnx_fp16)")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=64, help="the gpu tier's max_batch_size")
    parser.add_argument("--bucket-seconds", type=float, nargs="+", default=list(DEFAULT_BUCKET_SECONDS),
                        help="length buckets, one optimization profile each (the longest audio is always one)")
    parser.add_argument("--workspace-gib", type=int, default=8)
    parser.add_argument("--no-tf32", action="store_true", help="exact fp32 matmuls (slower)")
    parser.add_argument("--tolerance", type=float, default=None, help="parity: max relative error (default by precision)")
    parser.add_argument("--skip-parity", action="store_true")


def dims_from_args(args: argparse.Namespace, manifest: Manifest) -> Dims:
    return Dims(
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        bucket_frames=bucket_frames(manifest, args.bucket_seconds),
    )


def _load_inputs(args: argparse.Namespace) -> Manifest:
    manifest_path = args.artifacts / "manifest.json"
    if not manifest_path.is_file():
        raise MissingRequirement(f"export {STEP}: {manifest_path} not found (run `python -m export build` first)")
    manifest = Manifest.load(manifest_path)
    for name in args.models:
        onnx = args.artifacts / (manifest.files.encoder if name == ENCODER else manifest.files.adapter)
        if not onnx.is_file():
            raise MissingRequirement(f"export {STEP}: {onnx} not found")
    return manifest


def run(args: argparse.Namespace) -> int:
    try:
        manifest = _load_inputs(args)
        dims = dims_from_args(args, manifest)
        require_module(STEP, "tensorrt")
        require_module(STEP, "onnxruntime")
        if args.precision == "fp16":
            require_module(STEP, "onnxconverter_common")
        if not args.skip_parity:
            require_module(STEP, "torch")
        require_cuda_gpu(STEP)
    except (MissingRequirement, ValueError) as exc:
        print(exc if isinstance(exc, MissingRequirement) else f"export {STEP}: {exc}", file=sys.stderr)
        return EXIT_MISSING

    out: Path = args.out or args.artifacts
    out.mkdir(parents=True, exist_ok=True)
    tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[args.precision]
    try:
        for job in plan_jobs(manifest, args.artifacts, out, dims, args.models, args.precision):
            source = args.artifacts / (manifest.files.encoder if job.name == ENCODER else manifest.files.adapter)
            if args.precision == "fp16":
                from export.onnx_fp16 import convert_to_fp16

                convert_to_fp16(source, job.onnx)
                print(f"export trt: wrote {job.onnx}", flush=True)
            build_plan(job, args.workspace_gib, tf32=not args.no_tf32)
            print(f"export trt: wrote {job.plan}", flush=True)
            if not args.skip_parity:
                # Against the fp32 source: the plan must match the model, not only its fp16 copy.
                check_parity(job, source, tolerance)
    except TrtBuildError as exc:
        print(f"export {STEP}: {exc}", file=sys.stderr)
        return 1
    return 0
