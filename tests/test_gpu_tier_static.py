"""The gpu tier's configs against what its pinned backends read (static: nothing GPU runs here).

Pinned: nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3 (export/ngc.py) = Triton r25.10 with
TensorRT-LLM 1.0.0. The lists below are kept by hand from these upstream sources:

- TRTLLM_PARAMETERS, TRTLLM_INPUTS, TRTLLM_OUTPUTS: the backend's model template
  `all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt` in triton-inference-server/
  tensorrtllm_backend tag v0.19.0, and `triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/
  config.pbtxt` in NVIDIA/TensorRT-LLM after the move (the 1.0 line; same 46 parameter keys; that
  version adds the inputs marked "1.0" below and makes the prompt table's data type a template
  variable, TYPE_FP16 fixed at v0.19.0).
- which parameter is read how (type, guarded by try/catch or not): `inflight_batcher_llm/src/
  model_instance_state.cc` (getExecutorConfigFromParams and the get*FromParams helpers; unguarded:
  gpt_model_type in getBatchingTypeFromParams, and tokenizer_dir, xgrammar_tokenizer_info_path,
  guided_decoding_backend in getGuidedDecodingConfigFromParams) and `model_state.cc` (gpu_device_ids,
  participant_ids, executor_worker_path; `worker_path` present is an error; GetParameter<bool>
  takes true/false/True/False/TRUE/FALSE/1/0), same at tensorrtllm_backend v0.19.0 and TensorRT-LLM
  triton_backend/.
- batch rules: `inflight_batcher_llm/src/utils.cc` createRequestsFromInputTensors ("Batch size > 1
  requires the tensorrt_llm backend to be using decoupled transaction policy", "Streaming is only
  supported if model is deployed using decoupled mode").
- ensembles: triton-inference-server/core r25.10 `src/ensemble_scheduler/ensemble_utils.cc` (an
  ensemble is decoupled when any step is; its max_batch_size may not exceed a step's);
  triton-inference-server/server r25.10 `src/grpc/infer_handler.cc` ("ModelInfer RPC doesn't
  support models with decoupled transaction policy": the gateway's unary call to canary_qwen).
- backends in the image: export/ngc.py IMAGE_BACKENDS (tensorrtllm_backend v1.0.0 `build.sh`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.ngc import IMAGE_BACKENDS
from export.repository import ADAPTER_PLAN, ENCODER_PLAN, TRTLLM_ASR, TRTLLM_BASE, fill_repository
from export.trt import ADAPTER, ENCODER, PLAN_IO_DTYPES
from export.trtllm import PROMPT_TABLE_TYPES

# ---- what the pinned tensorrtllm backend reads -------------------------------------------------

# Every parameter key of the upstream template, with how the backend parses it.
BOOL, INT, FLOAT, STRING, INT_LIST = "bool", "int", "float", "string", "int list"
TRTLLM_PARAMETERS = {
    "max_beam_width": INT, "FORCE_CPU_ONLY_INPUT_TENSORS": STRING, "gpt_model_type": STRING,
    "gpt_model_path": STRING, "encoder_model_path": STRING, "max_tokens_in_paged_kv_cache": INT,
    "max_attention_window_size": INT_LIST, "sink_token_length": INT, "batch_scheduler_policy": STRING,
    "kv_cache_free_gpu_mem_fraction": FLOAT, "cross_kv_cache_fraction": FLOAT,
    "kv_cache_host_memory_bytes": INT, "kv_cache_onboard_blocks": BOOL, "enable_trt_overlap": BOOL,
    "exclude_input_in_output": BOOL, "cancellation_check_period_ms": INT, "stats_check_period_ms": INT,
    "iter_stats_max_iterations": INT, "request_stats_max_iterations": INT, "enable_kv_cache_reuse": BOOL,
    "normalize_log_probs": BOOL, "enable_chunked_context": BOOL, "gpu_device_ids": STRING,
    "participant_ids": STRING, "num_nodes": INT, "lora_cache_optimal_adapter_size": INT,
    "lora_cache_max_adapter_size": INT, "lora_cache_gpu_memory_fraction": FLOAT,
    "lora_cache_host_memory_bytes": INT, "lora_prefetch_dir": STRING, "decoding_mode": STRING,
    "executor_worker_path": STRING, "lookahead_window_size": INT, "lookahead_ngram_size": INT,
    "lookahead_verification_set_size": INT, "medusa_choices": STRING, "eagle_choices": STRING,
    "gpu_weights_percent": FLOAT, "enable_context_fmha_fp32_acc": BOOL, "multi_block_mode": BOOL,
    "cuda_graph_mode": BOOL, "cuda_graph_cache_size": INT, "speculative_decoding_fast_logits": BOOL,
    "tokenizer_dir": STRING, "guided_decoding_backend": STRING, "xgrammar_tokenizer_info_path": STRING,
}  # fmt: skip
# Read outside any try/catch: a missing key fails the model load ("Cannot find parameter with name").
UNGUARDED = {"gpt_model_type", "tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"}
# Left out on purpose: any value of lora_prefetch_dir (even "") is a folder to prefetch LoRA weights
# from (PeftCacheConfig gets it as set); only its absence is "off".
LEFT_OUT = {"lora_prefetch_dir"}
# Present is an error (model_state.cc GetExecutorWorkerPath).
FORBIDDEN = {"worker_path"}
# Keys whose "" the backend reads as "not set" (a parse error or empty string inside its try/catch,
# or an explicit empty check): the value that turns them off or leaves the default.
EMPTY_IS_UNSET = {
    "encoder_model_path", "max_tokens_in_paged_kv_cache", "max_attention_window_size", "sink_token_length",
    "cross_kv_cache_fraction", "participant_ids", "lookahead_window_size", "lookahead_ngram_size",
    "lookahead_verification_set_size", "medusa_choices", "eagle_choices", "tokenizer_dir",
    "guided_decoding_backend", "xgrammar_tokenizer_info_path",
}  # fmt: skip
CHOICES = {
    "gpt_model_type": {"inflight_fused_batching", "inflight_batching", "V1", "v1"},
    "batch_scheduler_policy": {"guaranteed_no_evict", "max_utilization"},
    "decoding_mode": {"top_k", "top_p", "top_k_top_p", "beam_search", "medusa", "redrafter", "lookahead", "eagle"},
}
BOOL_VALUES = {"true", "false", "True", "False", "TRUE", "FALSE", "1", "0"}

# Template tensors: name -> (data type, dims, reshape to [], optional), transcribed for the inputs and
# outputs this service could send or read (not the speculative-decoding, mrope, retention, guided or
# timing ones; the 1.0 names: v0.19.0 calls seed / min_tokens random_seed / min_length). A config may
# declare only these, exactly so, but the prompt table's data type (the engine's,
# `${prompt_embedding_table_data_type}` in 1.0).
T = mc.DataType
_SCALAR = (True, True)  # reshape: { shape: [ ] }, optional
TRTLLM_INPUTS = {
    "input_ids": (T.TYPE_INT32, [-1], False, True), "encoder_input_features": (None, [-1, -1], False, True),
    "encoder_output_lengths": (T.TYPE_INT32, [1], *_SCALAR), "input_lengths": (T.TYPE_INT32, [1], True, False),
    "request_output_len": (T.TYPE_INT32, [1], True, False), "num_return_sequences": (T.TYPE_INT32, [1], *_SCALAR),
    "draft_input_ids": (T.TYPE_INT32, [-1], False, True), "decoder_input_ids": (T.TYPE_INT32, [-1], False, True),
    "decoder_input_lengths": (T.TYPE_INT32, [1], *_SCALAR), "draft_logits": (None, [-1, -1], False, True),
    "draft_acceptance_threshold": (T.TYPE_FP32, [1], *_SCALAR), "end_id": (T.TYPE_INT32, [1], *_SCALAR),
    "pad_id": (T.TYPE_INT32, [1], *_SCALAR), "stop_words_list": (T.TYPE_INT32, [2, -1], False, True),
    "bad_words_list": (T.TYPE_INT32, [2, -1], False, True), "embedding_bias": (T.TYPE_FP32, [-1], False, True),
    "beam_width": (T.TYPE_INT32, [1], *_SCALAR), "temperature": (T.TYPE_FP32, [1], *_SCALAR),
    "runtime_top_k": (T.TYPE_INT32, [1], *_SCALAR), "runtime_top_p": (T.TYPE_FP32, [1], *_SCALAR),
    "runtime_top_p_min": (T.TYPE_FP32, [1], *_SCALAR), "runtime_top_p_decay": (T.TYPE_FP32, [1], *_SCALAR),
    "runtime_top_p_reset_ids": (T.TYPE_INT32, [1], *_SCALAR), "len_penalty": (T.TYPE_FP32, [1], *_SCALAR),
    "early_stopping": (T.TYPE_BOOL, [1], *_SCALAR), "repetition_penalty": (T.TYPE_FP32, [1], *_SCALAR),
    "min_tokens": (T.TYPE_INT32, [1], *_SCALAR), "beam_search_diversity_rate": (T.TYPE_FP32, [1], *_SCALAR),
    "presence_penalty": (T.TYPE_FP32, [1], *_SCALAR), "frequency_penalty": (T.TYPE_FP32, [1], *_SCALAR),
    "seed": (T.TYPE_UINT64, [1], *_SCALAR), "return_log_probs": (T.TYPE_BOOL, [1], *_SCALAR),
    "return_context_logits": (T.TYPE_BOOL, [1], *_SCALAR), "return_generation_logits": (T.TYPE_BOOL, [1], *_SCALAR),
    "return_perf_metrics": (T.TYPE_BOOL, [1], *_SCALAR), "exclude_input_in_output": (T.TYPE_BOOL, [1], *_SCALAR),
    "stop": (T.TYPE_BOOL, [1], *_SCALAR), "streaming": (T.TYPE_BOOL, [1], *_SCALAR),
    "prompt_embedding_table": (None, [-1, -1], False, True),
    "prompt_table_extra_ids": (T.TYPE_UINT64, [-1], False, True),
    "prompt_vocab_size": (T.TYPE_INT32, [1], *_SCALAR), "cross_attention_mask": (T.TYPE_BOOL, [-1, -1], False, True),
    "lora_task_id": (T.TYPE_UINT64, [1], *_SCALAR), "lora_weights": (T.TYPE_FP16, [-1, -1], False, True),
    "lora_config": (T.TYPE_INT32, [-1, 3], False, True), "context_phase_params": (T.TYPE_UINT8, [-1], False, True),
    # 1.0
    "return_num_input_tokens": (T.TYPE_BOOL, [1], *_SCALAR), "return_num_output_tokens": (T.TYPE_BOOL, [1], *_SCALAR),
}  # fmt: skip
TRTLLM_OUTPUTS = {
    "output_ids": (T.TYPE_INT32, [-1, -1]), "sequence_length": (T.TYPE_INT32, [-1]),
    "cum_log_probs": (T.TYPE_FP32, [-1]), "output_log_probs": (T.TYPE_FP32, [-1, -1]),
    "batch_index": (T.TYPE_INT32, [1]), "sequence_index": (T.TYPE_INT32, [1]),
    "context_phase_params": (T.TYPE_UINT8, [-1]),
}  # fmt: skip
# fillTritonResponse throws unless these are requested: every consumer needs them declared.
TRTLLM_REQUIRED_OUTPUTS = {"output_ids", "sequence_length"}
# The gateway calls this ensemble with gRPC ModelInfer (gateway/triton_client.py transcribe).
UNARY_ENSEMBLES = {"canary_qwen"}
STREAMING_ENSEMBLES = {"canary_qwen_stream", "canary_qwen_chat"}


# ---- the filled gpu tier -----------------------------------------------------------------------


def _gpu_artifacts(artifacts_dir: Path, out: Path, engine_dtype: str) -> Path:
    """The real artifacts plus stand-ins for what `export trt` / `export trtllm` build on a GPU."""
    out.mkdir()
    for item in artifacts_dir.iterdir():
        (out / item.name).symlink_to(item)
    (out / ENCODER_PLAN).write_bytes(b"stand-in plan")
    (out / ADAPTER_PLAN).write_bytes(b"stand-in plan")
    for engine in (TRTLLM_ASR, TRTLLM_BASE):
        (out / engine).mkdir()
        (out / engine / "config.json").write_text(f'{{"pretrained_config": {{"dtype": "{engine_dtype}"}}}}')
    return out


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def gpu(request: pytest.FixtureRequest, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(engine dtype, configs by model name) of a gpu-tier fill."""
    root = tmp_path_factory.mktemp(f"gpu_{request.param}")
    artifacts = _gpu_artifacts(artifacts_dir, root / "artifacts", request.param)
    fill_repository(artifacts, "gpu", root / "repo", serve_root=Path("/models"))
    configs = {
        path.parent.name: text_format.Parse(path.read_text(), mc.ModelConfig())
        for path in sorted((root / "repo").glob("*/config.pbtxt"))
    }
    return request.param, configs


