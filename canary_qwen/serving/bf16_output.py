"""Responses with BF16 outputs (needs triton_python_backend_utils and torch).

numpy has no bfloat16, so pb_utils.Tensor cannot take one from numpy: the array is built in
float32, cast by torch and handed over through DLPack (the python backend takes TYPE_BF16 so).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import to_dlpack


def response(outputs: Mapping[str, np.ndarray], bf16: Collection[str]) -> Any:
    """An InferenceResponse of `outputs`, those named in `bf16` cast to bfloat16."""
    tensors = []
    for name, value in outputs.items():
        if name in bf16:
            cast = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(torch.bfloat16)
            tensors.append(pb_utils.Tensor.from_dlpack(name, to_dlpack(cast)))
        else:
            tensors.append(pb_utils.Tensor(name, value))
    return pb_utils.InferenceResponse(output_tensors=tensors)
