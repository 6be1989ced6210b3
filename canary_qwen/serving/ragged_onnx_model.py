"""cpu tier of `encoder` and `adapter`: an ONNX graph (data, length) -> (data, length) on
onnxruntime, run once over a dynamic batch of requests with ragged lengths; with the `torch`
runtime parameter, the same modules in plain PyTorch instead (torch_runner.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from canary_qwen.serving.ragged import request_items, run_ragged
from canary_qwen.serving.torch_runner import TorchRunner, wants_torch  # torch only imported when used
from canary_qwen.serving.triton_io import error_response, model_config, model_parameters, ok_response, required_array


class RaggedOnnxModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        params = model_parameters(args)
        self._data_in, self._length_in = (tensor["name"] for tensor in config["input"])
        self._data_out, self._length_out = (tensor["name"] for tensor in config["output"])
        # Config axes count the batch axis; the ragged helpers work on single items.
        self._in_axis = int(params["input_time_axis"]) - 1
        self._out_axis = int(params["output_time_axis"]) - 1
        version_dir = Path(args["model_repository"]) / args["model_version"]
        if wants_torch(params):  # the plain-PyTorch modules, e.g. on CUDA
            self._run = TorchRunner.from_params(version_dir, params)  # type: ignore[method-assign]
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        path = version_dir / params["onnx_file"]
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._onnx_inputs = [i.name for i in self._session.get_inputs()]
        self._onnx_outputs = [o.name for o in self._session.get_outputs()]

    def _run(self, data: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = dict(zip(self._onnx_inputs, (data.astype(np.float32), lengths.astype(np.int32))))
        out, out_lengths = self._session.run(self._onnx_outputs, feeds)
        return out, out_lengths

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed: list[list[tuple[np.ndarray, int]] | Exception] = []
        for request in requests:
            try:
                data = required_array(request, self._data_in)
                lengths = required_array(request, self._length_in)
                parsed.append(request_items(data, lengths, self._in_axis))
            except Exception as error:
                parsed.append(error)
        results = run_ragged(parsed, self._run, self._in_axis, self._out_axis)
        return [
            error_response(result)
            if isinstance(result, Exception)
            else ok_response({self._data_out: result[0], self._length_out: result[1]})
            for result in results
        ]
