"""gpu tier of `llm`: a request/response model over the decoupled ASR engine (needs the python backend).

Every request of a dynamic batch goes on as it came (same tensors, `streaming` forced false) to the
decoupled tensorrtllm model named by the `engine_model` parameter, all at once (async BLS), so the
engine batches them in flight; its per-item responses are gathered by `stream_collect`. A
non-decoupled model's coroutine `execute` is awaited and its responses returned (python_backend
r25.10 src/pb_stub.cc), and `async_exec(decoupled=True)` yields a decoupled model's responses
(python_backend README, "Using BLS with Decoupled Models").
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from canary_qwen.serving.stream_collect import Piece, collect_responses
from canary_qwen.serving.triton_io import error_response, model_parameters, ok_response

REQUESTED = ["output_ids", "sequence_length", "batch_index"]


class LlmCollectModel:
    def initialize(self, args: dict[str, str]) -> None:
        self._engine = model_parameters(args)["engine_model"]

    async def execute(self, requests: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._forward(request) for request in requests)))

    async def _forward(self, request: Any) -> Any:
        try:
            lengths = pb_utils.get_input_tensor_by_name(request, "input_lengths")
            if lengths is None:
                raise ValueError("missing input input_lengths")
            batch = int(lengths.as_numpy().shape[0])
            inputs = [tensor for tensor in request.inputs() if tensor.name() != "streaming"]
            inputs.append(pb_utils.Tensor("streaming", np.zeros((batch, 1), dtype=np.bool_)))
            forward = pb_utils.InferenceRequest(
                model_name=self._engine, requested_output_names=REQUESTED, inputs=inputs
            )
            pieces: list[Piece] = []
            for response in await forward.async_exec(decoupled=True):
                if response.has_error():
                    raise RuntimeError(response.error().message())
                if not response.output_tensors():  # the empty final-flag response
                    continue
                out = {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in REQUESTED}
                pieces.append((int(out["batch_index"].reshape(-1)[0]), out["output_ids"], out["sequence_length"]))
            return ok_response(collect_responses(batch, pieces))
        except Exception as error:
            return error_response(error)
