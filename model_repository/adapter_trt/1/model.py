"""adapter, gpu tier: its TensorRT plan, bucketed (logic in canary_qwen/serving/trt_plan_model.py)."""

from canary_qwen.serving.trt_plan_model import TrtPlanModel as TritonPythonModel  # noqa: F401
