"""llm, gpu tier: one request/response over the decoupled ASR engine (logic in canary_qwen/serving/llm_collect_model.py)."""

from canary_qwen.serving.llm_collect_model import LlmCollectModel as TritonPythonModel  # noqa: F401
