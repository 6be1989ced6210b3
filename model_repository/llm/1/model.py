"""llm / llm_stream / llm_base, cpu tier: the exported Qwen3 folder in PyTorch, continuous batching.

execute() only parses and queues: the engine's thread decodes every running request in one
forward pass per step and answers through each request's response sender. Triton 2.51's python
backend accepts the sender in non-decoupled models too (one response, flagged final), so `llm`
keeps taking new requests while earlier ones are still decoding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM

from canary_qwen.generation import BatchingEngine, GenerationRequest
from canary_qwen.serving.llm_request import ResponsePlan, output_arrays, parse_llm_inputs
from canary_qwen.serving.torch_runner import TORCH_DEVICE
from canary_qwen.serving.triton_io import error_response, input_array, model_config, model_parameters, ok_response

log = logging.getLogger(__name__)

_INPUTS = (
    "input_ids",
    "input_lengths",
    "request_output_len",
    "end_id",
    "prompt_embedding_table",
    "prompt_vocab_size",
    "streaming",
)


class _SenderSink:
    """Engine callbacks -> Triton responses for one request."""

    def __init__(self, sender: Any, decoupled: bool, streaming: bool) -> None:
        self._sender = sender
        self._plan = ResponsePlan(decoupled, streaming, self._send)

    def _send(self, tokens: list[int] | None, final: bool) -> None:
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        response = None if tokens is None else ok_response(output_arrays(tokens))
        self._safe_send(response, flags)

    def _safe_send(self, response: Any, flags: int) -> None:
        # A client that went away must not stop the engine thread serving the others.
        try:
            self._sender.send(response, flags=flags)
        except Exception:
            log.exception("could not send a response")

    def on_tokens(self, tokens: list[int], finished: bool) -> None:
        self._plan.on_tokens(tokens, finished)

    def on_error(self, error: Exception) -> None:
        self._safe_send(error_response(error), pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def is_cancelled(self) -> bool:
        return bool(self._sender.is_cancelled())


def _device(kind: str, device_id: str, configured: str = "") -> torch.device:
    if configured:  # a torch_device parameter, e.g. CUDA from a KIND_CPU instance (bench/gpu_build.py)
        return torch.device(configured)
    if kind == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", int(device_id))
    return torch.device("cpu")


def _dtype(setting: str, device: torch.device) -> torch.dtype | str:
    if setting != "auto":
        return getattr(torch, setting)
    return "auto" if device.type == "cuda" else torch.float32


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        config = model_config(args)
        self._decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        device = _device(args["model_instance_kind"], args["model_instance_device_id"], params.get(TORCH_DEVICE, ""))
        if device.type == "cpu" and int(params.get("torch_threads", "0")) > 0:
            torch.set_num_threads(int(params["torch_threads"]))
        llm_dir = Path(args["model_repository"]) / args["model_version"] / params["llm_dir"]
        model = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=_dtype(params["dtype"], device))
        self._engine = BatchingEngine(model.to(device), max_batch_size=int(params["max_running_requests"]))
        self._engine.start()
        log.info("%s: %s on %s, decoupled=%s", args["model_name"], llm_dir.name, device, self._decoupled)

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                inputs = parse_llm_inputs({name: input_array(request, name) for name in _INPUTS})
                sink = _SenderSink(sender, self._decoupled, inputs.streaming)
                self._engine.submit(
                    GenerationRequest(
                        inputs.input_ids, inputs.max_new_tokens, inputs.end_id, sink, inputs.prompt_table
                    )
                )
            except Exception as error:
                sender.send(error_response(error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def finalize(self) -> None:
        self._engine.shutdown()