def _tensorrtllm(configs: dict[str, mc.ModelConfig]) -> dict[str, mc.ModelConfig]:
    return {name: c for name, c in configs.items() if c.backend == "tensorrtllm"}


def _input(config: mc.ModelConfig, name: str) -> mc.ModelInput:
    return next(t for t in config.input if t.name == name)


def _output(config: mc.ModelConfig, name: str) -> mc.ModelOutput:
    return next(t for t in config.output if t.name == name)


def test_tensorrtllm_parameters_are_exactly_what_the_backend_reads(gpu) -> None:
    _, configs = gpu
    models = _tensorrtllm(configs)
    assert set(models) == {"llm_stream", "llm_base"}
    for name, config in models.items():
        params = {key: value.string_value for key, value in config.parameters.items()}
        assert set(params) == set(TRTLLM_PARAMETERS) - LEFT_OUT, name
        assert UNGUARDED <= set(params) and not FORBIDDEN & set(params)
        for key, value in params.items():
            kind = TRTLLM_PARAMETERS[key]
            if value == "":
                assert key in EMPTY_IS_UNSET, f"{name}.{key}: empty, but the backend needs a value"
            elif kind == BOOL:
                assert value in BOOL_VALUES, f"{name}.{key}={value!r}"
            elif kind == INT:
                assert int(value) >= 0, f"{name}.{key}={value!r}"
            elif kind == FLOAT:
                assert 0.0 <= float(value) <= 1.0, f"{name}.{key}={value!r}"
            elif kind == INT_LIST:
                assert all(int(v) > 0 for v in value.split(",")), f"{name}.{key}={value!r}"
            if key in CHOICES:
                assert value in CHOICES[key], f"{name}.{key}={value!r}"
        # Off: guided decoding (no backend named: the tokenizer info file is never opened), KV reuse
        # (the ASR engine's fake prompt ids repeat across requests with other audio behind them).
        assert params["guided_decoding_backend"] == "" and params["xgrammar_tokenizer_info_path"] == ""
        assert params["enable_kv_cache_reuse"] == "false"
        assert params["gpt_model_path"] == f"/models/{name}/1/engine"
        assert params["max_beam_width"] == "1" and params["exclude_input_in_output"] == "true"


