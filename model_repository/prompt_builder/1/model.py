"""prompt_builder: audio embeddings -> ASR prompt ids + prompt table (TensorRT-LLM's contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from canary_qwen.serving.asr_prompt import PromptSpec, build_asr_request
from canary_qwen.serving.triton_io import error_response, model_config, model_parameters, ok_response, required_array

# A BF16 table (the gpu tier's engine dtype) is built in float32 and cast on the way out (bf16_output).
_NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_BF16": np.float32}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        config = model_config(args)
        table = next(o for o in config["output"] if o["name"] == "prompt_embedding_table")
        if table["data_type"] not in _NUMPY_DTYPES:
            raise ValueError(f"prompt_embedding_table as {table['data_type']} is not supported here")
        prompt = json.loads((Path(args["model_repository"]) / args["model_version"] / "prompt.json").read_text())
        self._spec = PromptSpec(
            prompt_ids=tuple(prompt["asr_prompt_ids"]),
            placeholder_id=int(prompt["audio_placeholder_id"]),
            vocab_size=int(prompt["vocab_size"]),
            end_id=int(prompt["end_id"]),
            pad_id=int(prompt["pad_id"]),
            max_new_tokens_limit=int(params["max_new_tokens_limit"]),
            table_dtype=np.dtype(_NUMPY_DTYPES[table["data_type"]]),
        )
        self._respond = ok_response
        if table["data_type"] == "TYPE_BF16":
            from canary_qwen.serving import bf16_output  # torch: only on the tier that needs it

            self._respond = lambda outputs: bf16_output.response(outputs, {"prompt_embedding_table"})

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                outputs = build_asr_request(
                    self._spec,
                    required_array(request, "AUDIO_EMBEDS"),
                    required_array(request, "AUDIO_EMBEDS_LENGTH"),
                    required_array(request, "MAX_NEW_TOKENS"),
                )
                responses.append(self._respond(outputs))
            except Exception as error:
                responses.append(error_response(error))
        return responses
