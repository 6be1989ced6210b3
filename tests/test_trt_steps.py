"""The TensorRT / TensorRT-LLM build steps: fail-fast here, and their pure logic.

This machine has neither TensorRT nor TensorRT-LLM nor a GPU, so the builds
themselves run only in NVIDIA's container (export.ngc); what runs here is the
fail-fast behaviour, the shapes (length buckets) and command lines they would
use, the engine dtype read back, the optional fp16 ONNX conversion (checked
with onnxruntime), and the pure logic of the gpu tier's runners (bucketed
padding on torch CPU tensors, the ASR engine's collected responses).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from canary_qwen.manifest import Manifest
from canary_qwen.serving import plan_buckets, stream_collect
from export import gpu_requirements, trt, trtllm
from export.ngc import NGC_IMAGE
from export.onnx_fp16 import KEEP_FP32_OPS, convert_to_fp16

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(artifacts_dir: Path) -> Manifest:
    return Manifest.load(artifacts_dir)


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- fail fast, as a real subprocess -----------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_without_tensorrt_fails_fast(artifacts_dir: Path, tmp_path: Path) -> None:
    result = _export("trt", "--artifacts", str(artifacts_dir), "--out", str(tmp_path))
    _assert_one_line_failure(result, "export trt: the `tensorrt` Python module is not installed", NGC_IMAGE)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="TensorRT-LLM is installed here")
def test_trtllm_without_tensorrt_llm_fails_fast(artifacts_dir: Path, tmp_path: Path) -> None:
    result = _export("trtllm", "--artifacts", str(artifacts_dir), "--out", str(tmp_path))
    _assert_one_line_failure(result, "export trtllm: the `tensorrt_llm` Python module is not installed", NGC_IMAGE)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("step", ["trt", "trtllm"])
def test_missing_artifacts_named(step: str, tmp_path: Path) -> None:
    result = _export(step, "--artifacts", str(tmp_path / "nothing"))
    _assert_one_line_failure(result, f"export {step}: ", "manifest.json not found")


def test_no_cuda_driver_here_means_no_gpu() -> None:
    # This machine has no NVIDIA driver: the check must say so, not crash.
    if Path("/dev/nvidiactl").exists():
        pytest.skip("an NVIDIA driver is present")
    assert gpu_requirements.cuda_device_count() == 0


@pytest.mark.parametrize("step", ["trt", "trtllm"])
def test_without_gpu_fails_fast(
    step: str, artifacts_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As inside the container on a machine without a GPU: modules and tools present, no device.
    module = trt if step == "trt" else trtllm
    monkeypatch.setattr(module, "require_module", lambda step, name: None)
    monkeypatch.setattr(module, "require_executable", lambda step, name: name, raising=False)
    monkeypatch.setattr(gpu_requirements, "cuda_device_count", lambda: 0)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert module.run(parser.parse_args(["--artifacts", str(artifacts_dir), "--out", str(tmp_path)])) == 2
    assert capsys.readouterr().err.strip() == f"export {step}: no CUDA GPU is visible (TensorRT builds need one)"
    assert not any(tmp_path.iterdir())


# ---- TensorRT plans: profiles and parity helpers -----------------------------------------------


def test_encoder_frames_formula() -> None:
    assert trt.encoder_frames(4000, 8) == 500
    assert trt.encoder_frames(1100, 8) == 138
    assert trt.encoder_frames(1, 8) == 1


def test_default_buckets_are_10_20_40_seconds(manifest: Manifest) -> None:
    parser = argparse.ArgumentParser()
    trt.add_arguments(parser)
    dims = trt.dims_from_args(parser.parse_args(["--artifacts", "x"]), manifest)
    assert manifest.max_audio_seconds == 40 and manifest.max_mel_frames == 4000
    assert dims.bucket_frames == (1000, 2000, 4000)
    shapes = trt.profiles(manifest, dims)
    # One profile per bucket: the length fixed, the batch 1..64 (opt 16).
    assert [p["MEL"] for p in shapes["encoder"]] == [
        trt.ShapeRange((1, 128, n), (16, 128, n), (64, 128, n)) for n in (1000, 2000, 4000)
    ]
    assert all(p["MEL_LENGTH"] == trt.ShapeRange((1,), (16,), (64,)) for p in shapes["encoder"])
    d_enc = manifest.d_enc
    assert [p["ENCODED"] for p in shapes["adapter"]] == [
        trt.ShapeRange((1, n, d_enc), (16, n, d_enc), (64, n, d_enc)) for n in (125, 250, 500)
    ]
    assert all(p["ENCODED_LENGTH"] == trt.ShapeRange((1,), (16,), (64,)) for p in shapes["adapter"])


def test_bucket_choice_keeps_the_longest_audio_and_drops_the_rest(manifest: Manifest) -> None:
    assert trt.bucket_frames(manifest, [5, 40, 60, 10, 10]) == (500, 1000, 4000)
    assert trt.bucket_frames(manifest, [40]) == (4000,)
    with pytest.raises(ValueError, match="increasing positive bucket lengths"):
        trt.Dims(min_batch=1, opt_batch=1, max_batch=1, bucket_frames=(2000, 1000))
    with pytest.raises(ValueError, match="min <= opt <= max batch"):
        trt.Dims(min_batch=2, opt_batch=1, max_batch=4, bucket_frames=(1000,))


def test_plan_jobs_paths(manifest: Manifest, tmp_path: Path) -> None:
    dims = trt.Dims(1, 1, 2, (1000, 4000))
    fp32 = trt.plan_jobs(manifest, Path("/a"), tmp_path, dims, ["encoder", "adapter"], "fp32")
    assert [(j.onnx, j.plan) for j in fp32] == [
        (Path("/a/encoder.onnx"), tmp_path / "encoder.plan"),
        (Path("/a/adapter.onnx"), tmp_path / "adapter.plan"),
    ]
    assert [p["MEL"].max for p in fp32[0].profiles] == [(2, 128, 1000), (2, 128, 4000)]
    fp16 = trt.plan_jobs(manifest, Path("/a"), tmp_path, dims, ["encoder"], "fp16")
    assert fp16[0].onnx == tmp_path / "encoder.fp16.onnx"


def test_parity_cases_cover_every_bucket_at_batch_one_two_and_opt(manifest: Manifest) -> None:
    dims = trt.Dims(1, 4, 8, (1000, 4000))
    cases = trt.parity_cases(trt.profiles(manifest, dims)["encoder"])
    assert [(k, c["MEL"]) for k, c in cases] == [
        (0, (1, 128, 1000)), (0, (2, 128, 1000)), (0, (4, 128, 1000)),
        (1, (1, 128, 4000)), (1, (2, 128, 4000)), (1, (4, 128, 4000)),
    ]  # fmt: skip
    inputs = trt.parity_inputs(cases[4][1])
    assert inputs["MEL"].shape == (2, 128, 4000) and inputs["MEL"].dtype == np.float32
    assert inputs["MEL_LENGTH"].dtype == np.int32 and inputs["MEL_LENGTH"].tolist() == [4000, 1333]


def test_relative_error_compares_valid_frames_only() -> None:
    ref = {"X": np.ones((2, 4, 3), np.float32), "X_LENGTH": np.array([4, 2], np.int32)}
    got = {"X": ref["X"].copy(), "X_LENGTH": ref["X_LENGTH"].copy()}
    got["X"][1, 2:] = 1e6  # padding of the second item: ignored
    assert trt.relative_error(ref, got) == 0.0
    got["X"][1, 1, 0] = 1.5
    assert trt.relative_error(ref, got) == pytest.approx(0.5)
    got["X"][0, 0, 0] = np.nan
    assert trt.relative_error(ref, got) == float("inf")
    with pytest.raises(trt.TrtBuildError, match="X_LENGTH differs"):
        trt.relative_error(ref, {**got, "X_LENGTH": np.array([4, 3], np.int32)})


def test_fp16_onnx_keeps_norms_and_softmax_fp32_and_matches(artifacts_dir: Path, manifest: Manifest, tmp_path: Path) -> None:
    source = artifacts_dir / manifest.files.encoder
    converted = convert_to_fp16(source, tmp_path / "encoder.fp16.onnx")
    model = onnx.load(str(converted))
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [fp32, onnx.TensorProto.INT32]
    assert model.graph.output[0].type.tensor_type.elem_type == fp32
    assert any(init.data_type == fp16 for init in model.graph.initializer)  # the weights went fp16
    # Every kept op still sees fp32 data: its float initializers stay fp32 too.
    kept = [node for node in model.graph.node if node.op_type in KEEP_FP32_OPS]
    assert {n.op_type for n in kept} >= {"LayerNormalization", "Softmax"}
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    for node in kept:
        if node.op_type in ("LayerNormalization", "Softmax"):
            data = producers[node.input[0]]
            assert data.op_type == "Cast" and data.attribute[0].i == fp32, (node.name, data.op_type)
        for name in node.input:
            if name in initializers and initializers[name].data_type in (fp32, fp16):
                assert initializers[name].data_type == fp32, (node.op_type, name)
    # onnxruntime runs it; results stay close to the fp32 graph on valid frames.
    case = {"MEL": (2, 128, 1100), "MEL_LENGTH": (2,)}
    inputs = trt.parity_inputs(case)
    error = trt.relative_error(trt.run_onnx(source, inputs), trt.run_onnx(converted, inputs))
    assert error < 1e-2  # measured about 1e-3 on the tiny encoder


# ---- TensorRT-LLM engines: sizes and command lines ---------------------------------------------


def test_engine_jobs_sizes(manifest: Manifest, tmp_path: Path) -> None:
    jobs = {j.name: j for j in trtllm.engine_jobs(manifest, Path("/a"), tmp_path, trtllm.EngineLimits(), ["asr", "base"])}
    asr, base = jobs["asr"], jobs["base"]
    # 15 prompt tokens with the placeholder, replaced by 500 audio embeddings.
    assert asr.max_input_len == 14 + 500 == manifest.max_prompt_tokens
    assert asr.prompt_table_size == 64 * 500
    assert asr.max_seq_len == asr.max_input_len + 1024
    assert (asr.hf_dir, asr.engine_dir) == (Path("/a/llm_asr"), tmp_path / "trtllm_asr")
    assert (base.max_input_len, base.max_seq_len, base.prompt_table_size) == (4096, 4096 + 1024, 0)
    assert (base.hf_dir, base.engine_dir) == (Path("/a/llm_base"), tmp_path / "trtllm_base")


def test_trtllm_build_command_lines(manifest: Manifest, tmp_path: Path) -> None:
    limits = trtllm.EngineLimits(max_batch=8, max_new_tokens=256, chat_max_input_len=2048)
    asr, base = trtllm.engine_jobs(manifest, Path("/a"), tmp_path, limits, ["asr", "base"])
    command = trtllm.build_command(asr, Path("/ckpt"), "float16")
    assert command == [
        "trtllm-build",
        "--checkpoint_dir=/ckpt",
        f"--output_dir={tmp_path / 'trtllm_asr'}",
        "--max_batch_size=8",
        "--max_input_len=514",
        "--max_seq_len=770",
        "--gemm_plugin=float16",
        "--gpt_attention_plugin=float16",
        "--paged_kv_cache=enable",
        "--remove_input_padding=enable",
        "--context_fmha=enable",
        "--max_prompt_embedding_table_size=4000",
    ]
    base_command = trtllm.build_command(base, Path("/ckpt"), "bfloat16")
    assert "--gemm_plugin=bfloat16" in base_command and "--gpt_attention_plugin=bfloat16" in base_command
    assert "--max_input_len=2048" in base_command and "--max_seq_len=2304" in base_command
    assert not any(arg.startswith("--max_prompt_embedding_table_size") for arg in base_command)


def test_engine_dtype_defaults_to_the_checkpoint_and_is_read_back(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert trtllm.checkpoint_dtype(hf) == "bfloat16"
    (hf / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert trtllm.checkpoint_dtype(hf) == "bfloat16"  # an fp32 checkpoint builds in bf16
    (hf / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert trtllm.checkpoint_dtype(hf) == "float16"
    parser = argparse.ArgumentParser()
    trtllm.add_arguments(parser)
    assert parser.parse_args(["--artifacts", "x"]).dtype == "auto"
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"version": "1.0.0", "pretrained_config": {"dtype": "bfloat16"}}))
    assert trtllm.engine_dtype(engine) == "bfloat16"
    assert trtllm.PROMPT_TABLE_TYPES[trtllm.engine_dtype(engine)] == "TYPE_BF16"
    (engine / "config.json").write_text(json.dumps({"pretrained_config": {}}))
    with pytest.raises(ValueError, match="no pretrained_config.dtype"):
        trtllm.engine_dtype(engine)
    (engine / "config.json").write_text(json.dumps({"pretrained_config": {"dtype": "int8"}}))
    with pytest.raises(ValueError, match="engine dtype 'int8'"):
        trtllm.engine_dtype(engine)


# ---- the gpu tier's runners: length buckets and the collected ASR responses --------------------


def test_batches_pad_only_to_their_bucket() -> None:
    buckets = [1000, 2000, 4000]
    assert [plan_buckets.bucket_index(n, buckets) for n in (1, 1000, 1001, 4000)] == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="longer than the longest bucket"):
        plan_buckets.bucket_index(4001, buckets)
    seen: list[tuple[int, tuple[int, ...]]] = []

    def run(profile: int, data: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((profile, tuple(data.shape)))
        assert lengths.dtype == torch.int32
        # An encoder-like plan: [B, F, T] -> [B, T // 8, 2], lengths // 8.
        out = data[:, :2, ::8].transpose(1, 2).contiguous()
        return out, lengths // 8

    def request(*lengths: int) -> plan_buckets.Items:
        data = torch.zeros(len(lengths), 3, max(lengths))
        for i, n in enumerate(lengths):
            data[i, :, :n] = i + 1
        return plan_buckets.request_items(data, list(lengths), axis=1, longest=buckets[-1])

    # Two requests of 5-8 s clips: one batch in the 10 s bucket, not padded to 40 s.
    results = plan_buckets.run_bucketed([request(500, 800), request(640)], buckets, run, in_axis=1, out_axis=0)
    assert seen == [(0, (3, 3, 1000))]
    (first, first_lengths), (second, second_lengths) = results  # type: ignore[misc]
    assert first_lengths.tolist() == [[62], [100]] and first.shape == (2, 100, 2)
    assert second_lengths.tolist() == [[80]] and second.shape == (1, 80, 2)
    assert float(first[1, :100].min()) == 2.0 and float(second.min()) == 1.0
    # A 15 s clip moves the batch to the 20 s bucket; a bad request fails alone.
    seen.clear()
    bad = ValueError("length 0 outside 1..5")
    results = plan_buckets.run_bucketed([request(1500), bad], buckets, run, in_axis=1, out_axis=0)
    assert seen == [(1, (1, 3, 2000))] and results[1] is bad
    with pytest.raises(ValueError, match="outside"):
        plan_buckets.request_items(torch.zeros(1, 3, 10), [11], axis=1, longest=4000)


def test_collected_responses_rebuild_the_batch() -> None:
    pieces = [  # batch items answer out of order; item 1 streamed in two pieces
        (2, np.array([[[7, 8, -1]]], np.int32), np.array([[2]], np.int32)),
        (0, np.array([[[5]]], np.int32), np.array([[1]], np.int32)),
        (1, np.array([[[1, 2]]], np.int32), np.array([[2]], np.int32)),
        (1, np.array([[[3]]], np.int32), np.array([[1]], np.int32)),
    ]
    out = stream_collect.collect_responses(3, pieces)
    assert out["sequence_length"].tolist() == [[1], [3], [2]]
    assert out["output_ids"].tolist() == [[[5, -1, -1]], [[1, 2, 3]], [[7, 8, -1]]]
    assert out["output_ids"].dtype == np.int32 and out["sequence_length"].dtype == np.int32
    with pytest.raises(RuntimeError, match=r"no response for batch items \[1\]"):
        stream_collect.collect_responses(2, pieces[1:2])
    with pytest.raises(RuntimeError, match="batch index 2 of a batch of 2"):
        stream_collect.collect_responses(2, pieces[:1])
