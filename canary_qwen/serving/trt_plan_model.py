"""gpu tier of `encoder` and `adapter`: a TensorRT plan run from the python backend with the
`tensorrt` Python API (needs triton_python_backend_utils, tensorrt, torch with CUDA).

The `-trtllm-python-py3` image has the ensemble, tensorrtllm and python backends but no `tensorrt`
backend (tensorrtllm_backend v1.0.0 build.sh: `--backend=ensemble --backend=tensorrtllm
--backend=python`), while TensorRT-LLM brings the `tensorrt` module and torch. Tensors stay on the
GPU: inputs arrive through DLPack (FORCE_CPU_ONLY_INPUT_TENSORS "no"), outputs leave as CUDA
tensors through DLPack; only the few length values are read on the host.

One execution context per optimization profile (= length bucket, export/trt.py), all sharing one
device-memory block: an instance runs one batch at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorrt as trt
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

from canary_qwen.serving.plan_buckets import Items, bucket_index, request_items, run_bucketed
from canary_qwen.serving.triton_io import error_response, model_config, model_parameters

_CONFIG_TO_TORCH = {"TYPE_FP32": torch.float32, "TYPE_FP16": torch.float16, "TYPE_BF16": torch.bfloat16,
                    "TYPE_INT32": torch.int32}  # fmt: skip
_TRT_TO_CONFIG = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT32": "TYPE_INT32"}


def _tensor(request: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"missing input {name}")
    return from_dlpack(tensor.to_dlpack()).to(device, non_blocking=True)


class TrtPlanModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        params = model_parameters(args)
        self._data_in, self._length_in = (tensor["name"] for tensor in config["input"])
        self._data_out, self._length_out = (tensor["name"] for tensor in config["output"])
        dtypes = {t["name"]: t["data_type"] for t in (*config["input"], *config["output"])}
        self._in_axis = int(params["input_time_axis"]) - 1  # config axes count the batch axis
        self._out_axis = int(params["output_time_axis"]) - 1
        self._device = torch.device("cuda", int(args["model_instance_device_id"]))
        torch.cuda.set_device(self._device)
        self._stream = torch.cuda.Stream(self._device)
        plan = Path(args["model_repository"]) / args["model_version"] / params["plan_file"]
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not load {plan} (built by another TensorRT version?)")
        for name, dtype in dtypes.items():
            found = self._engine.get_tensor_dtype(name).name
            if _TRT_TO_CONFIG.get(found) != dtype:
                raise RuntimeError(f"{plan.name}: {name} is {found} in the plan but {dtype} in the config")
        self._out_dtype = _CONFIG_TO_TORCH[dtypes[self._data_out]]
        # Bucket k = profile k's fixed length (its max) along the data input's time axis.
        self._buckets = [
            self._engine.get_tensor_profile_shape(self._data_in, k)[2][self._in_axis + 1]
            for k in range(self._engine.num_optimization_profiles)
        ]
        size = getattr(self._engine, "device_memory_size_v2", None) or self._engine.device_memory_size
        self._workspace = torch.empty(size, dtype=torch.uint8, device=self._device)
        self._contexts = []
        for k in range(self._engine.num_optimization_profiles):
            context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1
                context.set_device_memory(self._workspace.data_ptr(), size)
            else:
                context.device_memory = self._workspace.data_ptr()
            context.set_optimization_profile_async(k, self._stream.cuda_stream)
            self._contexts.append(context)
        self._stream.synchronize()

    def _run(self, profile: int, data: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._contexts[profile]
        context.set_input_shape(self._data_in, tuple(data.shape))
        context.set_input_shape(self._length_in, tuple(lengths.shape))
        out = torch.empty(tuple(context.get_tensor_shape(self._data_out)), dtype=self._out_dtype, device=self._device)
        out_lengths = torch.empty(tuple(lengths.shape), dtype=torch.int32, device=self._device)
        for name, tensor in ((self._data_in, data), (self._length_in, lengths), (self._data_out, out),
                             (self._length_out, out_lengths)):  # fmt: skip
            context.set_tensor_address(name, tensor.data_ptr())
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out, out_lengths

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed: list[Items | Exception] = []
        with torch.cuda.stream(self._stream):
            for request in requests:
                try:
                    data = _tensor(request, self._data_in, self._device)
                    lengths = [int(n) for n in _tensor(request, self._length_in, torch.device("cpu")).reshape(-1)]
                    bucket_index(max(lengths, default=0), self._buckets)  # too long: this request's error
                    parsed.append(request_items(data, lengths, self._in_axis, self._buckets[-1]))
                except Exception as error:
                    parsed.append(error)
            results = run_bucketed(parsed, self._buckets, self._run, self._in_axis, self._out_axis)
        self._stream.synchronize()  # Triton reads the outputs once execute returns
        responses = []
        for result in results:
            if isinstance(result, Exception):
                responses.append(error_response(result))
                continue
            data, lengths = result
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor.from_dlpack(self._data_out, to_dlpack(data)),
                pb_utils.Tensor(self._length_out, lengths.numpy()),
            ]))  # fmt: skip
        return responses
