"""The fill step and the filled repositories' structure, on both tiers, parsed with Triton's own schema.

The gpu tier cannot run here (no TensorRT / TensorRT-LLM): its plans and engine folders are
stand-in files, and these tests check its configs structurally (names, dtypes, dims, wiring).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from canary_qwen.manifest import Manifest
from export.repository import (
    ADAPTER_PLAN,
    COMPLETE_MARKER,
    ENCODER_PLAN,
    TEMPLATES,
    TRTLLM_ASR,
    TRTLLM_BASE,
    fill_repository,
    render,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "preprocessor",
    "encoder",
    "adapter",
    "prompt_builder",
    "chat_prompt_builder",
    "llm",
    "llm_stream",
    "llm_base",
    "detokenizer",
    "canary_qwen",
    "canary_qwen_stream",
    "canary_qwen_chat",
}
ENSEMBLES = {"canary_qwen", "canary_qwen_stream", "canary_qwen_chat"}
LLMS = {"llm": False, "llm_stream": True, "llm_base": True}  # name -> decoupled
# Input names of TensorRT-LLM's tensorrt_llm model (triton_backend/all_models/inflight_batcher_llm).
TRTLLM_INPUTS = {
    "input_ids", "encoder_input_features", "encoder_output_lengths", "input_lengths", "request_output_len",
    "num_return_sequences", "draft_input_ids", "decoder_input_ids", "decoder_input_lengths", "draft_logits",
    "draft_acceptance_threshold", "end_id", "pad_id", "stop_words_list", "bad_words_list", "embedding_bias",
    "beam_width", "temperature", "runtime_top_k", "runtime_top_p", "runtime_top_p_min", "runtime_top_p_decay",
    "runtime_top_p_reset_ids", "len_penalty", "early_stopping", "repetition_penalty", "min_tokens",
    "beam_search_diversity_rate", "presence_penalty", "frequency_penalty", "seed", "return_log_probs",
    "return_context_logits", "return_generation_logits", "return_perf_metrics", "exclude_input_in_output",
    "stop", "streaming", "prompt_embedding_table", "prompt_table_extra_ids", "prompt_vocab_size",
    "cross_attention_mask", "lora_task_id", "lora_weights", "lora_config", "context_phase_params",
}  # fmt: skip
TRTLLM_OUTPUTS = {
    "output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "context_logits",
    "generation_logits", "batch_index", "sequence_index",
}  # fmt: skip


def load_configs(repository: Path) -> dict[str, mc.ModelConfig]:
    configs = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        configs[path.parent.name] = text_format.Parse(path.read_text(), mc.ModelConfig())
    return configs


@pytest.fixture(scope="module")
def gpu_artifacts(artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real artifacts plus stand-ins for what `export trt` / `export trtllm` build on a GPU."""
    out = tmp_path_factory.mktemp("gpu_artifacts")
    for item in artifacts_dir.iterdir():
        (out / item.name).symlink_to(item)
    (out / ENCODER_PLAN).write_bytes(b"stand-in plan")
    (out / ADAPTER_PLAN).write_bytes(b"stand-in plan")
    for engine in (TRTLLM_ASR, TRTLLM_BASE):
        (out / engine).mkdir()
        # What trtllm-build writes: the engine's dtype, read back for the prompt table.
        (out / engine / "config.json").write_text('{"pretrained_config": {"dtype": "bfloat16"}}')
        (out / engine / "rank0.engine").write_bytes(b"stand-in engine")
    return out


