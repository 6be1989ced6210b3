"""Thin helpers over the python backend's API, shared by every python model (needs triton_python_backend_utils)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    """The config's `parameters { key value { string_value } }` as a plain dict."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def input_array(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_array(request: Any, name: str) -> np.ndarray:
    array = input_array(request, name)
    if array is None:
        raise ValueError(f"missing input {name}")
    return array


def ok_response(outputs: dict[str, np.ndarray]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()])


def error_message(error: Exception) -> str:
    """Bad input (ValueError) is tagged `[code] ...`: a streamed error reaches the client
    as a bare message (gRPC stream responses carry no status), and the tag is how the
    gateway still tells the client's fault (400) from the model's (502)."""
    if not isinstance(error, ValueError):
        return str(error)
    return f"[{getattr(error, 'code', 'invalid_argument')}] {error}"


def error_response(error: Exception) -> Any:
    """A per-request error: INVALID_ARG for bad input (ValueError), INTERNAL otherwise."""
    code = pb_utils.TritonError.INVALID_ARG if isinstance(error, ValueError) else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(error), code))
