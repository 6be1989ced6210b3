"""detokenizer: generated ids -> TEXT, the raw UTF-8 bytes of the non-special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from canary_qwen.serving.token_bytes import TokenBytes
from canary_qwen.serving.triton_io import error_response, model_parameters, ok_response, required_array


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self._tokens = TokenBytes.from_tokenizer_json(version_dir / params["tokenizer_file"])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                ids = required_array(request, "output_ids")  # [b, beams, tokens]
                lengths = required_array(request, "sequence_length")  # [b, beams]
                texts = [self._tokens.decode(ids[i, 0, : int(lengths[i, 0])]) for i in range(ids.shape[0])]
                responses.append(ok_response({"TEXT": np.array(texts, dtype=np.object_).reshape(-1, 1)}))
            except Exception as error:
                responses.append(error_response(error))
        return responses
