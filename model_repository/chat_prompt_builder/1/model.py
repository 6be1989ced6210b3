"""chat_prompt_builder: JSON chat messages -> Qwen3 chat-template ids (LLM mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from canary_qwen.serving.chat_request import ChatSpec, build_chat_request
from canary_qwen.serving.triton_io import error_response, model_parameters, ok_response, required_array


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        prompt = json.loads((version_dir / "prompt.json").read_text())
        self._tokenizer = AutoTokenizer.from_pretrained(str(version_dir / params["tokenizer_dir"]))
        self._spec = ChatSpec(
            end_id=int(prompt["end_id"]),
            pad_id=int(prompt["pad_id"]),
            max_new_tokens_limit=int(params["max_new_tokens_limit"]),
            max_prompt_tokens=int(params["max_prompt_tokens"]),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                outputs = build_chat_request(
                    self._tokenizer,
                    self._spec,
                    required_array(request, "MESSAGES"),
                    required_array(request, "MAX_NEW_TOKENS"),
                    required_array(request, "ENABLE_THINKING"),
                )
                responses.append(ok_response(outputs))
            except Exception as error:
                responses.append(error_response(error))
        return responses
