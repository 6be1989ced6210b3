"""`python -m export trt`: encoder.onnx / adapter.onnx -> encoder.plan / adapter.plan (TensorRT).

Standard TensorRT Python API: Builder, a strongly typed network (every layer's
precision comes from the ONNX graph), OnnxParser, one optimization profile
over batch and frames, `build_serialized_network`. Each plan is then checked
against onnxruntime on the same ONNX file. `--precision fp16` first writes an
fp16 copy of each graph with norms and softmax kept in fp32 (export.onnx_fp16)
and builds from that.

By default the frame range is fixed at the manifest's longest audio (4000 mel
frames, 500 encoder frames): the gpu tier's preprocessor pads every mel to that
length, which also avoids TensorRT's trouble with the dynamic-length slices in
the conformer's subsampling. `--min-frames/--opt-frames` open the range.

Needs NVIDIA's container (export.ngc) on a machine with a CUDA GPU; elsewhere it
stops at once with one line naming what is missing and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
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
    """Batch and frame ranges shared by both plans (frames in mel frames)."""

    min_batch: int
    opt_batch: int
    max_batch: int
    min_frames: int
    opt_frames: int
    max_frames: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if not 1 <= self.min_frames <= self.opt_frames <= self.max_frames:
            raise ValueError(
                f"need 1 <= min <= opt <= max frames, got {self.min_frames}/{self.opt_frames}/{self.max_frames}"
            )


@dataclass(frozen=True)
class PlanJob:
    name: str
    onnx: Path
    plan: Path
    profile: Mapping[str, ShapeRange]


def encoder_frames(mel_frames: int, subsampling_factor: int) -> int:
    """FastConformer dw_striding: each stride-2 conv (kernel 3, pad 1) maps L -> (L - 1) // 2 + 1."""
    frames = mel_frames
    factor = subsampling_factor
    while factor > 1:
        frames = (frames - 1) // 2 + 1
        factor //= 2
    return frames


def profiles(manifest: Manifest, dims: Dims) -> dict[str, dict[str, ShapeRange]]:
    """Optimization profile of each graph, by input name (docs/design.md tensor names)."""
    batch = (dims.min_batch, dims.opt_batch, dims.max_batch)
    mel = (dims.min_frames, dims.opt_frames, dims.max_frames)
    enc = tuple(encoder_frames(f, manifest.encoder.subsampling_factor) for f in mel)

    def ranges(shape: Any) -> ShapeRange:
        return ShapeRange(*(tuple(shape(i)) for i in range(3)))

    return {
        ENCODER: {
            "MEL": ranges(lambda i: (batch[i], manifest.mel.features, mel[i])),
            "MEL_LENGTH": ranges(lambda i: (batch[i],)),
        },
        ADAPTER: {
            "ENCODED": ranges(lambda i: (batch[i], enc[i], manifest.d_enc)),
            "ENCODED_LENGTH": ranges(lambda i: (batch[i],)),
        },
    }


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
        jobs.append(PlanJob(name, onnx, out / PLAN_FILES[name], shapes[name]))
    return jobs


def parity_cases(profile: Mapping[str, ShapeRange]) -> list[dict[str, tuple[int, ...]]]:
    """Input shapes to compare at: the longest frames at batch 1 and 2 (mixed lengths), and opt."""
    cases = []
    for batch_pick, frames_pick in (("min", "max"), ("two", "max"), ("opt", "opt")):
        case = {}
        for name, shape_range in profile.items():
            shape = list(getattr(shape_range, frames_pick))
            shape[0] = min(2, shape_range.max[0]) if batch_pick == "two" else getattr(shape_range, batch_pick)[0]
            case[name] = tuple(shape)
        if case not in cases:
            cases.append(case)
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
    profile = builder.create_optimization_profile()
    for name, shape_range in job.profile.items():
        profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtBuildError(f"TensorRT failed to build {job.plan.name} (see the log above)")
    job.plan.write_bytes(bytes(serialized))


def run_plan(plan: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One inference of a serialized engine (device buffers through torch)."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
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
    stream = torch.cuda.Stream()
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
    for case in parity_cases(job.profile):
        inputs = parity_inputs(case)
        error = relative_error(run_onnx(reference_onnx, inputs), run_plan(job.plan, inputs))
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
        print(f"export trt: {job.plan.name} vs onnxruntime at {shapes}: relative error {error:.2e}", flush=True)
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
    parser.add_argument("--min-frames", type=int, default=None, help="mel frames (default: the manifest's maximum)")
    parser.add_argument("--opt-frames", type=int, default=None, help="mel frames (default: the manifest's maximum)")
    parser.add_argument("--max-frames", type=int, default=None, help="mel frames (default: the manifest's maximum)")
    parser.add_argument("--workspace-gib", type=int, default=8)
    parser.add_argument("--no-tf32", action="store_true", help="exact fp32 matmuls (slower)")
    parser.add_argument("--tolerance", type=float, default=None, help="parity: max relative error (default by precision)")
    parser.add_argument("--skip-parity", action="store_true")


def dims_from_args(args: argparse.Namespace, manifest: Manifest) -> Dims:
    longest = args.max_frames or manifest.max_mel_frames
    return Dims(
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        min_frames=args.min_frames or longest,
        opt_frames=args.opt_frames or longest,
        max_frames=longest,
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
