"""adapter, cpu tier: projection ONNX on onnxruntime (logic in ragged_onnx_model.py)."""

from ragged_onnx_model import RaggedOnnxModel as TritonPythonModel  # noqa: F401
