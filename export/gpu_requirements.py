"""Fail-fast checks for the GPU build steps: one clear line, never a traceback."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil

from export.ngc import NGC_IMAGE


class MissingRequirement(RuntimeError):
    """Something the step needs is absent here; the message is one line for the user."""


# Exit code of a step that cannot run on this machine (as for a usage error).
EXIT_MISSING = 2


def require_module(step: str, module: str) -> None:
    """The Python module must be importable (checked without importing it: they are heavy)."""
    if importlib.util.find_spec(module) is None:
        raise MissingRequirement(
            f"export {step}: the `{module}` Python module is not installed; run this step inside {NGC_IMAGE}"
        )


def require_executable(step: str, name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingRequirement(f"export {step}: `{name}` is not on PATH; run this step inside {NGC_IMAGE}")
    return path


def cuda_device_count() -> int:
    """CUDA devices the driver reports (0 without a driver), without torch or TensorRT."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def require_cuda_gpu(step: str) -> None:
    if cuda_device_count() < 1:
        raise MissingRequirement(f"export {step}: no CUDA GPU is visible (TensorRT builds need one)")