def test_tensorrtllm_tensors_match_the_template(gpu) -> None:
    engine_dtype, configs = gpu
    for name, config in _tensorrtllm(configs).items():
        inputs = {t.name: t for t in config.input}
        assert set(inputs) <= set(TRTLLM_INPUTS), name
        required = {n for n, (*_, optional) in TRTLLM_INPUTS.items() if not optional}
        assert required <= set(inputs), f"{name} lacks {required - set(inputs)}"
        for tensor_name, tensor in inputs.items():
            dtype, dims, scalar, optional = TRTLLM_INPUTS[tensor_name]
            if tensor_name == "prompt_embedding_table":
                dtype = getattr(mc, PROMPT_TABLE_TYPES[engine_dtype])
            got = (tensor.data_type, list(tensor.dims), tensor.HasField("reshape"), tensor.optional)
            assert got == (dtype, dims, scalar, optional), f"{name}.{tensor_name}: {got}"
            if scalar:
                assert list(tensor.reshape.shape) == []
        outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
        assert TRTLLM_REQUIRED_OUTPUTS <= set(outputs)
        for tensor_name, got in outputs.items():
            assert got == TRTLLM_OUTPUTS[tensor_name], f"{name}.{tensor_name}: {got}"


def test_batch_and_decoupled_rules_hold(gpu) -> None:
    _, configs = gpu
    for name, config in _tensorrtllm(configs).items():
        # utils.cc: batch > 1 and streaming both need a decoupled model.
        assert config.max_batch_size > 1 and config.model_transaction_policy.decoupled, name
    decoupled = {name for name, c in configs.items() if c.model_transaction_policy.decoupled}
    for name, config in configs.items():
        if config.platform != "ensemble":
            continue
        steps = [configs[step.model_name] for step in config.ensemble_scheduling.step]
        for step in steps:  # ensemble_utils.cc: no step may allow a smaller batch than the ensemble
            assert step.max_batch_size >= config.max_batch_size, (name, step.name)
        # An ensemble is decoupled as soon as one step is (ensemble_utils.cc).
        is_decoupled = any(step.name in decoupled for step in steps)
        if name in UNARY_ENSEMBLES:
            assert not is_decoupled, f"{name}: the gateway's ModelInfer call would be refused"
        else:
            assert name in STREAMING_ENSEMBLES and is_decoupled, name
        if any(step.model_name == "llm_stream" for step in config.ensemble_scheduling.step):
            assert any(k == "streaming" for s in config.ensemble_scheduling.step for k in s.input_map)


