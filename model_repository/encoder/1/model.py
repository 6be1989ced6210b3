"""encoder, cpu tier: FastConformer ONNX on onnxruntime (logic in canary_qwen/serving/ragged_onnx_model.py)."""

from canary_qwen.serving.ragged_onnx_model import RaggedOnnxModel as TritonPythonModel  # noqa: F401
