"""The `torch` runtime of the encoder and adapter python models: the plain-PyTorch FastConformer /
adapter (canary_qwen/fastconformer.py) on CUDA or the CPU, in place of onnxruntime.

Chosen by model config parameters, so one template serves both runtimes:
    runtime       "onnxruntime" (default) or "torch"
    torch_file    the module's weights in the version folder (encoder.torch.safetensors ...)
    torch_device  "cuda" (default; needs a GPU) or "cpu"
    torch_dtype   a torch dtype name, default "float32"; outputs are always float32
This module imports torch only when a runner is built: onnxruntime models read RUNTIME from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME = "runtime"
ONNX_RUNTIME = "onnxruntime"
TORCH_RUNTIME = "torch"
TORCH_FILE = "torch_file"
TORCH_DEVICE = "torch_device"
TORCH_DTYPE = "torch_dtype"


def wants_torch(params: Mapping[str, str]) -> bool:
    return params.get(RUNTIME, ONNX_RUNTIME) == TORCH_RUNTIME


class TorchRunner:
    """(data, lengths) numpy -> (output float32, lengths int32) numpy through a torch module."""

    def __init__(self, path: Path, device: str = "cuda", dtype: str = "float32") -> None:
        import torch

        from canary_qwen.fastconformer import load_torch_module

        self._torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype, None)
        if not isinstance(self.dtype, torch.dtype):
            raise ValueError(f"{TORCH_DTYPE}={dtype!r} is not a torch dtype")
        self.module: Any = load_torch_module(path, self.device, self.dtype)

    @classmethod
    def from_params(cls, version_dir: Path, params: Mapping[str, str]) -> TorchRunner:
        return cls(
            version_dir / params[TORCH_FILE], params.get(TORCH_DEVICE, "cuda"), params.get(TORCH_DTYPE, "float32")
        )

    def __call__(self, data: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(data)).to(self.device, self.dtype)
            n = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int32)).to(self.device)
            out, out_lengths = self.module(x, n)
            return out.float().cpu().numpy(), out_lengths.to(torch.int32).cpu().numpy()