def test_one_asr_engine_serves_both_ensembles(gpu) -> None:
    _, configs = gpu
    engines = [c.parameters["gpt_model_path"].string_value for c in _tensorrtllm(configs).values()]
    assert len(engines) == len(set(engines)) == 2  # the ASR engine and the base engine, once each
    collector = configs["llm"]
    target = configs[collector.parameters["engine_model"].string_value]
    assert collector.backend == "python" and not collector.model_transaction_policy.decoupled
    assert target.backend == "tensorrtllm" and target.model_transaction_policy.decoupled
    assert collector.max_batch_size <= target.max_batch_size
    # The collector passes its inputs on as they are: the engine must take each one unchanged.
    for tensor in collector.input:
        assert _input(target, tensor.name).data_type == tensor.data_type, tensor.name
        assert list(_input(target, tensor.name).dims) == list(tensor.dims), tensor.name
    assert {t.name for t in collector.output} == TRTLLM_REQUIRED_OUTPUTS
    assert "batch_index" in {t.name for t in target.output}  # how the collector orders its items


def test_dtypes_chain_from_plans_through_the_builder_to_the_engine(gpu) -> None:
    engine_dtype, configs = gpu
    for model, plan in ((configs["encoder"], ENCODER), (configs["adapter"], ADAPTER)):
        declared = {t.name: mc.DataType.Name(t.data_type) for t in (*model.input, *model.output)}
        assert declared == PLAN_IO_DTYPES[plan], model.name  # export/trt.py checks the built plan against these
    assert _output(configs["encoder"], "ENCODED").data_type == _input(configs["adapter"], "ENCODED").data_type
    embeds = _output(configs["adapter"], "AUDIO_EMBEDS").data_type
    assert _input(configs["prompt_builder"], "AUDIO_EMBEDS").data_type == embeds
    table = getattr(mc, PROMPT_TABLE_TYPES[engine_dtype])
    assert _output(configs["prompt_builder"], "prompt_embedding_table").data_type == table
    for name in ("llm", "llm_stream"):
        assert _input(configs[name], "prompt_embedding_table").data_type == table, name


def test_every_model_runs_on_a_backend_the_image_has(gpu) -> None:
    _, configs = gpu
    for name, config in configs.items():
        if config.platform == "ensemble":
            continue
        assert not config.platform and config.backend in set(IMAGE_BACKENDS) - {"ensemble"}, (name, config.platform)
        if config.backend == "python" and any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group):
            # GPU tensors in and out: the python backend would copy them to the host otherwise.
            assert config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no", name