@pytest.fixture(scope="module")
def repositories(artifacts_dir: Path, gpu_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("filled")
    fill_repository(artifacts_dir, "cpu", root / "cpu")
    fill_repository(gpu_artifacts, "gpu", root / "gpu", serve_root=Path("/models"))
    return {"cpu": root / "cpu", "gpu": root / "gpu"}


@pytest.fixture(scope="module")
def manifest(artifacts_dir: Path) -> Manifest:
    return Manifest.load(artifacts_dir)


def test_render_requires_every_key() -> None:
    assert render("a ${x} b", {"x": "1", "unused": "2"}) == "a 1 b"
    with pytest.raises(KeyError, match="y"):
        render("${x} ${y}", {"x": "1"})


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_every_model_is_filled_and_parses(repositories: dict[str, Path], tier: str) -> None:
    repository = repositories[tier]
    assert (repository / COMPLETE_MARKER).is_file()
    configs = load_configs(repository)
    assert set(configs) == MODELS
    for name, config in configs.items():
        text = (repository / name / "config.pbtxt").read_text()
        assert "${" not in text, f"{name}: unfilled placeholder"
        assert config.name == name
        assert config.max_batch_size > 0, f"{name}: every model batches"
        assert (repository / name / "1").is_dir(), f"{name}: Triton needs a version folder"
        if config.backend == "python":
            assert (repository / name / "1" / "model.py").is_file()


def test_cpu_tier_models_are_self_contained(repositories: dict[str, Path], manifest: Manifest) -> None:
    repository = repositories["cpu"]
    configs = load_configs(repository)
    for name in MODELS - ENSEMBLES:
        assert configs[name].backend == "python", f"{name} runs in the python backend on the cpu tier"
    assert (repository / "encoder/1/encoder.onnx").is_file()
    assert (repository / "adapter/1/adapter.onnx").is_file()
    assert (repository / "preprocessor/1/mel.safetensors").is_file()
    for name, folder in (("llm", "llm_asr"), ("llm_stream", "llm_asr"), ("llm_base", "llm_base")):
        assert (repository / name / "1" / folder / "config.json").is_file()
        params = configs[name].parameters
        assert params["llm_dir"].string_value == folder
        assert configs[name].model_transaction_policy.decoupled is LLMS[name]
    assert (repository / "detokenizer/1/tokenizer/tokenizer.json").is_file()
    pre = configs["preprocessor"]
    assert float(pre.parameters["max_audio_seconds"].string_value) == manifest.max_audio_seconds
    assert pre.parameters["mel_bucket_frames"].string_value == "0"
    assert list(configs["encoder"].output[0].dims) == [-1, manifest.d_enc]
    assert list(configs["adapter"].output[0].dims) == [-1, manifest.d_llm]


def test_gpu_tier_uses_tensorrt_and_tensorrt_llm(repositories: dict[str, Path], manifest: Manifest) -> None:
    repository = repositories["gpu"]
    configs = load_configs(repository)
    for name in ("encoder", "adapter"):
        # The image has no tensorrt backend: the plans run in the python backend, on the GPU.
        assert configs[name].backend == "python" and not configs[name].platform
        assert configs[name].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert configs[name].parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
        assert (repository / name / "1" / "model.plan").is_file()
        assert "trt_plan_model" in (repository / name / "1" / "model.py").read_text()
    # Buckets are the encoder's business: the preprocessor pads a request to its longest only.
    assert configs["preprocessor"].parameters["mel_bucket_frames"].string_value == "0"
    engines = {"llm_stream": "/models/llm_stream/1/engine", "llm_base": "/models/llm_base/1/engine"}
    for name, path in engines.items():
        config = configs[name]
        assert config.backend == "tensorrtllm"
        assert config.model_transaction_policy.decoupled is True
        assert {t.name for t in config.input} <= TRTLLM_INPUTS
        assert {t.name for t in config.output} <= TRTLLM_OUTPUTS
        params = {key: value.string_value for key, value in config.parameters.items()}
        assert params["gpt_model_type"] == "inflight_fused_batching"
        assert params["exclude_input_in_output"] == "true"
        assert params["gpt_model_path"] == path
        assert (repository / name / "1" / "engine" / "rank0.engine").is_file()
        # Scalars per request are [1] in the config and [] for the backend.
        for tensor in config.input:
            if list(tensor.dims) == [1]:
                assert tensor.HasField("reshape"), f"{name}.{tensor.name} needs reshape: {{ shape: [ ] }}"
    # One ASR engine: `llm` is a python model handing requests on to `llm_stream`, no engine of its own.
    llm = configs["llm"]
    assert llm.backend == "python" and llm.model_transaction_policy.decoupled is False
    assert llm.parameters["engine_model"].string_value == "llm_stream"
    assert not (repository / "llm" / "1" / "engine").exists()
    # The prompt table takes the built engine's dtype (bf16 in the stand-in's config.json).
    table = next(t for t in configs["prompt_builder"].output if t.name == "prompt_embedding_table")
    assert table.data_type == mc.TYPE_BF16
    for name in ("llm", "llm_stream"):
        assert next(t for t in configs[name].input if t.name == "prompt_embedding_table").data_type == mc.TYPE_BF16


def test_gpu_prompt_table_follows_the_engine_dtype(gpu_artifacts: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for item in gpu_artifacts.iterdir():
        if item.name != TRTLLM_ASR:
            (artifacts / item.name).symlink_to(item.resolve())
    (artifacts / TRTLLM_ASR).mkdir()
    (artifacts / TRTLLM_ASR / "rank0.engine").write_bytes(b"stand-in engine")
    (artifacts / TRTLLM_ASR / "config.json").write_text('{"pretrained_config": {"dtype": "float16"}}')
    fill_repository(artifacts, "gpu", tmp_path / "repo")
    configs = load_configs(tmp_path / "repo")
    table = next(t for t in configs["prompt_builder"].output if t.name == "prompt_embedding_table")
    assert table.data_type == mc.TYPE_FP16
    (artifacts / TRTLLM_ASR / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no pretrained_config.dtype"):
        fill_repository(artifacts, "gpu", tmp_path / "repo2")


def _dims_compatible(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_ensemble_steps_line_up(repositories: dict[str, Path], tier: str) -> None:
    """Every ensemble tensor is produced once, before use, with the dtype and dims its consumer wants."""
    configs = load_configs(repositories[tier])
    for ensemble_name in ENSEMBLES:
        ensemble = configs[ensemble_name]
        assert ensemble.platform == "ensemble"
        produced = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
        consumed: set[str] = set()
        for step in ensemble.ensemble_scheduling.step:
            model = configs[step.model_name]
            inputs = {t.name: t for t in model.input}
            outputs = {t.name: t for t in model.output}
            for key, value in step.input_map.items():
                assert key in inputs, f"{ensemble_name}: {step.model_name} has no input {key}"
                assert value in produced, f"{ensemble_name}: {value} is used before it is produced"
                dtype, dims = produced[value]
                assert dtype == inputs[key].data_type, f"{ensemble_name}: {value} -> {step.model_name}.{key} dtype"
                assert _dims_compatible(dims, list(inputs[key].dims)), f"{ensemble_name}: {value} dims {dims}"
                consumed.add(value)
            required = {name for name, t in inputs.items() if not t.optional}
            missing = required - set(step.input_map)
            assert not missing, f"{ensemble_name}: {step.model_name} misses {missing}"
            for key, value in step.output_map.items():
                assert key in outputs, f"{ensemble_name}: {step.model_name} has no output {key}"
                assert value not in produced, f"{ensemble_name}: {value} produced twice"
                produced[value] = (outputs[key].data_type, list(outputs[key].dims))
        for output in ensemble.output:
            assert output.name in produced, f"{ensemble_name}: output {output.name} never produced"
            dtype, dims = produced[output.name]
            assert dtype == output.data_type and _dims_compatible(dims, list(output.dims))
        internal = {name for name in produced if name.startswith("_")}
        assert internal <= consumed, f"{ensemble_name}: unused tensors {internal - consumed}"


def test_both_tiers_serve_the_same_tensor_contract(repositories: dict[str, Path]) -> None:
    """The gateway sees the same models and tensors whichever tier is filled."""
    cpu, gpu = load_configs(repositories["cpu"]), load_configs(repositories["gpu"])
    for name in MODELS:
        if name in LLMS:  # the gpu LLMs accept more optional TensorRT-LLM inputs
            cpu_inputs = {(t.name, t.data_type, tuple(t.dims)) for t in cpu[name].input}
            gpu_inputs = {(t.name, t.data_type, tuple(t.dims)) for t in gpu[name].input}
            assert {n for n, *_ in cpu_inputs} <= {n for n, *_ in gpu_inputs}
            shared = {n for n, *_ in cpu_inputs}
            cpu_types = {(n, d) for n, d, _ in cpu_inputs}
            gpu_types = {(n, d) for n, d, _ in gpu_inputs if n in shared}
            # The prompt table's dtype follows the engine (bf16 here) on gpu; everything else is equal.
            assert {x for x in cpu_types if x[0] != "prompt_embedding_table"} == {
                x for x in gpu_types if x[0] != "prompt_embedding_table"
            }
            continue
        for field in ("input", "output"):
            a = [(t.name, t.data_type, list(t.dims)) for t in getattr(cpu[name], field)]
            b = [(t.name, t.data_type, list(t.dims)) for t in getattr(gpu[name], field)]
            if name == "prompt_builder":
                a = [x for x in a if x[0] != "prompt_embedding_table"]
                b = [x for x in b if x[0] != "prompt_embedding_table"]
            assert a == b, f"{name}.{field} differs between tiers"


def test_gpu_tier_needs_the_engines(artifacts_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="export trt"):
        fill_repository(artifacts_dir, "gpu", tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_fill_replaces_an_old_repository(artifacts_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    (out / "stale_model").mkdir(parents=True)
    fill_repository(artifacts_dir, "cpu", out)
    assert not (out / "stale_model").exists()
    assert set(load_configs(out)) == MODELS
    assert not [p for p in tmp_path.iterdir() if p.name != "repo"], "scratch folder left behind"


def test_cli_fills_the_cpu_tier(artifacts_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "export", "repository", "--artifacts", str(artifacts_dir), "--tier", "cpu",
         "--out", str(tmp_path / "repo"), "--llm-device", "gpu", "--llm-dtype", "bfloat16", "--threads", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    configs = load_configs(tmp_path / "repo")
    assert configs["llm"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert configs["preprocessor"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert configs["llm_base"].parameters["dtype"].string_value == "bfloat16"
    assert configs["encoder"].parameters["intra_op_threads"].string_value == "0"


def test_templates_cover_every_model() -> None:
    """The tiered template has both tiers; the gpu tier's own folders have one config each."""
    assert (TEMPLATES / "llm" / "config.cpu.pbtxt").is_file()
    assert (TEMPLATES / "llm" / "config.gpu.pbtxt").is_file()
    for gpu_only in ("encoder_trt", "adapter_trt", "llm_collect"):
        assert (TEMPLATES / gpu_only / "config.pbtxt").is_file()
        assert (TEMPLATES / gpu_only / "1" / "model.py").is_file()
